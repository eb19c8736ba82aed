"""Async TTL cache: keys, LRU and byte bounds, single-flight loads, stale-on-error, refresh-ahead.

The cache stores response-body bytes, so a hit is a dict lookup. It knows nothing of HTTP or AWS:
loaders are coroutines returning bytes or raising `SecretcacheError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple

from .errors import NotFound, SecretcacheError, Throttled
from .metrics import Metrics
from .service import Service
from .throttle import ThrottleMemory, upstream_attempts

Loader = Callable[[], Awaitable[bytes]]
#: Fixed per-entry overhead counted against the byte bound (key, entry object, dict slot).
ENTRY_OVERHEAD_BYTES = 256
#: Share of the TTL at the end of an entry's life in which a hit starts a background refresh.
REFRESH_AHEAD_FRACTION = 0.1
#: Largest share by which a stored entry's lifetime is shortened at random, so sandboxes started
#: together do not all go back to AWS in the same second.
TTL_JITTER_FRACTION = 0.1
#: A wall-clock step this far ahead of the monotonic clock means the sandbox was restored from a
#: snapshot (or stood still with its monotonic clock stopped): far above NTP's slewing and the
#: scheduling noise between the two clock reads, far below the shortest snapshot-to-restore time.
RESTORE_JUMP_SECONDS = 1.0


#: The reason logged when an expired value is served without asking AWS (it throttled recently).
_RECENTLY_THROTTLED = Throttled("served without asking AWS: it throttled recently")


def _copy_error(error: SecretcacheError) -> SecretcacheError:
    """A fresh instance to raise: re-raising one stored exception object appends every raise's
    frames to its traceback, so a cached not-found would keep each request's frames alive."""
    return copy.copy(error).with_traceback(None)


class Policy(NamedTuple):
    """How one service's answers are kept; fixed at start (the cache holds one per service)."""

    #: Seconds an answer is fresh; 0 = not cached.
    ttl: float
    #: Seconds a not-found answer is remembered; 0 = never.
    not_found_ttl: float = 0.0
    #: Seconds past its TTL an entry may be served when a refresh fails transiently; 0 = never.
    max_stale: float = 0.0
    #: Largest share of the TTL cut at random per entry, so sandboxes do not refresh in step.
    jitter: float = TTL_JITTER_FRACTION
    #: Share of the TTL at the end of an entry's life in which a hit refreshes in the background.
    refresh_ahead: float = REFRESH_AHEAD_FRACTION
    #: Longest back-off after throttled loads of a key (`throttle`); 0 = none, every read of an
    #: expired key waits through the backends' retries as it did before.
    throttle_backoff: float = 0.0


class CacheKey(NamedTuple):
    """Two requests AWS would answer differently never share a key."""

    service: str
    identifier: str
    selector: str = ""
    decrypt: bool = False
    #: The role the read assumed ("" = the function's own): each role has entries of its own.
    role: str = ""


class Lookup(NamedTuple):
    """The body served and how it was obtained: hit, miss, coalesced, refresh, stale or bypass."""

    body: bytes
    outcome: str
    age: float = 0.0


class SandboxClock:
    """Monotonic seconds that also move forward with wall-clock jumps.

    A frozen or snapshot-restored sandbox can resume with a monotonic clock that did not see the
    time it was frozen; the wall clock is resynchronised. Taking the larger forward step of the two
    means an entry that expired while frozen is never served as fresh after the thaw.

    A wall-clock step more than `jump_threshold` seconds ahead of the monotonic one is how a
    SnapStart restore shows on the request path: `on_jump(seconds, now)` is told of each such
    jump, after the clock has taken the step (so it may read the clock again); the cache decides
    whether it is the restore. The check costs the hit path one comparison: both clocks are read
    anyway.
    """

    def __init__(
        self,
        on_jump: Callable[[float, float], None] | None = None,
        jump_threshold: float = RESTORE_JUMP_SECONDS,
    ) -> None:
        self._mono = time.monotonic()
        self._wall = time.time()
        self._now = self._mono
        self.on_jump = on_jump
        self.jump_threshold = jump_threshold

    def __call__(self) -> float:
        mono, wall = time.monotonic(), time.time()
        step = mono - self._mono
        wall_step = wall - self._wall
        self._mono, self._wall = mono, wall
        if wall_step > step:
            jump = wall_step - step
            step = wall_step
            self._now += step
            if jump > self.jump_threshold and self.on_jump is not None:
                self.on_jump(jump, self._now)
            return self._now
        self._now += step
        return self._now


