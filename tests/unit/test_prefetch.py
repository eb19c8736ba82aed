"""Prefetch batching against an in-process fake upstream: which items go in which call, what each
leaves in the cache, and that everything a batch does not answer is read singly, within budget.
The same behaviour against moto server and a real extension process is in
tests/resilience/test_prefetch_batches.py."""

from __future__ import annotations

import asyncio
from typing import Any

from secretcache.cache import TtlCache
from secretcache.config import load_config
from secretcache.errors import AccessDenied, NotFound, Throttled
from secretcache.prefetch import run_prefetch
from secretcache.reads import Reads, cache_key, cache_policies

TOKEN = "unit-test-token-0123456789abcdef"


def parameter(name: str) -> dict[str, Any]:
    return {"Name": name, "Type": "String", "Value": f"v:{name}", "Version": 3}


def secret(secret_id: str) -> dict[str, Any]:
    name = secret_id.rsplit(":", 1)[-1][:-7] if secret_id.startswith("arn:") else secret_id
    arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"
    return {"Name": name, "ARN": arn, "SecretString": f"s:{name}", "VersionId": "v1",
            "VersionStages": ["AWSCURRENT"]}  # fmt: skip


class FakeUpstream:
    """Answers from a fixed world; `missing` names nothing exists; `failing` ops raise."""

    def __init__(self, missing: set[str] = frozenset(), failing: dict[str, Exception] | None = None,
                 delay: float = 0.0) -> None:  # fmt: skip
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.loaded = True
        self.missing = missing
        self.failing = failing or {}
        self.delay = delay

    async def _enter(self, op: str, ids: tuple[str, ...]) -> None:
        self.calls.append((op, ids))
        if self.delay:
            await asyncio.sleep(self.delay)
        if op in self.failing:
            raise self.failing[op]

    async def get_parameter(self, name: str, with_decryption: bool) -> dict[str, Any]:
        await self._enter("GetParameter", (name,))
        if name in self.missing:
            raise NotFound(f"parameter not found: {name}")
        return {"Parameter": parameter(name)}

    async def get_parameters(self, names: list[str], with_decryption: bool) -> dict[str, Any]:
        await self._enter("GetParameters", tuple(names))
        return {"Parameters": [parameter(n) for n in names if n not in self.missing],
                "InvalidParameters": [n for n in names if n in self.missing]}  # fmt: skip

    async def get_secret_value(self, secret_id: str, version_id: Any, version_stage: Any,
                               *, role_arn: str | None = None) -> dict[str, Any]:  # fmt: skip
        await self._enter("GetSecretValue", (secret_id,))
        if secret_id in self.missing:
            raise NotFound(f"secret not found: {secret_id}")
        return secret(secret_id)

    async def batch_get_secret_value(self, secret_ids: list[str]) -> dict[str, Any]:
        await self._enter("BatchGetSecretValue", tuple(secret_ids))
        found = [secret(s) for s in secret_ids if s not in self.missing]
        errors = [{"SecretId": s, "ErrorCode": "ResourceNotFoundException"}
                  for s in secret_ids if s in self.missing]  # fmt: skip
        return {"SecretValues": found, "Errors": errors}

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


def make(upstream: FakeUpstream, prefetch: str, **env: str) -> Reads:
    config = load_config({"AWS_SESSION_TOKEN": TOKEN, "AWS_REGION": "us-east-1",
                          "SECRETCACHE_PREFETCH": prefetch, **env})  # fmt: skip
    cache = TtlCache(max_entries=1000, max_bytes=1 << 24, policies=cache_policies(config))
    return Reads(config, cache, upstream)  # type: ignore[arg-type]


async def prefetch(reads: Reads, budget: float = 5.0) -> list[tuple[str, str]]:
    failures = await run_prefetch(reads, reads.config.prefetch, budget)
    return [(item.label, error) for item, error in failures]


async def single_bodies(reads: Reads) -> dict[str, bytes]:
    """What a fresh single read of each item stores, from a reader with an empty cache."""
    out = {}
    for item in reads.config.prefetch:
        lookup = await reads.fetch(item.read)
        out[item.label] = lookup.body
    return out


def cached_bodies(reads: Reads) -> dict[str, bytes | None]:
    return {item.label: reads.cache.fresh(cache_key(item.read)) for item in reads.config.prefetch}


async def test_25_parameters_and_25_secrets_take_3_and_2_calls_and_store_single_read_bytes() -> (
    None
):
    items = ",".join([f"ssm:/app/p{i}" for i in range(25)] + [f"sm:app/s{i}" for i in range(25)])
    upstream = FakeUpstream()
    reads = make(upstream, items)
    assert await prefetch(reads) == []
    assert sorted(upstream.ops()) == ["BatchGetSecretValue"] * 2 + ["GetParameters"] * 3
    assert sorted(len(ids) for _, ids in upstream.calls) == [5, 5, 10, 10, 20]
    cold = make(FakeUpstream(), items)
    assert cached_bodies(reads) == await single_bodies(cold)


