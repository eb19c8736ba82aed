"""Refresh-ahead, the negative cache, and a Lambda freeze (SIGSTOP past the TTL, then SIGCONT)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.fault_proxy import Fault

from .conftest import assert_json_error, secret_path, timed, value_of

REFRESH_LATENCY = 0.2


@pytest.mark.slow
def test_steady_traffic_near_ttl_end_triggers_exactly_one_background_refresh(
    start, proxy, seed, figures
):
    # TTL 5 s, jittered down to 4.5-5 s; the last tenth is the refresh-ahead window.
    ext = start(SECRETS_MANAGER_TTL="5")
    name, v1 = seed.secret("steady")
    first = ext.get(secret_path(name))
    assert value_of(first) == v1
    loaded = time.monotonic()
    # Rotate, and make AWS slow: a request that waited on AWS would take >= REFRESH_LATENCY.
    v2 = seed.rotate(name)
    proxy.set_fault(Fault.latency(REFRESH_LATENCY))
    seen: list[tuple[float, str, float]] = []
    while time.monotonic() - loaded < 6.0:  # bounded: ~300 requests
        result, took = timed(lambda: ext.get(secret_path(name)))
        assert result.status == 200, result.body
        assert "x-secretcache-stale" not in result.headers
        seen.append((time.monotonic() - loaded, value_of(result), took))
        time.sleep(0.02)
    values = [v for _, v, _ in seen]
    assert set(values) == {v1, v2}
    switch = values.index(v2)
    assert values[switch:] == [v2] * (len(values) - switch), "an old value came back"
    assert 4.0 <= seen[switch][0] <= 5.5, seen[switch][0]
    # One load at first, then exactly one refresh, and nobody waited for it.
    assert proxy.count("GetSecretValue", name) == 2
    slowest = max(took for _, _, took in seen)
    assert slowest < REFRESH_LATENCY, slowest
    figures["refresh_ahead"] = {
        "requests": len(seen),
        "upstream_calls": proxy.count("GetSecretValue", name),
        "new_value_from_s": round(seen[switch][0], 3),
        "slowest_request_ms": round(slowest * 1000, 1),
    }


def test_not_found_is_cached_for_not_found_ttl(start, proxy, seed):
    ext = start(SECRETCACHE_NOT_FOUND_TTL="2", SECRETS_MANAGER_TTL="60")
    name = f"{seed.prefix}-later"
    first = time.monotonic()
    for _ in range(5):
        assert_json_error(ext.get(secret_path(name)), 404)
    assert proxy.count("GetSecretValue", name) == 1
    # Created now, but the negative entry still answers until its TTL (>= 1.8 s) ends.
    value = seed.value()
    seed.sm.create_secret(Name=name, SecretString=value)
    assert_json_error(ext.get(secret_path(name)), 404)
    assert proxy.count("GetSecretValue", name) == 1
    time.sleep(max(0.0, 2.1 - (time.monotonic() - first)))
    result = ext.get(secret_path(name))
    assert result.status == 200 and value_of(result) == value
    assert proxy.count("GetSecretValue", name) == 2


def test_not_found_is_not_cached_by_default(start, proxy, seed):
    ext = start(SECRETS_MANAGER_TTL="60")
    name = f"{seed.prefix}-absent"
    for _ in range(3):
        assert_json_error(ext.get(secret_path(name)), 404)
    assert proxy.count("GetSecretValue", name) == 3


@pytest.mark.slow
def test_freeze_past_ttl_never_serves_the_expired_value_as_fresh(start, proxy, seed):
    ext = start()
    name, v1 = seed.secret("frozen")
    assert value_of(ext.get(secret_path(name))) == v1
    assert ext.process is not None
    ext.process.send_signal(signal.SIGSTOP)
    try:
        v2 = seed.rotate(name)
        time.sleep(1.5)
        # An invoke arriving at the thaw: queued in the kernel while frozen.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(ext.get, secret_path(name))
            time.sleep(0.2)
            ext.process.send_signal(signal.SIGCONT)
            result = pending.result(timeout=10)
    finally:
        ext.process.send_signal(signal.SIGCONT)
    assert result.status == 200 and value_of(result) == v2
    assert "x-secretcache-stale" not in result.headers
    assert value_of(ext.get(secret_path(name))) == v2

    # Frozen again, and AWS is gone at the thaw: the old value may come back only as stale.
    ext.process.send_signal(signal.SIGSTOP)
    try:
        proxy.set_fault(Fault.down())
        seed.rotate(name)
        time.sleep(1.5)
    finally:
        ext.process.send_signal(signal.SIGCONT)
    result = ext.get(secret_path(name))
    assert result.status == 200 and value_of(result) == v2
    assert result.headers.get("x-secretcache-stale") == "true"
    assert int(result.headers["age"]) >= 1
    assert ext.alive()