class _Entry:
    __slots__ = ("body", "error", "expires_at", "refresh_from", "size", "stored_at")

    def __init__(
        self,
        body: bytes,
        error: SecretcacheError | None,
        stored_at: float,
        lifetime: float,
        refresh_window: float,
    ) -> None:
        self.body = body
        self.error = error
        self.stored_at = stored_at
        self.expires_at = stored_at + lifetime  # the TTL shortened by jitter
        self.refresh_from = self.expires_at - refresh_window
        self.size = len(body) + ENTRY_OVERHEAD_BYTES


class TtlCache:
    """Bounded in-memory cache with one `Policy` per service and one upstream call per key at a
    time. A key whose service has no policy is not cached."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        policies: Mapping[Service, Policy] | Mapping[str, Policy],
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] = random.random,
        on_stale: Callable[[CacheKey, SecretcacheError, float], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.policies: dict[str, Policy] = {str(k): v for k, v in policies.items()}
        self.clock: Callable[[], float] = clock or SandboxClock(on_jump=self._clock_jumped)
        #: SnapStart, until a restore has been seen: the next restore-sized wall-clock jump is
        #: the restore (a process is restored at most once; later jumps are ordinary thaws, which
        #: the clock's step already ages entries by).
        self.watch_restore = False
        #: Told (seconds) when that jump is seen, after the cache has expired what it held (the
        #: lifecycle does the rest of a restore).
        self.on_clock_jump: Callable[[float], None] | None = None
        self._rand = rand
        self._on_stale = on_stale
        #: Throttled loads: per service (serve stale first) and per key (back off).
        self.throttle = ThrottleMemory(rand)
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[bytes]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.bytes = 0
        #: While True nothing is stored and every read goes upstream (SnapStart's INIT, so that
        #: nothing fetched before the snapshot is kept in it).
        self.holding = False
        #: Where hits, misses, refreshes, stale answers and coalesced waiters are counted.
        self.metrics = metrics if metrics is not None else Metrics()
        #: Asked at each store of a value: seconds the entry may live at most, or None for the
        #: policy's TTL (`rotation.RotationWatch` ends a secret's entry at its next rotation).
        self.lifetime_limit: Callable[[CacheKey], float | None] | None = None

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0 and not self.holding

    def __len__(self) -> int:
        return len(self._entries)

    def entries_by_service(self) -> dict[str, tuple[int, int]]:
        """Entry count and bytes per service."""
        out: dict[str, tuple[int, int]] = {}
        for key, entry in self._entries.items():
            count, size = out.get(key.service, (0, 0))
            out[key.service] = (count + 1, size + entry.size)
        return out

    def fresh(self, key: CacheKey, load: Loader | None = None) -> bytes | None:
        """The hot path: the stored body if fresh, else None. Counts the hit.

        With `load`, a hit in the last tenth of the entry's TTL starts one background refresh,
        so steady traffic never waits on AWS.
        """
        entry = self._entries.get(key)
        if entry is None or entry.error is not None:
            return None
        now = self.clock()
        if now >= entry.expires_at:
            return None
        self._entries.move_to_end(key)
        self.metrics.service(key.service).hits += 1
        if (
            load is not None
            and now >= entry.refresh_from
            and key not in self._inflight
            and not self.throttle.backoff(key, now)
        ):
            self._refresh_in_background(key, load)
        return entry.body

    async def get(
        self,
        key: CacheKey,
        load: Loader,
        *,
        refresh: bool = False,
    ) -> Lookup:
        """Serve `key` from the cache or load it (once, however many callers wait)."""
        stats = self.metrics.service(key.service)
        if not self.enabled or self._ttl(key) <= 0:
            stats.misses += 1
            return Lookup(await load(), "bypass")
        entry = self._entries.get(key)
        now = self.clock()
        if entry is not None and not refresh and now < entry.expires_at:
            self._entries.move_to_end(key)
            if entry.error is not None:
                stats.hits += 1
                raise _copy_error(entry.error)
            stats.hits += 1
            return Lookup(entry.body, "hit", now - entry.stored_at)
        if refresh:
            stats.refreshes += 1
        else:
            stats.misses += 1
        policy = self.policies[key.service]
        attempts = None
        if policy.throttle_backoff > 0:
            backing_off = self.throttle.backoff(key, now) > 0
            throttled = self._while_throttled(key, load, now, refresh, backing_off)
            if throttled is not None:
                return throttled
            if backing_off:  # no value to serve: one attempt, the back-off is the retry
                attempts = 1
        try:
            body, coalesced = await self._single_flight(key, load, refresh, attempts)
        except SecretcacheError as exc:
            stale = self.stale([key], exc)
            if stale is not None:
                return stale[0]
            wait = self.throttle.backoff(key, self.clock())
            if isinstance(exc, Throttled) and wait > 0:  # Retry-After: the key's back-off
                throttled_error = _copy_error(exc)
                throttled_error.retry_after = wait
                raise throttled_error from None
            raise
        outcome = "coalesced" if coalesced else ("refresh" if refresh else "miss")
        return Lookup(body, outcome, 0.0)

    def _while_throttled(
        self, key: CacheKey, load: Loader, now: float, refresh: bool, backing_off: bool
    ) -> Lookup | None:
        """A read of an expired (or missing) entry while AWS has been throttling: the stale value
        at once, with one background refresh unless the key is backing off; None when there is
        no value to serve (a forced refresh has none) and the read loads."""
        if refresh or not (backing_off or self.throttle.service_throttled(key.service, now)):
            return None
        stale = self.stale([key], _RECENTLY_THROTTLED)
        if stale is None:
            return None
        if not backing_off and key not in self._inflight:
            self._refresh_in_background(key, load)
        return stale[0]

    def stale(self, keys: Sequence[CacheKey], exc: SecretcacheError) -> list[Lookup] | None:
        """The last good bodies of `keys`, whose load failed with `exc`, if the stale policy
        allows serving every one of them (a transient error, each within max_stale past its
        TTL); else None and nothing is counted. A batch read asks for all the items of a chunk
        whose call failed: its answer is either whole or an error."""
        entries = [self._stale_for(key, exc) for key in keys]
        if not entries or any(entry is None for entry in entries):
            return None
        now = self.clock()
        lookups = []
        for key, entry in zip(keys, entries, strict=True):
            assert entry is not None
            self.metrics.service(key.service).stale += 1
            age = now - entry.stored_at
            if self._on_stale is not None:
                self._on_stale(key, exc, age)
            lookups.append(Lookup(entry.body, "stale", age))
        return lookups

    def refresh_due(self, key: CacheKey) -> bool:
        """Whether `key` is fresh but in its refresh-ahead window with no load under way (a batch
        read refreshes such items together, in one background batch call)."""
        entry = self._entries.get(key)
        if entry is None or entry.error is not None or key in self._inflight:
            return False
        now = self.clock()
        return entry.refresh_from <= now < entry.expires_at

    def _stale_for(self, key: CacheKey, exc: SecretcacheError) -> _Entry | None:
        policy = self.policies.get(key.service)
        if not exc.transient or policy is None or policy.max_stale <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.error is not None:
            return None
        if self.clock() - entry.expires_at > policy.max_stale:
            return None
        return entry

    async def _single_flight(
        self, key: CacheKey, load: Loader, refresh: bool, attempts: int | None = None
    ) -> tuple[bytes, bool]:
        """Join the load in flight for `key`, or start one (making at most `attempts`).

        A forced refresh never joins: the load in flight may have fetched before a rotation. It
        starts its own, which later callers join and which alone may store its result.
        """
        pending = self._inflight.get(key)
        if pending is not None and not refresh:
            self.metrics.service(key.service).coalesced += 1
            return await asyncio.shield(pending), True
        future = self._start_load(key, load, attempts)
        return await asyncio.shield(future), False

    def _start_load(
        self, key: CacheKey, load: Loader, attempts: int | None = None
    ) -> asyncio.Future[bytes]:
        """Start loading `key`; `attempts` limits the upstream attempts the load may make."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        # Nobody may be left awaiting (all callers cancelled): mark the exception as seen.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[key] = future
        coroutine = self._run_load(key, load, future)
        if attempts is None:
            task = loop.create_task(coroutine)
        else:  # a task copies the context it is created in: the limit holds for this load only
            context = contextvars.copy_context()
            context.run(upstream_attempts.set, attempts)
            task = context.run(loop.create_task, coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return future

    async def _run_load(
        self,
        key: CacheKey,
        load: Loader,
        future: asyncio.Future[bytes],
    ) -> None:
        try:
            body = await load()
        except SecretcacheError as exc:
            now = self.clock()  # a restore first seen by this read supersedes the load
            latest = self._inflight.get(key) is future
            if latest and isinstance(exc, NotFound):
                self._store(key, b"", _copy_error(exc))
            if isinstance(exc, Throttled):
                policy = self.policies.get(key.service)
                if policy is not None:
                    self.throttle.throttled(key, key.service, now, policy.throttle_backoff)
            else:
                self.throttle.loaded(key)
            if not future.done():
                future.set_exception(exc)
        except asyncio.CancelledError:
            if not future.done():
                future.cancel()
            raise
        except Exception as exc:  # a bug in a loader must not leave waiters hanging
            if not future.done():
                future.set_exception(exc)
        else:
            self.clock()  # a restore first seen by this read supersedes the load (expire_all)
            self.throttle.loaded(key)
            if self._inflight.get(key) is future:  # a newer (forced) load supersedes this one
                self._store(key, body, None)
            if not future.done():
                future.set_result(body)
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    def _clock_jumped(self, seconds: float, now: float) -> None:
        if not self.watch_restore:
            return
        self.watch_restore = False
        self.expire_all(now)
        if self.on_clock_jump is not None:
            self.on_clock_jump(seconds)

    def expire_all(self, now: float | None = None) -> int:
        """After a restore: nothing held is fresh any more; returns how many entries were held.

        Entries stay (as expired) for stale-on-error within their policy's `max_stale`. Loads in
        flight started before the snapshot, on connections that are gone: later callers start
        their own, and the old ones may no longer store what they fetched.
        """
        if now is None:
            now = self.clock()
        for entry in self._entries.values():
            if entry.expires_at > now:
                entry.expires_at = now
            if entry.refresh_from > now:
                entry.refresh_from = now
        self._inflight.clear()
        return len(self._entries)

    def put(self, key: CacheKey, body: bytes) -> None:
        """Store a body loaded elsewhere (a batch read fills single-item entries)."""
        if self.enabled:
            self._store(key, body, None)

    def _refresh_in_background(self, key: CacheKey, load: Loader) -> None:
        """One load nobody waits for. While the service is being throttled it makes a single
        attempt: the key's back-off between loads is its retry."""
        self.metrics.service(key.service).refreshes += 1
        throttled = self.throttle.service_throttled(key.service, self.clock())
        self._start_load(key, load, 1 if throttled else None)

    def _ttl(self, key: CacheKey) -> float:
        policy = self.policies.get(key.service)
        return 0.0 if policy is None else policy.ttl

    def _store(self, key: CacheKey, body: bytes, error: SecretcacheError | None) -> None:
        """Store under the key's policy: its TTL (not-found TTL for an error), jitter applied."""
        policy = self.policies.get(key.service)
        if policy is None:
            return
        ttl = policy.not_found_ttl if error is not None else policy.ttl
        if ttl <= 0:
            return
        lifetime = ttl * (1.0 - policy.jitter * self._rand())
        refresh_window = ttl * policy.refresh_ahead
        limit = (
            None if error is not None or self.lifetime_limit is None else self.lifetime_limit(key)
        )
        if limit is not None and limit < lifetime:
            # No refresh-ahead before a limit: the value cannot change before it, so a refresh
            # would fetch the same value, be limited to the same instant, and repeat.
            lifetime, refresh_window = max(0.0, limit), 0.0
        entry = _Entry(body, error, self.clock(), lifetime, refresh_window)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        if entry.size > self.max_bytes:
            return
        self._entries[key] = entry
        self.bytes += entry.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    async def close(self) -> None:
        """Cancel background loads (at shutdown)."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