async def test_groups_split_by_decryption_and_selectors_roles_stages_stay_single() -> None:
    upstream = FakeUpstream()
    role = "arn:aws:iam::123456789012:role/reader"
    reads = make(
        upstream,
        "ssm:/a,ssm:/b,ssm:/c?withDecryption=true,ssm:/d?withDecryption=true,ssm:/e?version=2,"
        f"sm:x,sm:y,sm:z?versionStage=AWSPENDING,sm:w?roleArn={role}",
    )
    assert await prefetch(reads) == []
    calls = sorted(upstream.calls)
    assert ("GetParameters", ("/a", "/b")) in calls
    assert ("GetParameters", ("/c", "/d")) in calls
    assert ("BatchGetSecretValue", ("x", "y")) in calls
    assert ("GetParameter", ("/e:2",)) in calls
    assert ("GetSecretValue", ("z",)) in calls and ("GetSecretValue", ("w",)) in calls
    assert len(calls) == 6


async def test_a_lone_batchable_item_is_read_singly() -> None:
    upstream = FakeUpstream()
    reads = make(upstream, "ssm:/only,sm:only")
    assert await prefetch(reads) == []
    assert sorted(upstream.ops()) == ["GetParameter", "GetSecretValue"]


async def test_items_a_batch_does_not_answer_are_read_singly_and_fail_as_a_single_read_does() -> (
    None
):
    upstream = FakeUpstream(missing={"/gone", "gone"})
    reads = make(upstream, "ssm:/a,ssm:/gone,sm:s,sm:gone")
    failures = await prefetch(reads)
    assert sorted(failures) == [("sm:gone", "NotFound"), ("ssm:/gone", "NotFound")]
    assert ("GetParameter", ("/gone",)) in upstream.calls
    assert ("GetSecretValue", ("gone",)) in upstream.calls
    assert upstream.ops().count("GetParameter") == 1  # /a came from the batch


async def test_a_batch_call_that_fails_falls_back_to_single_reads() -> None:
    failing: dict[str, Exception] = {
        "GetParameters": Throttled("rate exceeded"),
        "BatchGetSecretValue": AccessDenied("not allowed to BatchGetSecretValue"),
    }
    upstream = FakeUpstream(failing=failing)
    reads = make(upstream, "ssm:/a,ssm:/b,sm:x,sm:y")
    assert await prefetch(reads) == []
    assert sorted(upstream.ops()) == sorted(
        ["GetParameters", "BatchGetSecretValue"] + ["GetParameter"] * 2 + ["GetSecretValue"] * 2
    )
    assert all(body is not None for body in cached_bodies(reads).values())


async def test_a_slow_batch_and_its_fallback_stay_within_the_budget() -> None:
    upstream = FakeUpstream(delay=0.5)
    reads = make(upstream, "ssm:/a,ssm:/b,ssm:/c")
    loop = asyncio.get_running_loop()
    started = loop.time()
    failures = await prefetch(reads, budget=0.2)
    assert loop.time() - started < 0.45  # a budget overrun would take 0.5 s or more
    assert sorted(error for _, error in failures) == ["PrefetchTimeout"] * 3


async def test_rotation_aware_secrets_are_read_singly() -> None:
    upstream = FakeUpstream()
    reads = make(upstream, "sm:x,sm:y", SECRETCACHE_ROTATION_AWARE="true")

    async def describe_secret(secret_id: str, *, role_arn: str | None = None) -> dict[str, Any]:
        return {}

    upstream.describe_secret = describe_secret  # type: ignore[attr-defined]
    assert await prefetch(reads) == []
    assert sorted(upstream.ops()) == ["GetSecretValue"] * 2


async def test_agent_shaped_items_store_the_agent_body() -> None:
    items = "sm:a,sm:b"
    reads = make(FakeUpstream(), items, SECRETCACHE_COMPAT="agent")
    assert await prefetch(reads) == []
    cold = make(FakeUpstream(), items, SECRETCACHE_COMPAT="agent")
    assert cached_bodies(reads) == await single_bodies(cold)


async def test_nothing_is_batched_while_the_cache_holds_nothing() -> None:
    upstream = FakeUpstream()
    reads = make(upstream, "ssm:/a,ssm:/b")
    reads.cache.holding = True  # SnapStart's INIT
    assert await prefetch(reads) == []
    assert upstream.ops() == ["GetParameter", "GetParameter"]
