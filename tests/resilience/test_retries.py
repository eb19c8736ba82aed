"""Retries: transient failures are retried with jittered backoff, counted at the proxy, and the
whole request always ends within its timeout."""

from __future__ import annotations

import itertools

import pytest

from tests.support.fault_proxy import Fault

from .conftest import MARGIN, TIMEOUT, assert_json_error, parameter_path, secret_path, timed
from .conftest import value_of as value

#: The extension's cap on attempts per request (backends.MAX_ATTEMPTS).
MAX_ATTEMPTS = 5


@pytest.mark.parametrize(
    "fault",
    [
        Fault.throttle(),
        Fault.throttle("TooManyRequestsException"),
        Fault.server_error(500),
        Fault.server_error(503),
        Fault.aws_error(429, "SlowDown"),
        Fault.reset(),
        Fault.truncate(),
    ],
    ids=["throttling", "too-many-requests", "500", "503", "429", "reset", "truncated"],
)
def test_a_burst_of_transient_failures_is_retried_to_success(fault, start, proxy, seed):
    ext = start()
    name, secret = seed.secret("burst")
    proxy.set_fault(fault, count=3, target="GetSecretValue")
    result, took = timed(lambda: ext.get(secret_path(name)))
    assert result.status == 200, result.body
    assert value(result) == secret
    assert proxy.count("GetSecretValue", name) == 4  # three failures, then the success
    assert took < TIMEOUT + MARGIN


def test_persistent_throttling_backs_off_and_gives_up_within_the_timeout(start, proxy, seed):
    ext = start()
    name, _ = seed.secret("throttled")
    proxy.set_fault(Fault.throttle())
    result, took = timed(lambda: ext.get(secret_path(name)))
    body = assert_json_error(result, 429)
    assert body["errorType"] == "ThrottlingException"
    calls = proxy.calls("GetSecretValue", name)
    assert 2 <= len(calls) <= MAX_ATTEMPTS
    assert took < TIMEOUT + MARGIN
    # Backoff, not a tight loop: full jitter can make one gap tiny, never all of them zero.
    gaps = [b.started - a.started for a, b in itertools.pairwise(calls)]
    assert sum(gaps) > 0.01, gaps
    print(f"\nthrottled: {len(calls)} attempts, gaps {[round(g, 3) for g in gaps]}, {took:.3f}s")


def test_ssm_throttling_burst_is_retried(start, proxy, seed):
    ext = start()
    name, secret = seed.parameter("burst")
    proxy.set_fault(Fault.throttle(), count=2, target="GetParameter")
    result, took = timed(lambda: ext.get(parameter_path(name)))
    assert result.status == 200 and value(result) == secret
    assert proxy.count("GetParameter", name) == 3
    assert took < TIMEOUT + MARGIN


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("AccessDeniedException", 403), ("ResourceNotFoundException", 404)],
)
def test_permanent_errors_are_not_retried(error_type, status, start, proxy, seed):
    ext = start()
    name, _ = seed.secret("permanent")
    proxy.set_fault(Fault.aws_error(400, error_type))
    assert_json_error(ext.get(secret_path(name)), status)
    assert proxy.count("GetSecretValue", name) == 1


def test_a_timeout_is_not_retried_past_the_deadline(start, proxy, seed):
    ext = start()
    name, _ = seed.secret("slow")
    proxy.set_fault(Fault.latency(TIMEOUT + 2))
    result, took = timed(lambda: ext.get(secret_path(name)))
    assert_json_error(result, 504)
    assert TIMEOUT - 0.1 <= took < TIMEOUT + MARGIN
    assert proxy.count("GetSecretValue", name) == 1


@pytest.mark.slow
def test_default_timeout_is_five_seconds_when_timeout_millis_is_zero(start, proxy, seed):
    ext = start(SECRETS_MANAGER_TIMEOUT_MILLIS="0")
    name, _ = seed.secret("default-timeout")
    proxy.set_fault(Fault.latency(8))
    result, took = timed(lambda: ext.get(secret_path(name)))
    assert_json_error(result, 504)
    assert 4.9 <= took < 5.0 + MARGIN
