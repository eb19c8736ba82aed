"""Freshness after rotation with injected clocks: the lifetime rules, the rotation window, and the
read core running DescribeSecret beside GetSecretValue (fake backends; moto runs in
tests/resilience/test_rotation_freshness.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from secretcache.cache import CacheKey, Policy, TtlCache
from secretcache.config import ConfigError, load_config
from secretcache.errors import AccessDenied, Throttled
from secretcache.log import log
from secretcache.metrics import snapshot
from secretcache.read_requests import SecretRead
from secretcache.reads import Reads, cache_key, cache_policies
from secretcache.rotation import (
    HOURS_WINDOW_SECONDS,
    RECHECK_JITTER_FRACTION,
    RotationWatch,
    Schedule,
    decide,
    parse_schedule,
    window_length,
)

DAY = 86_400.0
#: 2026-11-25T12:00:00Z: noon, so the rest of the UTC day is 12 h.
NOON = 1_795_608_000.0
RECHECK = 30.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- the window


def test_a_duration_sets_the_window() -> None:
    assert (
        window_length(NOON, {"ScheduleExpression": "rate(4 hours)", "Duration": "3h"}) == 3 * 3600
    )


def test_a_schedule_in_hours_has_a_one_hour_window_by_default() -> None:
    assert window_length(NOON, {"ScheduleExpression": "rate(4 hours)"}) == HOURS_WINDOW_SECONDS
    assert window_length(NOON, {"ScheduleExpression": "cron(0 */4 * * ? *)"}) == 3600


def test_a_schedule_in_days_closes_at_the_end_of_the_utc_day() -> None:
    assert window_length(NOON, {"ScheduleExpression": "rate(10 days)"}) == 12 * 3600
    assert window_length(NOON, {"ScheduleExpression": "cron(0 8 * * ? *)"}) == 12 * 3600
    assert window_length(NOON, {"AutomaticallyAfterDays": 30}) == 12 * 3600
    midnight = NOON - 12 * 3600
    assert window_length(midnight, {}) == DAY


def test_the_schedule_is_read_from_describe_secret() -> None:
    described = {
        "RotationEnabled": True,
        "NextRotationDate": datetime.fromtimestamp(NOON, timezone.utc),
        "RotationRules": {"ScheduleExpression": "rate(4 hours)", "Duration": "2h"},
        "VersionIdsToStages": {"v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"]},
    }
    assert parse_schedule(described) == Schedule(True, NOON, NOON + 7200, "v2")
    assert parse_schedule(described, "AWSPREVIOUS").stage_version == "v1"


def test_rotation_off_or_without_a_date_is_plain() -> None:
    assert not parse_schedule({"RotationEnabled": False, "NextRotationDate": NOON}).enabled
    assert not parse_schedule({"RotationEnabled": True}).enabled
    assert not parse_schedule({}).enabled


# --------------------------------------------------------------------------- the rules

SCHEDULE = Schedule(True, NOON, NOON + 3600, "v1")


def test_before_the_rotation_an_entry_ends_at_next_rotation_date() -> None:
    assert decide(SCHEDULE, "v1", None, NOON - 100, RECHECK) == (100, "before")


def test_a_long_way_off_the_limit_exceeds_the_ttl_so_the_ttl_rules() -> None:
    # The cache takes min(TTL, limit); a date a day away leaves a 300 s TTL in charge.
    assert decide(SCHEDULE, "v1", None, NOON - DAY, RECHECK).limit == DAY


def test_in_the_window_without_a_new_version_it_rechecks_at_the_bounded_interval() -> None:
    assert decide(SCHEDULE, "v1", None, NOON + 1, RECHECK) == (RECHECK, "window")
    assert decide(SCHEDULE, "v1", "v1", NOON + 600, RECHECK) == (RECHECK, "window")


def test_a_new_version_in_the_window_ends_the_rechecks() -> None:
    moved = SCHEDULE._replace(stage_version="v2")
    assert decide(moved, "v2", "v1", NOON + 900, RECHECK) == (None, "rotated")


def test_past_the_window_the_ttl_applies_again() -> None:
    assert decide(SCHEDULE, "v1", "v1", NOON + 3600, RECHECK) == (None, "after-window")


def test_a_next_rotation_date_moved_forward_is_the_next_limit() -> None:
    later = Schedule(True, NOON + DAY, NOON + DAY + 3600, "v2")
    assert decide(later, "v2", "v1", NOON + 900, RECHECK) == (DAY - 900, "before")


def test_describe_and_get_disagreeing_on_the_version_rechecks() -> None:
    assert decide(SCHEDULE, "v0", None, NOON - DAY, RECHECK) == (RECHECK, "race")
    plain = Schedule(False, stage_version="v2")
    assert decide(plain, "v1", None, NOON, RECHECK) == (RECHECK, "race")


def test_no_rotation_is_plain() -> None:
    assert decide(Schedule(False), "v1", None, NOON, RECHECK) == (None, "plain")


# --------------------------------------------------------------------------- configuration


def test_the_switch_is_off_by_default_and_validated() -> None:
    base = {"AWS_SESSION_TOKEN": "t"}
    config = load_config(base)
    assert config.rotation_aware is False
    assert config.rotation_recheck == 60
    on = load_config({**base, "SECRETCACHE_ROTATION_AWARE": "TRUE"})
    assert on.rotation_aware is True
    assert on.describe()["rotationAware"] is True
    with pytest.raises(ConfigError, match="SECRETCACHE_ROTATION_AWARE"):
        load_config({**base, "SECRETCACHE_ROTATION_AWARE": "sometimes"})
    for bad in ("0", "3601", "1.5", "-1"):
        with pytest.raises(ConfigError, match="SECRETCACHE_ROTATION_RECHECK_SECONDS"):
            load_config({**base, "SECRETCACHE_ROTATION_RECHECK_SECONDS": bad})


# --------------------------------------------------------------------------- the read core


class RotatingBackends:
    """A secret whose AWSCURRENT version and schedule the test moves; counts every call."""

    def __init__(self, wall: Clock) -> None:
        self.wall = wall
        self.loaded = True
        self.call_observer: Any = None
        self.version = "v1"
        self.next_rotation: float | None = None
        self.describe_error: Exception | None = None
        self.describe_delay = 0.0
        self.calls: list[str] = []
        self.roles: list[tuple[str, str | None]] = []
        #: Set by DescribeSecret; GetSecretValue waits for it when `prove_concurrent` is on.
        self.described = asyncio.Event()
        self.prove_concurrent = False

    async def get_secret_value(
        self,
        secret_id: str,
        version_id: str | None,
        version_stage: str | None,
        *,
        role_arn: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("get_secret_value")
        self.roles.append(("get_secret_value", role_arn))
        if self.prove_concurrent:
            await asyncio.wait_for(self.described.wait(), 2.0)
        version = version_id or self.version
        return {
            "ARN": f"arn:aws:secretsmanager:us-east-1:1:secret:{secret_id}-AbCdEf",
            "Name": secret_id,
            "SecretString": f"value-{version}",
            "VersionId": version,
            "VersionStages": ["AWSCURRENT"],
        }

    async def describe_secret(
        self, secret_id: str, *, role_arn: str | None = None
    ) -> dict[str, Any]:
        self.calls.append("describe_secret")
        self.roles.append(("describe_secret", role_arn))
        self.described.set()
        if self.describe_delay:
            await asyncio.sleep(self.describe_delay)
        if self.describe_error is not None:
            raise self.describe_error
        out: dict[str, Any] = {
            "Name": secret_id,
            "VersionIdsToStages": {self.version: ["AWSCURRENT"]},
        }
        if self.next_rotation is not None:
            out["RotationEnabled"] = True
            out["NextRotationDate"] = datetime.fromtimestamp(self.next_rotation, timezone.utc)
            out["RotationRules"] = {"ScheduleExpression": "rate(4 hours)", "Duration": "2h"}
        return out


class World:
    """Reads over a TtlCache whose clock is the wall clock the rotation rules read (both fake)."""

    def __init__(self, ttl: int = 300, rand: float = 0.0, **env: str) -> None:
        self.clock = Clock(NOON - 1000)
        self.backends = RotatingBackends(self.clock)
        config = load_config(
            {
                "AWS_SESSION_TOKEN": "t",
                "SECRETS_MANAGER_TTL": str(ttl),
                "SECRETCACHE_ROTATION_AWARE": "true",
                "SECRETCACHE_ROTATION_RECHECK_SECONDS": str(int(RECHECK)),
                **env,
            }
        )
        policies = {
            service: policy._replace(jitter=0.0)
            for service, policy in cache_policies(config).items()
        }
        self.cache = TtlCache(
            max_entries=100, max_bytes=1 << 20, policies=policies, clock=self.clock
        )
        self.reads = Reads(config, self.cache, self.backends)
        if self.reads.rotation is not None:
            # The rules read the same fake clock as the cache; the re-check jitter draws `rand`.
            self.reads.rotation._wall = self.clock
            self.reads.rotation._rand = lambda: rand

    async def read(self, read: SecretRead | None = None) -> str:
        lookup = await self.reads.fetch(read or SecretRead("db"))
        return str(json.loads(lookup.body)["SecretString"])

    def count(self, call: str) -> int:
        return self.backends.calls.count(call)


async def test_a_value_is_not_served_past_next_rotation_date() -> None:
    world = World(ttl=3000)
    world.backends.next_rotation = NOON
    assert await world.read() == "value-v1"
    world.backends.version = "v2"  # the rotation happens at its date
    world.clock.now = NOON - 1
    assert await world.read() == "value-v1"  # a hit: the TTL (3000 s) has not run out
    assert world.count("get_secret_value") == 1
    world.clock.now = NOON
    assert await world.read() == "value-v2"
    assert world.count("get_secret_value") == 2
    assert world.count("describe_secret") == 2


async def test_in_the_window_aws_is_asked_once_per_recheck_until_the_version_changes() -> None:
    world = World(ttl=3000)
    world.backends.next_rotation = NOON
    world.clock.now = NOON + 10  # the window has begun; the rotation has not run yet
    await world.read()
    for _ in range(29):  # reads every second for 29 s: all hits
        world.clock.now += 1
        assert await world.read() == "value-v1"
    assert world.count("get_secret_value") == 1
    world.clock.now += 1  # 30 s: one re-check
    assert await world.read() == "value-v1"
    assert world.count("get_secret_value") == 2
    world.backends.version = "v2"  # the rotation ends; AWS has not moved the date yet
    world.clock.now += RECHECK
    assert await world.read() == "value-v2"
    calls = world.count("get_secret_value")
    world.clock.now += 2000  # well inside the TTL: no more re-checks
    assert await world.read() == "value-v2"
    assert world.count("get_secret_value") == calls


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
async def test_rechecks_in_the_window_are_cut_at_random_but_next_rotation_date_is_exact(
    draw: float,
) -> None:
    world = World(ttl=3000, rand=draw)
    world.backends.next_rotation = NOON
    await world.read()  # before the date: ends exactly at the date, whatever the draw
    key = cache_key(SecretRead("db"))
    assert world.reads.rotation is not None
    assert world.reads.rotation.lifetime_limit(key) == NOON - world.clock.now
    world.clock.now = NOON
    await world.read()  # the window: the re-check interval, cut by up to a quarter
    expected = RECHECK * (1 - RECHECK_JITTER_FRACTION * draw)
    assert world.reads.rotation.lifetime_limit(key) == pytest.approx(expected)
    world.clock.now = NOON + expected - 0.01
    await world.read()
    assert world.count("get_secret_value") == 2  # still a hit
    world.clock.now = NOON + expected
    await world.read()
    assert world.count("get_secret_value") == 3  # re-checked at the jittered instant


def test_a_fleet_that_read_at_the_date_does_not_recheck_in_step() -> None:
    """100 sandboxes re-read at NextRotationDate: their re-checks spread over a quarter of the
    interval (the extension's own draw, from a seeded `random`)."""
    import random

    from secretcache.metrics import Metrics

    rng = random.Random(7)
    ends = []
    for _ in range(100):
        watch = RotationWatch(None, Metrics(), recheck=RECHECK, wall_clock=lambda: NOON + 1,
                              rand=rng.random)  # type: ignore[arg-type]  # fmt: skip
        key = cache_key(SecretRead("db"))
        described = {"RotationEnabled": True, "NextRotationDate": NOON,
                     "RotationRules": {"Duration": "2h"},
                     "VersionIdsToStages": {"v1": ["AWSCURRENT"]}}  # fmt: skip
        watch._record(key, "db", "AWSCURRENT", described, {"VersionId": "v1"})
        limit = watch.lifetime_limit(key)
        assert limit is not None
        ends.append(limit)
    assert all(RECHECK * (1 - RECHECK_JITTER_FRACTION) <= e <= RECHECK for e in ends)
    assert max(ends) - min(ends) > RECHECK * RECHECK_JITTER_FRACTION * 0.8
    assert max(sum(1 for e in ends if int(e) == s) for s in set(int(e) for e in ends)) < 30


async def test_a_date_moved_forward_ends_the_rechecks() -> None:
    world = World(ttl=300)
    world.backends.next_rotation = NOON
    world.clock.now = NOON + 10
    await world.read()
    world.backends.version = "v2"
    world.backends.next_rotation = NOON + 4 * 3600
    world.clock.now += RECHECK
    assert await world.read() == "value-v2"
    key = cache_key(SecretRead("db"))
    assert world.reads.rotation is not None
    assert world.reads.rotation.lifetime_limit(key) == 4 * 3600 - 10 - RECHECK


async def test_describe_runs_beside_get_secret_value() -> None:
    # GetSecretValue waits until DescribeSecret has started: a sequential loader would hang.
    world = World()
    world.backends.prove_concurrent = True
    assert await world.read() == "value-v1"


async def test_a_pinned_version_makes_no_describe_call() -> None:
    world = World()
    await world.read(SecretRead("db", version_id="v1"))
    assert world.count("describe_secret") == 0
    await world.read(SecretRead("db", version_stage="AWSPREVIOUS"))
    assert world.count("describe_secret") == 1


async def test_switched_off_no_describe_call_and_the_ttl_rules() -> None:
    world = World(ttl=3000, SECRETCACHE_ROTATION_AWARE="false")
    world.backends.next_rotation = NOON
    assert world.reads.rotation is None
    await world.read()
    world.backends.version = "v2"
    world.clock.now = NOON + 10  # past the date, within the TTL
    assert await world.read() == "value-v1"
    assert world.count("describe_secret") == 0


@pytest.mark.parametrize(
    ("error", "describes"),
    [
        # A lasting refusal is not asked again while the version stays the same.
        (AccessDenied("secretsmanager: AccessDeniedException"), 1),
        # A passing one is tried again at the next load.
        (Throttled("secretsmanager: Throttling"), 2),
    ],
    ids=["access_denied", "throttled"],
)
async def test_describe_failing_keeps_the_ttl_and_warns_once(
    error: Exception, describes: int, capsys: pytest.CaptureFixture[str]
) -> None:
    log.set_level("info")
    world = World(ttl=300)
    world.backends.next_rotation = NOON
    world.backends.describe_error = error
    assert await world.read() == "value-v1"
    world.clock.now += 299  # the TTL, not the rotation date, ends the entry
    assert await world.read() == "value-v1"
    assert world.count("get_secret_value") == 1
    world.clock.now += 1
    assert await world.read() == "value-v1"
    assert world.count("describe_secret") == describes
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    warned = [x for x in lines if x.get("event") == "rotation.describe_failed"]
    assert len(warned) == 1
    assert warned[0]["secretId"] == "db"
    assert "value-v1" not in json.dumps(lines)
    counters = snapshot(world.cache)["services"]["secretsmanager"]
    assert counters["describeSecretCalls"] == counters["describeSecretFailures"] == describes
    assert counters["describeSecretSkipped"] == 2 - describes


async def test_a_slow_describe_does_not_hold_the_read_up() -> None:
    world = World(ttl=300)
    world.backends.next_rotation = NOON
    world.backends.describe_delay = 30.0
    assert world.reads.rotation is not None
    world.reads.rotation._grace = 0.05
    assert await asyncio.wait_for(world.read(), 5.0) == "value-v1"
    assert world.reads.rotation.lifetime_limit(cache_key(SecretRead("db"))) is None


async def test_a_limited_entry_is_not_refreshed_ahead() -> None:
    clock = Clock(NOON - 100)
    cache = TtlCache(
        max_entries=10,
        max_bytes=1 << 20,
        policies={"secretsmanager": Policy(300, jitter=0.0)},
        clock=clock,
    )
    cache.lifetime_limit = lambda key: 100.0
    key = CacheKey("secretsmanager", "db")
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return b"body"

    await cache.get(key, load)
    clock.now += 99  # inside the last tenth of a 100 s life and of the TTL
    assert cache.fresh(key, load) == b"body"
    await asyncio.sleep(0)
    assert loads == 1
    clock.now += 1
    assert cache.fresh(key, load) is None


async def test_a_batch_read_of_a_known_rotating_secret_is_limited_too() -> None:
    world = World(ttl=3000)
    world.backends.next_rotation = NOON
    await world.read()
    key = cache_key(SecretRead("db"))
    world.cache.put(key, b'{"SecretString": "from a batch"}')
    world.clock.now = NOON
    assert world.cache.fresh(key) is None


async def test_nothing_is_described_when_nothing_is_stored() -> None:
    uncached = World(ttl=0)
    await uncached.read()
    assert uncached.reads.rotation is None
    assert uncached.count("describe_secret") == 0
    held = World()
    held.cache.holding = True  # SnapStart's INIT: nothing is kept
    await held.read()
    assert held.count("describe_secret") == 0
    held.cache.holding = False
    await held.read()
    assert held.count("describe_secret") == 1


async def test_a_secret_without_rotation_is_described_again_only_when_its_version_changes() -> None:
    world = World(ttl=10)
    await world.read()  # DescribeSecret: no rotation
    for _ in range(5):
        world.clock.now += 10
        assert await world.read() == "value-v1"
    assert world.count("get_secret_value") == 6
    assert world.count("describe_secret") == 1
    world.backends.version = "v2"  # changed: rotation may have been turned on with it
    world.backends.next_rotation = NOON + DAY
    world.clock.now += 10
    assert await world.read() == "value-v2"
    assert world.count("describe_secret") == 2
    world.backends.version = "v3"  # rotation is on now: every load describes
    world.clock.now += 10
    await world.read()
    assert world.count("describe_secret") == 3


async def test_a_secret_without_rotation_is_described_again_after_an_hour() -> None:
    world = World(ttl=300)
    await world.read()
    world.clock.now += 3000
    await world.read()
    assert world.count("describe_secret") == 1
    world.clock.now += 700  # an hour after the first description
    await world.read()
    assert world.count("describe_secret") == 2


async def test_a_read_through_a_role_describes_through_the_same_role() -> None:
    world = World()
    role = "arn:aws:iam::123456789012:role/reader"
    await world.read(SecretRead("db", role_arn=role))
    assert sorted(world.backends.roles) == [("describe_secret", role), ("get_secret_value", role)]
