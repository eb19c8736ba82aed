"""Throttling remembered, through a real extension process against moto server behind the fault
proxy: while AWS throttles, expired values are served stale at once with one background refresh
per key and back-off (not five attempts per read); a reader with no value during a key's back-off
makes one attempt (a 429 with Retry-After when it is throttled, the value when it is not);
not-found is unchanged; AWS recovering is seen at once.
`SECRETCACHE_THROTTLE_BACKOFF_SECONDS=0` is the behaviour before, for comparison."""

from __future__ import annotations

import time

import pytest

from tests.support.fault_proxy import Fault

from .conftest import assert_json_error, parameter_path, value_of

READS = 30


def read_expired_while_throttled(ext, proxy, seed, **env):
    """Three parameters cached, then throttled past the TTL; READS reads of each, 0.03 s apart.
    Returns (the answers, GetParameter attempts the reads caused)."""
    made = [seed.parameter(f"t{i}") for i in range(3)]
    for name, value in made:
        assert value_of(ext.get(parameter_path(name))) == value
    proxy.set_fault(Fault.throttle(), target="GetParameter")
    time.sleep(1.2)  # TTL 1 s: every entry expired
    proxy.reset_counts()
    answers = []
    for _ in range(READS):
        for name, _value in made:
            answers.append((ext.get(parameter_path(name)), _value))
        time.sleep(0.03)
    return answers, proxy.count("GetParameter")


def test_throttled_reads_are_served_stale_without_a_retry_storm(start, proxy, seed):
    ext = start()  # SECRETCACHE_THROTTLE_BACKOFF_SECONDS: the default (20)
    answers, attempts = read_expired_while_throttled(ext, proxy, seed)
    for result, value in answers:
        assert result.status == 200 and value_of(result) == value
        assert result.headers["x-secretcache-stale"] == "true"
    # The first read waits through one load's retries (5 attempts) and teaches the extension
    # that SSM throttles; from then on each key is tried once per back-off (0.5-1 s, 1-2 s ...)
    # in the background: over ~1.5 s of reads, a handful of attempts per key, not 5 per read.
    assert attempts <= 5 + 3 * 4, attempts
    counters = ext.get("/metrics").json()["services"]["ssm"]
    assert counters["staleServed"] == 3 * READS


def test_without_the_back_off_every_read_retries(start, proxy, seed):
    """The behaviour before (and with the setting at 0): each read of an expired key waits
    through its own retries. The same reads make far more attempts."""
    ext = start(SECRETCACHE_THROTTLE_BACKOFF_SECONDS="0")
    made = [seed.parameter(f"u{i}") for i in range(3)]
    for name, value in made:
        assert value_of(ext.get(parameter_path(name))) == value
    proxy.set_fault(Fault.throttle(), target="GetParameter")
    time.sleep(1.2)
    proxy.reset_counts()
    for _ in range(4):
        for name, value in made:
            result = ext.get(parameter_path(name))
            assert result.status == 200 and value_of(result) == value
    assert proxy.count("GetParameter") >= 3 * 4 * 2  # at least 2 attempts per read (timeout)


def test_no_value_during_the_back_off_makes_one_attempt(start, proxy, seed):
    ext = start(SECRETCACHE_THROTTLE_BACKOFF_SECONDS="20")
    name, value = seed.parameter("cold")
    proxy.set_fault(Fault.throttle(), target="GetParameter")
    first = ext.get(parameter_path(name))  # AWS's own refusal, after the retries
    body = assert_json_error(first, 429)
    assert body["errorType"] == "ThrottlingException"
    assert first.headers["retry-after"] == "1"  # the first back-off: 0.5-1 s
    tried = proxy.count("GetParameter")
    assert tried >= 2
    # During the back-off, with no value to serve: one attempt (no retries), throttled again.
    second = ext.get(parameter_path(name))
    body = assert_json_error(second, 429)
    assert body["errorType"] == "ThrottlingException"
    assert second.headers["retry-after"] in ("1", "2")  # the second back-off: 1-2 s
    assert proxy.count("GetParameter") == tried + 1
    # AWS recovers: a read during the (second) back-off makes its one attempt and gets the value.
    proxy.clear()
    result = ext.get(parameter_path(name))
    assert result.status == 200 and value_of(result) == value
    assert proxy.count("GetParameter") == tried + 2


def test_not_found_is_unchanged_while_the_service_throttles(start, proxy, seed):
    ext = start()
    name, _value = seed.parameter("hot")
    assert ext.get(parameter_path(name)).status == 200
    proxy.set_fault(Fault.throttle(), target="GetParameter", identifier=name)
    time.sleep(1.2)
    assert ext.get(parameter_path(name)).headers.get("x-secretcache-stale") == "true"
    missing = f"/{seed.prefix}/does-not-exist"
    for _ in range(3):  # each read asks AWS and answers 404, as before
        assert_json_error(ext.get(parameter_path(missing)), 404)
    assert proxy.count("GetParameter", missing) == 3


@pytest.mark.slow
def test_recovery_is_seen_at_the_next_read(start, proxy, seed):
    """AWS stops throttling: the next read of an expired key is served stale once (the service
    was throttled moments ago) and refreshed in the background; the read after it is fresh."""
    ext = start()
    name, value = seed.parameter("recovers")
    assert value_of(ext.get(parameter_path(name))) == value
    proxy.set_fault(Fault.throttle(), target="GetParameter")
    time.sleep(1.2)
    assert ext.get(parameter_path(name)).headers.get("x-secretcache-stale") == "true"
    changed = seed.value()
    seed.ssm.put_parameter(Name=name, Value=changed, Type="SecureString", Overwrite=True)
    proxy.clear()
    time.sleep(1.05)  # the key's first back-off (0.5-1 s) is over
    deadline = time.monotonic() + 3.0
    seen = []
    while time.monotonic() < deadline:
        result = ext.get(parameter_path(name))
        assert result.status == 200
        seen.append((value_of(result), result.headers.get("x-secretcache-stale")))
        if seen[-1] == (changed, None):
            break
        time.sleep(0.05)
    assert seen[-1] == (changed, None), seen
    assert len(seen) <= 3, seen
