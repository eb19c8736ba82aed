"""Batch reads keep single reads' resilience, with a fake clock and fake backends: stale-on-error
per chunk (whole chunks or the error) and refresh-ahead of due items in one background batch
call. Against moto server with faults: tests/resilience/test_batch_resilience.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from secretcache.cache import TtlCache
from secretcache.config import load_config
from secretcache.errors import AccessDenied, SecretcacheError, Throttled, UpstreamError
from secretcache.read_requests import ParametersRead, SecretsRead
from secretcache.reads import Reads, cache_policies

TTL = 100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BatchBackends:
    """Batch calls that answer `generation`-stamped values, or raise the error set for them."""

    def __init__(self) -> None:
        self.loaded = True
        self.call_observer: Any = None
        self.generation = 1
        self.error: SecretcacheError | None = None
        #: Names whose chunk fails (None: every chunk fails while `error` is set).
        self.failing: set[str] | None = None
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.gate: asyncio.Event | None = None

    def _fail(self, items: list[str]) -> None:
        if self.error is not None and (self.failing is None or self.failing & set(items)):
            raise self.error

    async def get_parameters(self, names: list[str], with_decryption: bool) -> dict[str, Any]:
        self.calls.append(("get_parameters", tuple(names)))
        if self.gate is not None:
            await self.gate.wait()
        self._fail(names)
        values = [
            {"Name": n, "Type": "String", "Value": f"{n}@{self.generation}", "Version": 1}
            for n in names
        ]
        return {"Parameters": values, "InvalidParameters": []}

    async def batch_get_secret_value(self, secret_ids: list[str]) -> dict[str, Any]:
        self.calls.append(("batch_get_secret_value", tuple(secret_ids)))
        if self.gate is not None:
            await self.gate.wait()
        self._fail(secret_ids)
        values = [
            {"Name": s, "ARN": f"arn:{s}-AbCdEf", "SecretString": f"{s}@{self.generation}"}
            for s in secret_ids
        ]
        return {"SecretValues": values, "Errors": []}


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.backends = BatchBackends()
        config = load_config(
            {
                "AWS_SESSION_TOKEN": "t",
                "SECRETS_MANAGER_TTL": str(TTL),
                "SSM_PARAMETER_STORE_TTL": str(TTL),
                "SECRETCACHE_MAX_STALE_SECONDS": "600",
            }
        )
        policies = {s: p._replace(jitter=0.0) for s, p in cache_policies(config).items()}
        self.cache = TtlCache(
            max_entries=1000, max_bytes=1 << 22, policies=policies, clock=self.clock
        )
        self.reads = Reads(config, self.cache, self.backends)

    async def values(self, read: ParametersRead | SecretsRead) -> tuple[list[str], str, float]:
        lookup = await self.reads.fetch(read)
        body = json.loads(lookup.body)
        if isinstance(read, ParametersRead):
            return [p["Value"] for p in body["Parameters"]], lookup.outcome, lookup.age
        return [s["SecretString"] for s in body["SecretValues"]], lookup.outcome, lookup.age

    def count(self) -> int:
        return len(self.backends.calls)


NAMES = tuple(f"/app/p{i}" for i in range(12))  # two GetParameters chunks: 10 + 2
IDS = tuple(f"s{i}" for i in range(3))
READS = {"getbatch": ParametersRead(NAMES), "batchget": SecretsRead(IDS)}


def stamped(read: ParametersRead | SecretsRead, generation: int) -> list[str]:
    items = read.names if isinstance(read, ParametersRead) else read.secret_ids
    return [f"{item}@{generation}" for item in items]


@pytest.mark.parametrize("route", list(READS))
@pytest.mark.parametrize(
    "error", [Throttled("throttled"), UpstreamError("500")], ids=["throttled", "5xx"]
)
async def test_an_expired_batch_is_served_stale_when_aws_fails(
    route: str, error: SecretcacheError
) -> None:
    world, read = World(), READS[route]
    assert (await world.values(read))[0] == stamped(read, 1)
    world.backends.generation, world.backends.error = 2, error
    world.clock.now += TTL + 30
    values, outcome, age = await world.values(read)
    assert values == stamped(read, 1)
    assert outcome == "stale"
    assert age == TTL + 30
    counters = world.cache.metrics.service(read.service)
    assert counters.stale == len(values)
    world.backends.error = None  # AWS is back: the next read fetches
    assert (await world.values(read))[0] == stamped(read, 2)


@pytest.mark.parametrize("route", list(READS))
@pytest.mark.parametrize(
    ("error", "past_ttl"),
    [(Throttled("throttled"), 601), (AccessDenied("denied"), 1)],
    ids=["past_max_stale", "access_denied_never_masked"],
)
async def test_the_error_is_answered_where_stale_is_not_allowed(
    route: str, error: SecretcacheError, past_ttl: float
) -> None:
    world, read = World(), READS[route]
    await world.values(read)
    world.backends.error = error
    world.clock.now += TTL + past_ttl
    with pytest.raises(type(error)):
        await world.values(read)


async def test_only_the_failed_chunk_is_stale() -> None:
    world, read = World(), READS["getbatch"]
    await world.values(read)
    world.backends.generation = 2
    world.backends.error, world.backends.failing = Throttled("throttled"), {NAMES[-1]}
    world.clock.now += TTL + 1
    values, outcome, _ = await world.values(read)
    assert values == [f"{n}@2" for n in NAMES[:10]] + [f"{n}@1" for n in NAMES[10:]]
    assert outcome == "stale"


async def test_a_chunk_with_one_item_never_cached_is_an_error_not_a_partial_answer() -> None:
    world = World()
    await world.values(ParametersRead(NAMES[:11]))
    world.backends.error, world.backends.failing = Throttled("throttled"), {NAMES[-1]}
    world.clock.now += TTL + 1
    # The second chunk holds NAMES[10] (cached, expired) and NAMES[11] (never cached).
    with pytest.raises(Throttled):
        await world.values(READS["getbatch"])
    assert world.cache.metrics.service("ssm").stale == 0


@pytest.mark.parametrize("route", list(READS))
async def test_due_items_are_refreshed_ahead_in_one_background_batch(route: str) -> None:
    world, read = World(), READS[route]
    await world.values(read)
    first = world.count()
    world.backends.generation = 2
    world.backends.gate = asyncio.Event()
    world.clock.now += TTL * 0.95  # inside the last tenth of the TTL
    values, outcome, _ = await world.values(read)
    assert values == stamped(read, 1) and outcome == "batch"  # served at once, from the cache
    await world.values(read)  # a second read while the refresh runs starts no other
    await asyncio.sleep(0)
    chunks = 2 if route == "getbatch" else 1
    assert world.count() == first + chunks
    world.backends.gate.set()
    await asyncio.sleep(0.01)
    world.clock.now += TTL * 0.5  # past the old entries' TTL, inside the refreshed ones'
    values, outcome, _ = await world.values(read)
    assert values == stamped(read, 2) and outcome == "batch"
    assert world.count() == first + chunks
    assert world.cache.metrics.service(read.service).refreshes == len(values)


async def test_a_forced_refresh_that_fails_is_served_stale_too() -> None:
    world = World()
    await world.values(SecretsRead(IDS))
    world.backends.error = Throttled("throttled")
    values, outcome, _ = await world.values(SecretsRead(IDS, refresh=True))
    assert values == stamped(READS["batchget"], 1) and outcome == "stale"


async def test_one_due_item_renews_the_whole_batch_in_one_call_per_chunk() -> None:
    world = World()
    await world.values(ParametersRead(NAMES[:5]))  # stored at t0
    world.clock.now += 5
    await world.values(READS["getbatch"])  # the other 7 stored at t0 + 5
    calls = world.count()
    world.backends.generation = 2
    world.clock.now += 87  # t0 + 92: only the first five are in their window (from t0 + 90)
    await world.values(READS["getbatch"])
    await asyncio.sleep(0.01)
    assert world.count() == calls + 2  # all 12 names: chunks of 10 and 2
    world.clock.now += 9  # t0 + 101: past every old entry's TTL
    values, outcome, _ = await world.values(READS["getbatch"])
    assert values == stamped(READS["getbatch"], 2) and outcome == "batch"
    assert world.count() == calls + 2
