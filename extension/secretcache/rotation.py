"""Freshness after rotation (SECRETCACHE_ROTATION_AWARE=true): a rotating secret's cached value
ends at its NextRotationDate instead of living out its TTL.

For a read whose answer can change (AWSCURRENT or another stage, never a pinned versionId) the
loader runs DescribeSecret beside GetSecretValue, concurrently, and the cache entry's life becomes
the smaller of the TTL and what `lifetime_limit` says:

- rotation off, or no NextRotationDate: the TTL.
- before NextRotationDate: until NextRotationDate (no refresh-ahead before it: the value does not
  change before then, so a refresh would only fetch it again).
- the rotation window has begun (NextRotationDate passed) but the version served is still the one
  seen when it began: `recheck` seconds, so AWS is asked again at that bounded rate, not on every
  read, until the version changes or NextRotationDate moves forward. The window is the schedule's
  `Duration` (`"3h"`), else one hour for a schedule in hours and the rest of the UTC day for one
  in days (AWS's defaults); past its end the rotation evidently did not happen and the TTL applies.
- DescribeSecret and GetSecretValue disagree on the version holding the stage (a rotation ended
  between the two calls): `recheck` seconds.

The fleet: every sandbox's entry ends at the same NextRotationDate, and a first read after it
must go to AWS in every sandbox (serving past the date is what this switch rules out), so that
first read cannot be spread; ending entries at random instants before the date does not help
either, since what such a read stores still ends at the date (it only adds a read of the old
value). What would otherwise stay in step is what follows: every sandbox re-reads at the date,
then re-checks every `recheck` seconds together for as long as the rotation takes. Each re-check
interval is therefore cut at random by up to `RECHECK_JITTER_FRACTION` (drawn from `random`,
which is reseeded at a SnapStart restore), so the fleet's re-checks spread over a quarter of the
interval after the first and apart further with each; it only shortens lifetimes after the date
(or on a race), never lengthens one, and the date itself stays exact.

DescribeSecret failing (no `secretsmanager:DescribeSecret` in the role, throttling, a timeout) never
fails the read: the entry keeps the TTL and one warning per secret is logged, naming the secret and
the error type, never a value. DescribeSecret is waited for at most `DESCRIBE_GRACE_SECONDS` after
GetSecretValue has answered, so a slow one cannot hold a read up for its whole retry budget.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from .cache import CacheKey
from .errors import SecretcacheError
from .log import log
from .metrics import Metrics

#: How long a read waits for DescribeSecret once GetSecretValue has answered.
DESCRIBE_GRACE_SECONDS = 1.0
#: A rotation window never extends into the next UTC day, so it is never longer than this.
MAX_WINDOW_SECONDS = 86_400.0
#: AWS's default window for a schedule in hours.
HOURS_WINDOW_SECONDS = 3_600.0
#: How long a secret DescribeSecret found without rotation goes undescribed while its version
#: stays the same (rotation turned on later is seen at the latest after this).
QUIET_SECONDS = 3_600.0
#: Secrets remembered (schedules and the once-per-secret log), oldest dropped first.
MAX_RECORDS = 4_096
DEFAULT_STAGE = "AWSCURRENT"
#: Largest share by which one re-check interval (window, race) is cut at random, so a fleet that
#: re-read at NextRotationDate together does not keep re-checking together.
RECHECK_JITTER_FRACTION = 0.25

_DURATION = re.compile(r"\s*(\d{1,2})h\s*\Z")


class Describer(Protocol):
    async def describe_secret(
        self, secret_id: str, *, role_arn: str | None = None
    ) -> dict[str, Any]: ...


class Schedule(NamedTuple):
    """What DescribeSecret says about when a secret's value changes next."""

    enabled: bool
    #: Epoch seconds; None when rotation is off or no date is given.
    next_rotation: float | None = None
    #: Epoch seconds at which the rotation window that starts at `next_rotation` closes.
    window_end: float | None = None
    #: The version DescribeSecret says holds the stage read (VersionIdsToStages).
    stage_version: str | None = None


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def window_length(next_rotation: float, rules: dict[str, Any]) -> float:
    """Seconds the rotation window starting at `next_rotation` stays open (AWS's rules)."""
    duration = rules.get("Duration")
    match = _DURATION.match(duration) if isinstance(duration, str) else None
    if match is not None:
        return min(float(match.group(1)) * 3600.0, MAX_WINDOW_SECONDS)
    if _in_hours(str(rules.get("ScheduleExpression") or "")):
        return HOURS_WINDOW_SECONDS
    day_end = (next_rotation // 86_400.0 + 1.0) * 86_400.0
    return day_end - next_rotation


def _in_hours(expression: str) -> bool:
    """Whether a rate() or cron() schedule is in hours rather than days."""
    text = expression.strip().lower()
    if text.startswith("rate("):
        return "hour" in text
    if text.startswith("cron("):
        fields = text[5:].rstrip(")").split()
        return len(fields) >= 2 and not fields[1].isdigit()
    return False


def parse_schedule(described: dict[str, Any], stage: str = DEFAULT_STAGE) -> Schedule:
    """The rotation facts of a DescribeSecret result, for the stage a read asks for."""
    stage_version = None
    stages = described.get("VersionIdsToStages")
    if isinstance(stages, dict):
        for version, labels in stages.items():
            if isinstance(labels, list) and stage in labels:
                stage_version = str(version)
                break
    next_rotation = _epoch(described.get("NextRotationDate"))
    if described.get("RotationEnabled") is not True or next_rotation is None:
        return Schedule(False, stage_version=stage_version)
    rules = described.get("RotationRules")
    length = window_length(next_rotation, rules if isinstance(rules, dict) else {})
    return Schedule(True, next_rotation, next_rotation + length, stage_version)


class Decision(NamedTuple):
    """How long an entry may live (None: the TTL) and why, for logs and tests."""

    limit: float | None
    state: str  # plain | before | window | rotated | after-window | race


def decide(
    schedule: Schedule,
    served_version: str | None,
    window_version: str | None,
    now: float,
    recheck: float,
) -> Decision:
    """The lifetime rule, a pure function of what AWS said and the wall clock `now`.

    `window_version` is the version served when the current rotation window was first seen open
    (None before that); a different version now means the rotation has happened.
    """
    if (
        schedule.stage_version is not None
        and served_version is not None
        and schedule.stage_version != served_version
    ):
        return Decision(recheck, "race")
    if not schedule.enabled or schedule.next_rotation is None:
        return Decision(None, "plain")
    if now < schedule.next_rotation:
        return Decision(schedule.next_rotation - now, "before")
    if schedule.window_end is not None and now >= schedule.window_end:
        return Decision(None, "after-window")
    if window_version is not None and served_version != window_version:
        return Decision(None, "rotated")
    return Decision(recheck, "window")


class _Record:
    __slots__ = ("deadline", "quiet_until", "quiet_version", "window_version")

    def __init__(self) -> None:
        #: Wall-clock instant the entry stored from this secret's last load must end; None: TTL.
        self.deadline: float | None = None
        self.window_version: str | None = None
        #: DescribeSecret said rotation is off (or refused for good, e.g. AccessDenied) while this
        #: version was served: not asked again until the version changes or `quiet_until`.
        self.quiet_version: str | None = None
        self.quiet_until = 0.0


class RotationWatch:
    """Runs DescribeSecret beside GetSecretValue and tells the cache when an entry must end."""

    def __init__(
        self,
        backends: Describer,
        metrics: Metrics,
        *,
        recheck: float,
        wall_clock: Callable[[], float] = time.time,
        grace: float = DESCRIBE_GRACE_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._backends = backends
        self._rand = rand
        self._metrics = metrics
        self._recheck = recheck
        self._wall = wall_clock
        self._grace = grace
        self._records: OrderedDict[CacheKey, _Record] = OrderedDict()
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()

    def lifetime_limit(self, key: CacheKey) -> float | None:
        """The cache's hook: seconds the entry being stored under `key` may live, or None."""
        record = self._records.get(key)
        if record is None or record.deadline is None:
            return None
        return max(0.0, record.deadline - self._wall())

    def watch(
        self,
        key: CacheKey,
        secret_id: str,
        stage: str | None,
        get_value: Callable[[], Awaitable[dict[str, Any]]],
        role_arn: str | None = None,
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """`get_value` with DescribeSecret run beside it (through the same role, when the read
        names one); the result decides `key`'s lifetime."""

        async def fetch() -> dict[str, Any]:
            record = self._records.get(key)
            if record is not None and record.quiet_version and self._wall() < record.quiet_until:
                result = await get_value()
                if result.get("VersionId") == record.quiet_version:
                    self._metrics.rotation.describes_skipped += 1
                    return result  # unchanged, without rotation: the TTL, no DescribeSecret
                describe = asyncio.ensure_future(self._describe(secret_id, role_arn))
            else:
                describe = asyncio.ensure_future(self._describe(secret_id, role_arn))
                try:
                    result = await get_value()
                except BaseException:
                    describe.cancel()
                    raise
            try:
                described = await asyncio.wait_for(describe, self._grace)
            except asyncio.TimeoutError:
                self._metrics.rotation.describe_failures += 1
                self._warn_once(secret_id, "rotation.describe_failed", "DescribeSecretTimeout")
                described = None
            self._record(key, secret_id, stage or DEFAULT_STAGE, described, result)
            return result

        return fetch

    async def _describe(self, secret_id: str, role_arn: str | None) -> dict[str, Any] | None:
        stats = self._metrics.rotation
        stats.describe_calls += 1
        try:
            if role_arn:
                return await self._backends.describe_secret(secret_id, role_arn=role_arn)
            return await self._backends.describe_secret(secret_id)
        except Exception as exc:  # never fails the read: the entry keeps its TTL
            stats.describe_failures += 1
            error_type = exc.error_type if isinstance(exc, SecretcacheError) else "InternalError"
            self._warn_once(secret_id, "rotation.describe_failed", error_type)
            # A lasting refusal (AccessDenied) is taken as "no rotation known": not asked again
            # while the version stays the same; a passing one (throttling) is tried next time.
            transient = isinstance(exc, SecretcacheError) and exc.transient
            return None if transient else {}

    def _record(
        self,
        key: CacheKey,
        secret_id: str,
        stage: str,
        described: dict[str, Any] | None,
        result: dict[str, Any],
    ) -> None:
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)
        record.quiet_version = None
        if described is None:
            record.deadline = None
            return
        schedule = parse_schedule(described, stage)
        served = result.get("VersionId")
        served_version = str(served) if served else None
        now = self._wall()
        decision = decide(schedule, served_version, record.window_version, now, self._recheck)
        if decision.state == "plain":
            record.quiet_version = served_version
            record.quiet_until = now + QUIET_SECONDS
        if decision.state == "window" and record.window_version is None:
            record.window_version = served_version
        elif decision.state in ("before", "plain"):
            record.window_version = None
        if decision.state == "after-window":
            self._warn_once(secret_id, "rotation.window_passed", "NoNewVersion")
        limit = decision.limit
        if limit is not None:
            self._metrics.rotation.limited += 1
            if decision.state in ("window", "race"):
                limit *= 1.0 - RECHECK_JITTER_FRACTION * self._rand()
        record.deadline = None if limit is None else now + limit

    def _warn_once(self, secret_id: str, event: str, error_type: str) -> None:
        """One warning per secret and event: names and error types only, never a value."""
        mark = (secret_id, event)
        if mark in self._logged:
            return
        self._logged[mark] = None
        while len(self._logged) > MAX_RECORDS:
            self._logged.popitem(last=False)
        log.warn(event, secretId=secret_id, errorType=error_type)
