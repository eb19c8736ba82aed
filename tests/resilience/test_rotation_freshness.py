"""Freshness after rotation (SECRETCACHE_ROTATION_AWARE) through a real extension process, with
moto server as AWS behind the fault proxy, on both upstreams.

Where moto differs from AWS (moto 5.2.5, read in moto/secretsmanager/models.py):
- RotateSecret computes NextRotationDate only from `AutomaticallyAfterDays` (now + whole days);
  `ScheduleExpression` is ignored (rotation then stays disabled and no date is returned) and
  `Duration` is neither stored nor returned. AWS's shortest schedule is `rate(4 hours)`. So the
  tests that need a date seconds away (or just passed) take moto's real DescribeSecret answer for
  a secret whose rotation moto enabled and move its `NextRotationDate` (and add the `Duration` AWS
  would return) in the fault proxy.
- Without a rotation Lambda, moto's RotateSecret either swaps in a version with no value or (with
  RotateImmediately=False) copies the current value; the tests rotate with PutSecretValue, which
  moves AWSCURRENT to a new version as a rotation's finishSecret step does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.fault_proxy import Fault

from .conftest import secret_path, value_of

UPSTREAMS = ["lean", "sdk"]
DAY = 86_400.0


def rotating_secret(seed: Any, name: str) -> tuple[str, str]:
    """A secret with rotation enabled in moto: DescribeSecret says RotationEnabled and a date."""
    secret_id, value = seed.secret(name)
    seed.sm.rotate_secret(
        SecretId=secret_id, RotationRules={"AutomaticallyAfterDays": 1}, RotateImmediately=False
    )
    described = seed.sm.describe_secret(SecretId=secret_id)
    assert described["RotationEnabled"] is True
    assert described["NextRotationDate"].timestamp() > time.time() + DAY - 60
    return secret_id, value


def next_rotation_at(schedule: dict[str, float]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Moto's DescribeSecret answer with the date in `schedule["next"]` and a 2-hour window."""

    def rewrite(document: dict[str, Any]) -> dict[str, Any]:
        document["NextRotationDate"] = schedule["next"]
        document.setdefault("RotationRules", {})["Duration"] = "2h"
        return document

    return rewrite


def aware(upstream: str, **env: str) -> dict[str, str]:
    return {
        "SECRETCACHE_ROTATION_AWARE": "true",
        "SECRETCACHE_UPSTREAM": upstream,
        "SECRETS_MANAGER_TTL": "300",
        **env,
    }


def counters(ext: Any) -> dict[str, Any]:
    body = ext.get("/metrics").json()
    return dict(body["services"]["secretsmanager"])


def sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_moto_rotation_schedule_is_read_and_describe_runs_beside_get(upstream, start, proxy, seed):
    """moto's own DescribeSecret (a date a day away): one DescribeSecret per load, started while
    GetSecretValue is still under way, and the 300 s TTL stays in charge."""
    ext = start(**aware(upstream))
    secret_id, value = rotating_secret(seed, "real-schedule")
    proxy.reset_counts()
    proxy.set_fault(Fault.latency(1.0), target="GetSecretValue")
    assert value_of(ext.get(secret_path(secret_id))) == value
    proxy.clear()
    assert value_of(ext.get(secret_path(secret_id))) == value  # a hit
    gets = proxy.calls("GetSecretValue", secret_id)
    describes = proxy.calls("DescribeSecret", secret_id)
    assert len(gets) == 1 and len(describes) == 1
    # Concurrent: DescribeSecret reached AWS while GetSecretValue was held for 1 s.
    assert abs(describes[0].started - gets[0].started) < 0.9
    seen = counters(ext)
    assert seen["describeSecretCalls"] == 1
    assert seen["describeSecretFailures"] == 0


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_a_value_is_not_served_past_next_rotation_date(upstream, start, proxy, seed):
    ext = start(**aware(upstream))
    secret_id, v1 = rotating_secret(seed, "due")
    schedule = {"next": time.time() + 4.0}
    proxy.set_rewrite("DescribeSecret", next_rotation_at(schedule))
    assert value_of(ext.get(secret_path(secret_id))) == v1
    # The rotation runs; AWS then moves NextRotationDate to the next period.
    v2 = seed.rotate(secret_id)
    due = schedule["next"]
    schedule["next"] = time.time() + DAY
    result = ext.get(secret_path(secret_id))
    if time.time() < due:  # before the date the cached value is served (the TTL is 300 s)
        assert value_of(result) == v1
    sleep_until(due + 0.2)
    assert value_of(ext.get(secret_path(secret_id))) == v2
    gets = proxy.count("GetSecretValue", secret_id)
    assert gets == 2
    # The date has moved a day ahead: the TTL rules again, later reads are hits.
    for _ in range(5):
        assert value_of(ext.get(secret_path(secret_id))) == v2
    assert proxy.count("GetSecretValue", secret_id) == gets
    assert counters(ext)["describeSecretCalls"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_in_the_window_rechecks_are_bounded_until_the_new_version(upstream, start, proxy, seed):
    """NextRotationDate has passed, the new version is not there yet: one re-check a second
    (SECRETCACHE_ROTATION_RECHECK_SECONDS=1), not one per read; none once the version changed."""
    ext = start(**aware(upstream, SECRETCACHE_ROTATION_RECHECK_SECONDS="1"))
    secret_id, v1 = rotating_secret(seed, "window")
    schedule = {"next": time.time() - 5.0}  # the window began 5 s ago; Duration 2h
    proxy.set_rewrite("DescribeSecret", next_rotation_at(schedule))
    proxy.reset_counts()
    reads = 0
    ends = time.monotonic() + 3.5
    while time.monotonic() < ends:
        assert value_of(ext.get(secret_path(secret_id))) == v1
        reads += 1
        time.sleep(0.05)
    rechecks = proxy.count("GetSecretValue", secret_id)
    assert reads >= 15
    assert 2 <= rechecks <= 6, (reads, rechecks)
    assert proxy.count("DescribeSecret", secret_id) == rechecks
    v2 = seed.rotate(secret_id)  # the rotation ends; AWS has not moved the date yet
    deadline = time.monotonic() + 5.0
    while value_of(ext.get(secret_path(secret_id))) != v2:
        assert time.monotonic() < deadline, "the new version was not picked up"
        time.sleep(0.05)
    after = proxy.count("GetSecretValue", secret_id)
    ends = time.monotonic() + 2.5
    while time.monotonic() < ends:
        assert value_of(ext.get(secret_path(secret_id))) == v2
        time.sleep(0.05)
    assert proxy.count("GetSecretValue", secret_id) == after


def test_off_by_default_nothing_changes(start, proxy, seed):
    ext = start(SECRETS_MANAGER_TTL="300")
    secret_id, v1 = rotating_secret(seed, "off")
    schedule = {"next": time.time() + 1.0}
    proxy.set_rewrite("DescribeSecret", next_rotation_at(schedule))
    assert value_of(ext.get(secret_path(secret_id))) == v1
    seed.rotate(secret_id)
    sleep_until(schedule["next"] + 0.3)
    assert value_of(ext.get(secret_path(secret_id))) == v1  # the TTL, as before the switch
    assert proxy.count("DescribeSecret") == 0
    assert proxy.count("GetSecretValue", secret_id) == 1
    assert counters(ext)["describeSecretCalls"] == 0


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize(
    "fault",
    [Fault.aws_error(400, "AccessDeniedException"), Fault.throttle()],
    ids=["access_denied", "throttled"],
)
def test_describe_failing_never_fails_the_read(upstream, fault, start, proxy, seed):
    """A role without secretsmanager:DescribeSecret, or DescribeSecret throttled: the read
    answers 200, the entry keeps the plain TTL, one warning names the secret (never a value)."""
    ext = start(**aware(upstream, SECRETS_MANAGER_TTL="2"))
    secret_id, v1 = rotating_secret(seed, "denied")
    schedule = {"next": time.time() + 0.5}
    proxy.set_rewrite("DescribeSecret", next_rotation_at(schedule))
    proxy.set_fault(fault, target="DescribeSecret")
    first = ext.get(secret_path(secret_id))
    assert first.status == 200 and value_of(first) == v1
    seed.rotate(secret_id)
    sleep_until(schedule["next"] + 0.3)
    # Past the date, within the TTL: without DescribeSecret the TTL alone decides.
    assert value_of(ext.get(secret_path(secret_id))) == v1
    time.sleep(2.0)
    assert ext.get(secret_path(secret_id)).status == 200
    assert proxy.count("GetSecretValue", secret_id) == 2
    assert proxy.count("DescribeSecret", secret_id) >= 2
    warned = [
        json.loads(line)
        for line in ext.lines
        if line.startswith("{") and '"rotation.describe_failed"' in line
    ]
    assert len(warned) == 1, warned
    assert warned[0]["secretId"] == secret_id
    # Throttling is retried; past DESCRIBE_GRACE_SECONDS the read stops waiting for it.
    assert warned[0]["errorType"] in (
        "AccessDeniedException",
        "ThrottlingException",
        "DescribeSecretTimeout",
    )
    assert v1 not in ext.logs()
    seen = counters(ext)
    assert seen["describeSecretFailures"] == seen["describeSecretCalls"] == 2
