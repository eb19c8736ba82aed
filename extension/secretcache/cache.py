"""Async TTL cache: keys, LRU and byte bounds, single-flight loads, stale-on-error, refresh-ahead.

The cache stores response-body bytes, so a hit is a dict lookup. It knows nothing of HTTP or AWS:
loaders are coroutines returning bytes or raising `SecretcacheError`.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from .errors import NotFound, SecretcacheError

Loader = Callable[[], Awaitable[bytes]]
#: Fixed per-entry overhead counted against the byte bound (key, entry object, dict slot).
ENTRY_OVERHEAD_BYTES = 256
#: Share of the TTL at the end of an entry's life in which a hit starts a background refresh.
REFRESH_AHEAD_FRACTION = 0.1
#: Largest share by which a stored entry's lifetime is shortened at random, so sandboxes started
#: together do not all go back to AWS in the same second.
TTL_JITTER_FRACTION = 0.1


def _copy_error(error: SecretcacheError) -> SecretcacheError:
    """A fresh instance to raise: re-raising one stored exception object appends every raise's
    frames to its traceback, so a cached not-found would keep each request's frames alive."""
    return copy.copy(error).with_traceback(None)


class CacheKey(NamedTuple):
    """Two requests AWS would answer differently never share a key."""

    service: str
    identifier: str
    selector: str = ""
    decrypt: bool = False


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
    """

    def __init__(self) -> None:
        self._mono = time.monotonic()
        self._wall = time.time()
        self._now = self._mono

    def __call__(self) -> float:
        mono, wall = time.monotonic(), time.time()
        step = mono - self._mono
        wall_step = wall - self._wall
        if wall_step > step:
            step = wall_step
        self._mono, self._wall = mono, wall
        self._now += step
        return self._now


class ServiceStats:
    """Counters for one service; read by /metrics."""

    __slots__ = (
        "coalesced",
        "hits",
        "latencies",
        "misses",
        "refreshes",
        "stale",
        "upstream_calls",
        "upstream_errors",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.refreshes = 0
        self.coalesced = 0
        self.upstream_calls = 0
        self.upstream_errors: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=2048)

    def as_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

        return {
            "hits": self.hits,
            "misses": self.misses,
            "staleServed": self.stale,
            "refreshes": self.refreshes,
            "coalescedWaiters": self.coalesced,
            "upstreamCalls": self.upstream_calls,
            "upstreamErrors": dict(self.upstream_errors),
            "upstreamLatencyMs": {"p50": pct(0.5), "p99": pct(0.99)},
        }


class _Entry:
    __slots__ = ("body", "error", "expires_at", "size", "stored_at", "ttl")

    def __init__(
        self,
        body: bytes,
        error: SecretcacheError | None,
        stored_at: float,
        ttl: float,
        lifetime: float,
    ) -> None:
        self.body = body
        self.error = error
        self.stored_at = stored_at
        self.ttl = ttl  # as configured: what a refresh stores again
        self.expires_at = stored_at + lifetime  # the TTL shortened by jitter
        self.size = len(body) + ENTRY_OVERHEAD_BYTES


class TtlCache:
    """Bounded in-memory cache with per-call TTLs and one upstream call per key at a time."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        max_stale: float = 0.0,
        clock: Callable[[], float] | None = None,
        jitter: float = TTL_JITTER_FRACTION,
        rand: Callable[[], float] = random.random,
        on_stale: Callable[[CacheKey, SecretcacheError, float], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_stale = max_stale
        self.clock: Callable[[], float] = clock or SandboxClock()
        self.jitter = jitter
        self._rand = rand
        self._on_stale = on_stale
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[bytes]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.bytes = 0
        self.stats: dict[str, ServiceStats] = {}

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def service_stats(self, service: str) -> ServiceStats:
        stats = self.stats.get(service)
        if stats is None:
            stats = self.stats[service] = ServiceStats()
        return stats

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
        self.service_stats(key.service).hits += 1
        if (
            load is not None
            and entry.expires_at - now <= entry.ttl * REFRESH_AHEAD_FRACTION
            and key not in self._inflight
        ):
            self._refresh_in_background(key, load, entry.ttl)
        return entry.body

    async def get(
        self,
        key: CacheKey,
        load: Loader,
        ttl: float,
        *,
        refresh: bool = False,
        not_found_ttl: float = 0.0,
    ) -> Lookup:
        """Serve `key` from the cache or load it (once, however many callers wait)."""
        stats = self.service_stats(key.service)
        if not self.enabled or ttl <= 0:
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
        try:
            body, coalesced = await self._single_flight(key, load, ttl, not_found_ttl)
        except SecretcacheError as exc:
            stale = self._stale_for(key, exc)
            if stale is None:
                raise
            stats.stale += 1
            age = self.clock() - stale.stored_at
            if self._on_stale is not None:
                self._on_stale(key, exc, age)
            return Lookup(stale.body, "stale", age)
        outcome = "coalesced" if coalesced else ("refresh" if refresh else "miss")
        return Lookup(body, outcome, 0.0)

    def _stale_for(self, key: CacheKey, exc: SecretcacheError) -> _Entry | None:
        if not exc.transient or self.max_stale <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.error is not None:
            return None
        if self.clock() - entry.expires_at > self.max_stale:
            return None
        return entry

    def record_upstream(self, service: str, seconds: float, error_type: str | None) -> None:
        """Count one AWS API call (the backends report each, pages and retries included)."""
        stats = self.service_stats(service)
        stats.upstream_calls += 1
        if error_type is None:
            stats.latencies.append(seconds)
        else:
            stats.upstream_errors[error_type] = stats.upstream_errors.get(error_type, 0) + 1

    async def _single_flight(
        self, key: CacheKey, load: Loader, ttl: float, not_found_ttl: float
    ) -> tuple[bytes, bool]:
        pending = self._inflight.get(key)
        if pending is not None:
            self.service_stats(key.service).coalesced += 1
            return await asyncio.shield(pending), True
        future = self._start_load(key, load, ttl, not_found_ttl)
        return await asyncio.shield(future), False

    def _start_load(
        self, key: CacheKey, load: Loader, ttl: float, not_found_ttl: float = 0.0
    ) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        # Nobody may be left awaiting (all callers cancelled): mark the exception as seen.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[key] = future
        task = loop.create_task(self._run_load(key, load, ttl, not_found_ttl, future))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return future

    async def _run_load(
        self,
        key: CacheKey,
        load: Loader,
        ttl: float,
        not_found_ttl: float,
        future: asyncio.Future[bytes],
    ) -> None:
        try:
            body = await load()
        except SecretcacheError as exc:
            if isinstance(exc, NotFound) and not_found_ttl > 0:
                self._store(key, b"", _copy_error(exc), not_found_ttl)
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
            self._store(key, body, None, ttl)
            if not future.done():
                future.set_result(body)
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    def put(self, key: CacheKey, body: bytes, ttl: float) -> None:
        """Store a body loaded elsewhere (a batch read fills single-item entries)."""
        if self.enabled and ttl > 0:
            self._store(key, body, None, ttl)

    def _refresh_in_background(self, key: CacheKey, load: Loader, ttl: float) -> None:
        self.service_stats(key.service).refreshes += 1
        self._start_load(key, load, ttl)

    def _store(
        self, key: CacheKey, body: bytes, error: SecretcacheError | None, ttl: float
    ) -> None:
        lifetime = ttl * (1.0 - self.jitter * self._rand())
        entry = _Entry(body, error, self.clock(), ttl, lifetime)
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
