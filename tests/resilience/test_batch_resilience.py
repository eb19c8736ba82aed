"""Batch reads (`/secretsmanager/batchget`, `/systemsmanager/parameters/getbatch`) through a real
extension process against moto server and the fault proxy: served stale when AWS fails after
the TTL (as single reads are), errors that must not be masked are answered, and items in their
refresh-ahead window are renewed in the background so readers never wait.

moto gap: GetParameters in moto answers no `Selector`; the reads here use plain names."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.fault_proxy import Fault

from .conftest import assert_json_error


def batch_path(route: str, items: list[str]) -> str:
    if route == "batchget":
        return "/secretsmanager/batchget?" + "&".join(f"secretId={i}" for i in items)
    names = "&".join(f"name={i}" for i in items)
    return f"/systemsmanager/parameters/getbatch?{names}&withDecryption=true"


def batch_values(result: Any) -> list[str]:
    body = result.json()
    if "SecretValues" in body:
        return [s["SecretString"] for s in body["SecretValues"]]
    return [p["Value"] for p in body["Parameters"]]


def seeded(route: str, seed: Any, count: int) -> tuple[list[str], list[str]]:
    made = [(seed.secret if route == "batchget" else seed.parameter)(f"b{i}") for i in range(count)]
    return [item for item, _ in made], [value for _, value in made]


def target_of(route: str) -> str:
    return "BatchGetSecretValue" if route == "batchget" else "GetParameters"


ROUTES = ["batchget", "getbatch"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "fault", [Fault.throttle(), Fault.server_error(500), Fault.reset()], ids=["429", "500", "reset"]
)
def test_an_expired_batch_is_served_stale_when_aws_fails(route, fault, start, proxy, seed):
    ext = start()  # TTL 1 s, SECRETCACHE_MAX_STALE_SECONDS 3600 (the default)
    items, values = seeded(route, seed, 12)  # GetParameters: two chunks
    first = ext.get(batch_path(route, items))
    assert first.status == 200 and batch_values(first) == values
    proxy.set_fault(fault, target=target_of(route))
    time.sleep(1.2)  # past the TTL
    stale = ext.get(batch_path(route, items))
    assert stale.status == 200, stale.body[:300]
    assert batch_values(stale) == values
    assert stale.headers.get("x-secretcache-stale") == "true"
    assert int(stale.headers["age"]) >= 1
    service = "secretsmanager" if route == "batchget" else "ssm"
    counters = ext.get("/metrics").json()["services"][service]
    assert counters["staleServed"] == len(items)
    # AWS recovers: the next read is fresh again, without the stale headers.
    proxy.clear()
    fresh = ext.get(batch_path(route, items))
    assert fresh.status == 200 and "x-secretcache-stale" not in fresh.headers
    assert batch_values(fresh) == values


@pytest.mark.parametrize("route", ROUTES)
def test_access_denied_on_a_batch_is_never_masked(route, start, proxy, seed):
    ext = start()
    items, _ = seeded(route, seed, 2)
    assert ext.get(batch_path(route, items)).status == 200
    proxy.set_fault(Fault.aws_error(400, "AccessDeniedException"), target=target_of(route))
    time.sleep(1.2)
    assert_json_error(ext.get(batch_path(route, items)), 403)


@pytest.mark.parametrize("route", ROUTES)
def test_a_batch_never_cached_gets_the_error(route, start, proxy, seed):
    ext = start()
    items, _ = seeded(route, seed, 2)
    proxy.set_fault(Fault.throttle(), target=target_of(route))
    assert_json_error(ext.get(batch_path(route, items)), 429)


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_a_batch_is_refreshed_ahead_and_readers_never_wait(route, start, proxy, seed):
    """TTL 10 s: entries live 9-10 s (jitter) and the last second is the refresh-ahead window.
    Reads every 0.1 s from 8.5 s to 12 s: one background batch renews the items, every read is a
    hit, and a value changed in AWS meanwhile arrives through the refresh."""
    ttl = {"SECRETS_MANAGER_TTL": "10", "SSM_PARAMETER_STORE_TTL": "10"}
    ext = start(**ttl)
    items, values = seeded(route, seed, 3)
    started = time.monotonic()
    assert batch_values(ext.get(batch_path(route, items))) == values
    service = "secretsmanager" if route == "batchget" else "ssm"
    misses = ext.get("/metrics").json()["services"][service]["misses"]
    if route == "batchget":
        changed = seed.rotate(items[0])
    else:
        changed = seed.value()
        seed.ssm.put_parameter(Name=items[0], Value=changed, Type="SecureString", Overwrite=True)
    proxy.reset_counts()
    time.sleep(max(0.0, started + 8.5 - time.monotonic()))
    seen = set()
    while time.monotonic() < started + 12.0:
        result = ext.get(batch_path(route, items))
        assert result.status == 200 and "x-secretcache-stale" not in result.headers
        seen.add(batch_values(result)[0])
        time.sleep(0.1)
    counters = ext.get("/metrics").json()["services"][service]
    assert counters["misses"] == misses, "a reader waited for AWS"
    assert counters["refreshes"] >= len(items)
    assert proxy.count(target_of(route)) >= 1
    assert changed in seen
