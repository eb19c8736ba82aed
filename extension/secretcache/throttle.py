"""What the extension remembers of AWS throttling: per service, and a back-off per key.

AWS throttles per account, region and API (one token bucket shared by every caller), so one
key's throttled load says the next key's load will likely be throttled too: the memory that
decides "serve the stale value first, refresh in the background" is per service. The back-off
that decides "do not call AWS again for this key yet" is per key: a key whose own load was just
refused waits, while a key never tried may still get through (and a reader with no value to
fall back on is refused at once only for the key that was refused).

Pure bookkeeping (the caller passes the time); `TtlCache` asks it and `AwsBackends.call` reads
`upstream_attempts` (how many attempts a load may make).
"""

from __future__ import annotations

import contextvars
import math
import random
from collections.abc import Callable, Hashable

#: First back-off after a key's throttled load; doubles with each consecutive throttled load.
BACKOFF_BASE_SECONDS = 1.0
#: How long a service counts as throttled after its last throttled load.
SERVICE_MEMORY_SECONDS = 10.0
#: Doublings counted at most (far past any cap: 2 ** 63 s).
_MAX_DOUBLINGS = 64
#: Most keys remembered at once (a key's record goes when its back-off ends or it loads).
MAX_KEYS = 4096

#: Attempts a load may make (None: the backends' own MAX_ATTEMPTS). A background refresh of a
#: throttled service makes one: the back-off between loads is its retry, so 10,000 sandboxes do
#: not each send five attempts into a bucket that is already empty.
upstream_attempts: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "upstream_attempts", default=None
)


class _KeyBackoff:
    __slots__ = ("failures", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.until = 0.0


class ThrottleMemory:
    """Recent throttling per service and a bounded, jittered back-off per key. Times are the
    cache clock's (the caller passes `now`)."""

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self._rand = rand
        self._keys: dict[Hashable, _KeyBackoff] = {}
        self._service_until: dict[str, float] = {}

    def throttled(self, key: Hashable, service: str, now: float, backoff_max: float) -> float:
        """Record a throttled load of `key`; returns the seconds its back-off lasts.

        The k-th throttled load in a row backs off min(backoff_max, base x 2^(k-1)) x
        (0.5 + 0.5 U): at least half the step, so a back-off is never near zero, and spread so
        that keys refused together do not come back together.
        """
        if backoff_max <= 0:
            return 0.0
        record = self._keys.pop(key, None) or _KeyBackoff()
        record.failures = min(record.failures + 1, _MAX_DOUBLINGS)  # 2.0 ** 1024 overflows
        step = min(backoff_max, BACKOFF_BASE_SECONDS * 2.0 ** (record.failures - 1))
        seconds = step * (0.5 + 0.5 * self._rand())
        record.until = now + seconds
        self._keys[key] = record
        if len(self._keys) > MAX_KEYS:
            self._keys.pop(next(iter(self._keys)))
        self._service_until[service] = now + SERVICE_MEMORY_SECONDS
        return seconds

    def loaded(self, key: Hashable) -> None:
        """A load of `key` got an answer (a value or a final error other than throttling)."""
        if self._keys:
            self._keys.pop(key, None)

    def backoff(self, key: Hashable, now: float) -> float:
        """Seconds left in `key`'s back-off (0 when none)."""
        record = self._keys.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.until - now)

    def service_throttled(self, service: str, now: float) -> bool:
        """Whether a load of `service` was throttled within the last SERVICE_MEMORY_SECONDS."""
        until = self._service_until.get(service)
        return until is not None and now < until


def retry_after(seconds: float) -> str:
    """The Retry-After header value for a back-off: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
