"""Faults between the extension and AWS: it stays up, answers within its timeout, serves stale
where allowed, says clearly what went wrong elsewhere, and recovers by itself."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.fault_proxy import Fault

from .conftest import (
    MARGIN,
    TIMEOUT,
    assert_json_error,
    parameter_path,
    secret_path,
    timed,
    value_of,
)

#: (fault, status and errorType a request with nothing cached gets while the fault lasts)
FAULTS = {
    "latency": (Fault.latency(TIMEOUT + 2.0), 504, "UpstreamTimeout"),
    "server_error": (Fault.server_error(500), 502, "InternalServiceError"),
    "unavailable": (Fault.server_error(503), 502, "InternalServiceError"),
    "throttling": (Fault.throttle(), 429, "ThrottlingException"),
    "too_many_requests": (Fault.throttle("TooManyRequestsException"), 429, None),
    "connection_reset": (Fault.reset(), 502, "UpstreamUnavailable"),
    "truncated_response": (Fault.truncate(), 502, "UpstreamUnavailable"),
    "moto_stopped": (Fault.down(), 502, "UpstreamUnavailable"),
}


def wait_past_ttl() -> None:
    # TTL 1 s with jitter only shortening it: 1.2 s is past it for sure.
    time.sleep(1.2)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_serves_stale_errors_clearly_and_recovers(name, start, proxy, seed):
    fault, status, error_type = FAULTS[name]
    ext = start()
    cached, v1 = seed.secret("cached")
    never_cached, v_other = seed.secret("never-cached")
    param, p1 = seed.parameter("cached")
    assert value_of(ext.get(secret_path(cached))) == v1
    assert value_of(ext.get(parameter_path(param))) == p1

    proxy.set_fault(fault)
    wait_past_ttl()
    # The three requests run at once: each must end within the timeout on its own.
    with ThreadPoolExecutor(3) as pool:
        sm = pool.submit(timed, lambda: ext.get(secret_path(cached)))
        ssm = pool.submit(timed, lambda: ext.get(parameter_path(param)))
        other = pool.submit(timed, lambda: ext.get(secret_path(never_cached)))
    # Secrets Manager: the expired entry is served stale, flagged, with its age.
    result, took = sm.result()
    assert result.status == 200, result.body
    assert value_of(result) == v1
    assert result.headers["x-secretcache-stale"] == "true"
    assert int(result.headers["age"]) >= 1
    assert took < TIMEOUT + MARGIN
    # SSM the same.
    result, took = ssm.result()
    assert result.status == 200 and value_of(result) == p1
    assert result.headers["x-secretcache-stale"] == "true"
    assert took < TIMEOUT + MARGIN
    # Nothing cached: a clear JSON error, within the timeout.
    result, took = other.result()
    body = assert_json_error(result, status)
    if error_type is not None:
        assert body["errorType"] == error_type
    assert took < TIMEOUT + MARGIN
    assert ext.alive()

    # The fault clears: fresh values again, without restarting anything.
    v2 = seed.rotate(cached)
    proxy.clear()
    if status == 429:
        # Throttling is remembered: each key backs off (its first back-off 0.5-1 s), and the
        # first read of an expired entry within 10 s of it is served stale while it refreshes in
        # the background (tests/resilience/test_throttle_backoff.py); the next read is fresh.
        time.sleep(1.05)
        ext.get(secret_path(cached))
        time.sleep(0.2)
    result = ext.get(secret_path(cached))
    assert result.status == 200 and value_of(result) == v2
    assert "x-secretcache-stale" not in result.headers
    result = ext.get(secret_path(never_cached))
    assert result.status == 200 and value_of(result) == v_other
    assert ext.alive()


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("ResourceNotFoundException", 404), ("AccessDeniedException", 403)],
)
def test_not_found_and_access_denied_are_never_masked_by_stale(
    error_type, status, start, proxy, seed
):
    ext = start()
    name, value = seed.secret("masked")
    assert value_of(ext.get(secret_path(name))) == value
    proxy.set_fault(Fault.aws_error(400, error_type))
    wait_past_ttl()
    result = ext.get(secret_path(name))
    body = assert_json_error(result, status)
    assert body["errorType"] == error_type
    assert "x-secretcache-stale" not in result.headers
    assert value not in result.body.decode()


def test_deleted_secret_is_not_found_not_stale(start, proxy, seed):
    ext = start()
    name, value = seed.secret("deleted")
    assert value_of(ext.get(secret_path(name))) == value
    seed.sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    wait_past_ttl()
    assert_json_error(ext.get(secret_path(name)), 404)


@pytest.mark.slow
def test_stale_is_bounded_by_max_stale_seconds(start, proxy, seed):
    # 6 s: the first stale answer comes after up to 1.5 s of retries, well inside it even on a
    # loaded machine.
    ext = start(SECRETCACHE_MAX_STALE_SECONDS="6")
    name, value = seed.secret("bounded")
    assert value_of(ext.get(secret_path(name))) == value
    stored = time.monotonic()
    proxy.set_fault(Fault.server_error())
    wait_past_ttl()
    assert ext.get(secret_path(name)).headers.get("x-secretcache-stale") == "true"
    time.sleep(max(0.0, stored + 1 + 6.2 - time.monotonic()))  # past TTL + max stale
    assert_json_error(ext.get(secret_path(name)), 502)


def test_stale_disabled_with_zero(start, proxy, seed):
    ext = start(SECRETCACHE_MAX_STALE_SECONDS="0")
    name, value = seed.secret("nostale")
    assert value_of(ext.get(secret_path(name))) == value
    proxy.set_fault(Fault.throttle())
    wait_past_ttl()
    assert_json_error(ext.get(secret_path(name)), 429)


def test_stale_served_is_logged_without_the_value(start, proxy, seed):
    ext = start(PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL="info")
    name, value = seed.secret("logged")
    assert value_of(ext.get(secret_path(name))) == value
    proxy.set_fault(Fault.server_error())
    wait_past_ttl()
    assert ext.get(secret_path(name)).headers.get("x-secretcache-stale") == "true"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "cache.stale_served" not in ext.logs():
        time.sleep(0.05)
    warnings = [line for line in ext.lines if "cache.stale_served" in line]
    assert warnings and all('"level":"WARN"' in line for line in warnings)
    assert value not in ext.logs()
