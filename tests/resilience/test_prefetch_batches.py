"""Batched prefetch through a real extension process against moto server and the fault proxy
(which counts the calls): the entries a batch prefetch leaves are byte for byte the entries a
fresh single read stores, with both upstream clients; items a batch misses fail as single reads.

moto gap: GetParameters answers `name:selector` without `Selector`, so items with a version or
label are not batched (prefetch.py reads them singly) and are not compared here.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.support.fault_proxy import Fault

UPSTREAMS = ["lean", "sdk"]


def operations(proxy) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Calls per operation name (X-Amz-Target without its service prefix)."""
    return {target.rsplit(".", 1)[-1]: n for target, n in proxy.counts().items()}


def seed_world(seed) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Prefetch items and the request path that reads each one's entry."""
    prefix = seed.prefix
    ssm, sm = seed.ssm, seed.sm
    items: list[str] = []
    paths: list[str] = []
    for kind, value in (
        ("SecureString", seed.value()),
        ("String", seed.value()),
        ("StringList", f"{seed.value()},b,c"),
    ):
        name = f"/{prefix}/{kind}"
        ssm.put_parameter(Name=name, Value=value, Type=kind)
        for decrypt in (False, True):
            option = "?withDecryption=true" if decrypt else ""
            items.append(f"ssm:{name}{option}")
            query = "&withDecryption=true" if decrypt else ""
            paths.append(f"/systemsmanager/parameters/get?name={quote(name)}{query}")
    by_name = f"{prefix}-by-name"
    sm.create_secret(Name=by_name, SecretString=seed.value())
    by_arn = sm.create_secret(Name=f"{prefix}-by-arn", SecretString=seed.value())["ARN"]
    binary = f"{prefix}-binary"
    sm.create_secret(Name=binary, SecretBinary=seed.value().encode() + b"\x00\xff\x10")
    for secret_id in (by_name, by_arn, binary):
        items.append(f"sm:{secret_id}")
        paths.append(f"/secretsmanager/get?secretId={quote(secret_id, safe='')}")
    return items, paths


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_a_batch_prefetch_stores_the_bytes_a_fresh_single_read_stores(upstream, start, proxy, seed):
    items, paths = seed_world(seed)
    ttl = {"SECRETS_MANAGER_TTL": "300", "SSM_PARAMETER_STORE_TTL": "300"}
    warmed = start(SECRETCACHE_UPSTREAM=upstream, SECRETCACHE_PREFETCH=",".join(items), **ttl)
    assert operations(proxy) == {"GetParameters": 2, "BatchGetSecretValue": 1}
    from_batch = [warmed.get(path) for path in paths]
    assert operations(proxy) == {"GetParameters": 2, "BatchGetSecretValue": 1}  # all hits
    cold = start(SECRETCACHE_UPSTREAM=upstream, **ttl)
    from_single = [cold.get(path) for path in paths]
    assert operations(proxy) == {
        "GetParameters": 2,
        "BatchGetSecretValue": 1,
        "GetParameter": 6,
        "GetSecretValue": 3,
    }
    for item, batch, single in zip(items, from_batch, from_single, strict=True):
        assert batch.status == single.status == 200, (item, batch.body[:200], single.body[:200])
        assert batch.body == single.body, item


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_items_a_batch_does_not_answer_fail_as_their_single_reads_do(upstream, start, proxy, seed):
    present = [seed.parameter(f"p{i}")[0] for i in range(2)]
    secret = [seed.secret(f"s{i}")[0] for i in range(2)]
    missing_parameter = f"/{seed.prefix}/missing"
    missing_secret = f"{seed.prefix}-missing"
    items = [f"ssm:{n}" for n in [*present, missing_parameter]] + [
        f"sm:{s}" for s in [*secret, missing_secret]
    ]
    ext = start(SECRETCACHE_UPSTREAM=upstream, SECRETCACHE_PREFETCH=",".join(items))
    logs = ext.logs()
    # AWS's error codes, as the single reads report them (and as a prefetch reported them before)
    for label, error in (
        (f"ssm:{missing_parameter}", "ParameterNotFound"),
        (f"sm:{missing_secret}", "ResourceNotFoundException"),
    ):
        assert f'"item":"{label}","errorType":"{error}"' in logs, logs[-2000:]
    assert proxy.count("GetParameter", missing_parameter) == 1
    assert proxy.count("secretsmanager.GetSecretValue", missing_secret) == 1
    assert operations(proxy) == {
        "GetParameters": 1,
        "BatchGetSecretValue": 1,
        "GetParameter": 1,
        "GetSecretValue": 1,
    }


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_a_failing_batch_call_falls_back_to_single_reads(upstream, start, proxy, seed):
    names = [seed.parameter(f"p{i}")[0] for i in range(3)]
    proxy.set_fault(Fault.aws_error(400, "AccessDeniedException"), target="GetParameters")
    ext = start(
        SECRETCACHE_UPSTREAM=upstream,
        SECRETCACHE_PREFETCH=",".join(f"ssm:{n}" for n in names),
        SSM_PARAMETER_STORE_TTL="300",
    )
    assert proxy.count("GetParameters") >= 1
    assert proxy.count("GetParameter") == 3
    before = proxy.count("GetParameter")
    for name in names:
        assert ext.get(f"/systemsmanager/parameters/get?name={quote(name)}").status == 200
    assert proxy.count("GetParameter") == before  # every entry was warmed by its single read


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_under_agent_compat_a_batch_prefetch_stores_the_agents_bytes(upstream, start, proxy, seed):
    made = [seed.secret(f"a{i}")[0] for i in range(3)]
    binary = f"{seed.prefix}-agent-binary"
    seed.sm.create_secret(Name=binary, SecretBinary=b"\x00\x01agent\xff")
    ids = [*made, binary]
    env = {"SECRETCACHE_UPSTREAM": upstream, "SECRETCACHE_COMPAT": "agent"}
    env["SECRETS_MANAGER_TTL"] = "300"
    warmed = start(SECRETCACHE_PREFETCH=",".join(f"sm:{i}" for i in ids), **env)
    assert operations(proxy) == {"BatchGetSecretValue": 1}
    paths = [f"/secretsmanager/get?secretId={quote(i, safe='')}" for i in ids]
    from_batch = [warmed.get(path) for path in paths]
    assert operations(proxy) == {"BatchGetSecretValue": 1}  # all hits
    cold = start(**env)
    from_single = [cold.get(path) for path in paths]
    assert operations(proxy) == {"BatchGetSecretValue": 1, "GetSecretValue": 4}
    for secret_id, batch, single in zip(ids, from_batch, from_single, strict=True):
        assert batch.status == single.status == 200, (secret_id, single.body[:200])
        assert "ResultMetadata" not in batch.json()  # the Agent's shape
        assert batch.body == single.body, secret_id
