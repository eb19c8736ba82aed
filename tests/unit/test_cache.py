"""TtlCache with a fake clock: expiry, bounds, single-flight, stale policy, refresh-ahead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from secretcache.cache import ENTRY_OVERHEAD_BYTES, CacheKey, Policy, SandboxClock, TtlCache
from secretcache.errors import (
    AccessDenied,
    BadRequest,
    NotFound,
    SecretcacheError,
    Throttled,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
)

KEY = CacheKey("secretsmanager", "db-password")
OTHER = CacheKey("secretsmanager", "api-key")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Loader:
    """Counts calls; returns successive bodies or raises queued errors."""

    def __init__(self, *results: bytes | BaseException) -> None:
        self.results = list(results) or [b"v1"]
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        result = self.results[min(self.calls - 1, len(self.results) - 1)]
        if isinstance(result, BaseException):
            raise result
        return result


class GatedLoader:
    """A load that waits until released, so tests control concurrency."""

    def __init__(self, body: bytes = b"gated") -> None:
        self.body = body
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.error: BaseException | None = None

    async def __call__(self) -> bytes:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.body


def make_cache(
    clock: FakeClock,
    *,
    max_entries: int = 100,
    max_bytes: int = 1 << 20,
    ttl: float = 60,
    not_found_ttl: float = 0.0,
    max_stale: float = 0.0,
    rand: Callable[[], float] = lambda: 0.0,
    jitter: float = 0.1,
    on_stale: Callable[[CacheKey, SecretcacheError, float], None] | None = None,
) -> TtlCache:
    return TtlCache(
        max_entries=max_entries,
        max_bytes=max_bytes,
        policies=policies(ttl, not_found_ttl=not_found_ttl, max_stale=max_stale, jitter=jitter),
        clock=clock,
        rand=rand,
        on_stale=on_stale,
    )


def policies(ttl: float, **options: float) -> dict[str, Policy]:
    """The same policy for every service (these tests are about the mechanism, not services)."""
    return {service: Policy(ttl, **options) for service in ("secretsmanager", "ssm", "kms")}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# Expiry ------------------------------------------------------------------------------------


async def test_miss_then_hit_within_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10)
    load = Loader(b"v1", b"v2")
    first = await cache.get(KEY, load)
    assert (first.body, first.outcome) == (b"v1", "miss")
    clock.advance(4)
    second = await cache.get(KEY, load)
    assert (second.body, second.outcome) == (b"v1", "hit")
    assert second.age == pytest.approx(4)
    assert cache.fresh(KEY) == b"v1"
    assert load.calls == 1


async def test_entry_expires_exactly_at_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10)
    load = Loader(b"v1", b"v2")
    await cache.get(KEY, load)
    clock.advance(9.999)
    assert cache.fresh(KEY) == b"v1"
    assert (await cache.get(KEY, load)).body == b"v1"
    clock.advance(0.001)  # exactly 10 s after the store
    assert cache.fresh(KEY) is None
    refreshed = await cache.get(KEY, load)
    assert (refreshed.body, refreshed.outcome) == (b"v2", "miss")
    assert load.calls == 2


@pytest.mark.parametrize("rand_value", [0.0, 0.5, 0.999999])
async def test_jitter_only_shortens_the_ttl(rand_value: float) -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=100, rand=lambda: rand_value, jitter=0.1)
    await cache.get(KEY, Loader(b"v1"))
    # never served at or past the TTL ...
    clock.advance(100)
    assert cache.fresh(KEY) is None
    # ... and always served for at least TTL * (1 - jitter)
    clock.now = 1000.0 + 100 * (1 - 0.1 * rand_value) - 0.01
    assert cache.fresh(KEY) == b"v1"


async def test_jitter_bounds_with_default_random() -> None:
    clock = FakeClock()
    # real random jitter
    cache = TtlCache(max_entries=100, max_bytes=1 << 20, policies=policies(100), clock=clock)
    for index in range(50):
        await cache.get(CacheKey("ssm", f"p{index}"), Loader(b"x"))
    clock.advance(90 - 1e-6)
    assert all(cache.fresh(CacheKey("ssm", f"p{i}")) == b"x" for i in range(50))
    clock.advance(10 + 1e-6)
    assert all(cache.fresh(CacheKey("ssm", f"p{i}")) is None for i in range(50))


# Bounds ------------------------------------------------------------------------------------


async def test_lru_bound_evicts_least_recently_used() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60, max_entries=2)
    a, b, c = (CacheKey("ssm", n) for n in "abc")
    loads = {k: Loader(k.identifier.encode()) for k in (a, b, c)}
    await cache.get(a, loads[a])
    await cache.get(b, loads[b])
    assert (await cache.get(a, loads[a])).outcome == "hit"  # a is now most recent
    await cache.get(c, loads[c])  # evicts b
    assert len(cache) == 2
    assert cache.fresh(b) is None
    assert cache.fresh(a) == b"a"
    assert cache.fresh(c) == b"c"
    assert (await cache.get(b, loads[b])).outcome == "miss"
    assert loads[b].calls == 2
    assert loads[a].calls == 1


async def test_fresh_hit_also_counts_as_recent_use() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60, max_entries=2)
    a, b, c = (CacheKey("ssm", n) for n in "abc")
    await cache.get(a, Loader(b"a"))
    await cache.get(b, Loader(b"b"))
    assert cache.fresh(a) == b"a"
    await cache.get(c, Loader(b"c"))
    assert cache.fresh(a) == b"a"
    assert cache.fresh(b) is None


async def test_byte_bound_evicts_oldest_until_it_fits() -> None:
    clock = FakeClock()
    body = b"x" * 100
    size = len(body) + ENTRY_OVERHEAD_BYTES
    cache = make_cache(clock, ttl=60, max_bytes=size * 3)
    keys = [CacheKey("ssm", f"p{i}") for i in range(5)]
    for key in keys:
        await cache.get(key, Loader(body))
    assert len(cache) == 3
    assert cache.bytes == size * 3
    assert [cache.fresh(k) is not None for k in keys] == [False, False, True, True, True]


async def test_entry_bigger_than_max_bytes_is_served_but_not_stored() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60, max_bytes=1000)
    small = CacheKey("ssm", "small")
    await cache.get(small, Loader(b"s"))
    big_body = b"B" * 1000
    load = Loader(big_body)
    first = await cache.get(KEY, load)
    assert first.body == big_body
    second = await cache.get(KEY, load)
    assert second.body == big_body
    assert second.outcome == "miss"
    assert load.calls == 2
    # and it did not push the small entry out on its way through
    assert cache.fresh(small) == b"s"
    assert cache.bytes == 1 + ENTRY_OVERHEAD_BYTES


async def test_replacing_an_entry_keeps_byte_count_exact() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    await cache.get(KEY, Loader(b"a" * 10))
    await cache.get(KEY, Loader(b"b" * 30), refresh=True)
    assert cache.bytes == 30 + ENTRY_OVERHEAD_BYTES
    assert len(cache) == 1


# Single-flight -----------------------------------------------------------------------------


async def test_concurrent_misses_make_one_upstream_call() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = GatedLoader(b"shared")
    tasks = [asyncio.create_task(cache.get(KEY, load)) for _ in range(50)]
    await load.started.wait()
    await settle()
    load.release.set()
    results = await asyncio.gather(*tasks)
    assert load.calls == 1
    assert {r.body for r in results} == {b"shared"}
    outcomes = sorted(r.outcome for r in results)
    assert outcomes.count("miss") == 1
    assert outcomes.count("coalesced") == 49
    stats = cache.metrics.service("secretsmanager")
    assert stats.coalesced == 49
    assert stats.misses == 50


async def test_concurrent_misses_share_one_failure_and_nothing_is_cached() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = GatedLoader()
    load.error = UpstreamError("boom")
    tasks = [asyncio.create_task(cache.get(KEY, load)) for _ in range(20)]
    await load.started.wait()
    await settle()
    load.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert load.calls == 1
    assert all(isinstance(r, UpstreamError) for r in results)
    assert len(cache) == 0


async def test_different_keys_load_independently() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load_a, load_b = GatedLoader(b"a"), GatedLoader(b"b")
    ta = asyncio.create_task(cache.get(KEY, load_a))
    tb = asyncio.create_task(cache.get(OTHER, load_b))
    await load_a.started.wait()
    await load_b.started.wait()
    load_a.release.set()
    load_b.release.set()
    assert (await ta).body == b"a"
    assert (await tb).body == b"b"


async def test_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = GatedLoader(b"survivor")
    first = asyncio.create_task(cache.get(KEY, load))
    second = asyncio.create_task(cache.get(KEY, load))
    await load.started.wait()
    await settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    load.release.set()
    assert (await second).body == b"survivor"
    assert load.calls == 1
    assert cache.fresh(KEY) == b"survivor"


async def test_load_completes_and_is_stored_when_its_only_caller_is_cancelled() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = GatedLoader(b"stored-anyway")
    caller = asyncio.create_task(cache.get(KEY, load))
    await load.started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    load.release.set()
    await settle()
    assert cache.fresh(KEY) == b"stored-anyway"
    assert (await cache.get(KEY, load)).outcome == "hit"
    assert load.calls == 1


# refresh, TTL 0, disabled ------------------------------------------------------------------


async def test_refresh_skips_the_cache_and_stores_the_new_value() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = Loader(b"v1", b"v2")
    await cache.get(KEY, load)
    refreshed = await cache.get(KEY, load, refresh=True)
    assert (refreshed.body, refreshed.outcome) == (b"v2", "refresh")
    assert load.calls == 2
    assert (await cache.get(KEY, load)).body == b"v2"
    assert cache.fresh(KEY) == b"v2"
    assert load.calls == 2
    assert cache.metrics.service("secretsmanager").refreshes == 1


async def test_refresh_restarts_the_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10)
    load = Loader(b"v1", b"v2", b"v3")
    await cache.get(KEY, load)
    clock.advance(8)
    await cache.get(KEY, load, refresh=True)
    clock.advance(8)  # 16 s after the first store, 8 s after the refresh
    assert cache.fresh(KEY) == b"v2"


async def test_ttl_zero_passes_through_and_stores_nothing() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=0)
    load = Loader(b"v1", b"v2", b"v3")
    bodies = [(await cache.get(KEY, load)) for _ in range(3)]
    assert [b.body for b in bodies] == [b"v1", b"v2", b"v3"]
    assert {b.outcome for b in bodies} == {"bypass"}
    assert load.calls == 3
    assert len(cache) == 0
    assert cache.fresh(KEY) is None


@pytest.mark.parametrize(("max_entries", "max_bytes"), [(0, 1 << 20), (100, 0)])
async def test_disabled_cache_passes_through(max_entries: int, max_bytes: int) -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60, max_entries=max_entries, max_bytes=max_bytes)
    assert cache.enabled is False
    load = Loader(b"v1", b"v2")
    assert (await cache.get(KEY, load)).body == b"v1"
    assert (await cache.get(KEY, load)).body == b"v2"
    assert load.calls == 2
    assert len(cache) == 0


async def test_disabled_cache_passes_errors_through() -> None:
    cache = make_cache(FakeClock(), max_entries=0, not_found_ttl=30)
    with pytest.raises(NotFound):
        await cache.get(KEY, Loader(NotFound("gone")))
    assert len(cache) == 0


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        NotFound("nope"),
        AccessDenied("denied"),
        BadRequest("bad"),
        UpstreamError("5xx"),
        Throttled("slow down"),
        UpstreamTimeout("late"),
    ],
)
async def test_errors_are_not_cached_as_values(error: SecretcacheError) -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = Loader(error, b"recovered")
    with pytest.raises(type(error)):
        await cache.get(KEY, load)
    assert cache.fresh(KEY) is None
    assert (await cache.get(KEY, load)).body == b"recovered"
    assert load.calls == 2


async def test_unexpected_loader_exception_propagates_and_is_not_cached() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = Loader(RuntimeError("bug"), b"ok")
    with pytest.raises(RuntimeError):
        await cache.get(KEY, load)
    assert (await cache.get(KEY, load)).body == b"ok"


async def test_not_found_is_cached_briefly_when_configured() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60, not_found_ttl=5)
    load = Loader(NotFound("missing"), b"created")
    with pytest.raises(NotFound):
        await cache.get(KEY, load)
    clock.advance(4.9)
    with pytest.raises(NotFound):
        await cache.get(KEY, load)
    assert load.calls == 1
    # the negative entry is never handed out as a body
    assert cache.fresh(KEY) is None
    clock.advance(0.1)
    assert (await cache.get(KEY, load)).body == b"created"
    assert load.calls == 2


async def test_not_found_is_not_cached_by_default() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = Loader(NotFound("missing"), b"created")
    with pytest.raises(NotFound):
        await cache.get(KEY, load)
    assert (await cache.get(KEY, load)).body == b"created"


@pytest.mark.parametrize("error", [AccessDenied("no"), UpstreamError("5xx")])
async def test_only_not_found_is_negatively_cached(error: SecretcacheError) -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60, not_found_ttl=30)
    load = Loader(error, b"ok")
    with pytest.raises(type(error)):
        await cache.get(KEY, load)
    assert (await cache.get(KEY, load)).body == b"ok"


# Stale on error ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [UpstreamError("5xx"), Throttled("slow"), UpstreamTimeout("late")]
)
async def test_transient_error_serves_stale_within_max_stale(error: SecretcacheError) -> None:
    clock = FakeClock()
    seen: list[tuple[CacheKey, SecretcacheError, float]] = []
    cache = make_cache(
        clock, ttl=10, max_stale=30, on_stale=lambda k, e, age: seen.append((k, e, age))
    )
    load = Loader(b"old", error)
    await cache.get(KEY, load)
    clock.advance(25)  # expired 15 s ago
    lookup = await cache.get(KEY, load)
    assert (lookup.body, lookup.outcome) == (b"old", "stale")
    assert lookup.age == pytest.approx(25)
    assert load.calls == 2
    assert seen == [(KEY, error, pytest.approx(25))]
    assert cache.metrics.service("secretsmanager").stale == 1


async def test_stale_is_not_served_past_max_stale() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10, max_stale=30)
    load = Loader(b"old", UpstreamError("5xx"))
    await cache.get(KEY, load)
    clock.advance(10 + 30.5)
    with pytest.raises(UpstreamError):
        await cache.get(KEY, load)


@pytest.mark.parametrize(
    "error",
    [NotFound("deleted"), AccessDenied("revoked"), BadRequest("bad"), UpstreamClientError("no")],
)
async def test_stale_is_never_served_for_permanent_errors(error: SecretcacheError) -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10, max_stale=3600)
    load = Loader(b"old", error)
    await cache.get(KEY, load)
    clock.advance(11)
    with pytest.raises(type(error)):
        await cache.get(KEY, load)


async def test_no_stale_when_max_stale_is_zero() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10, max_stale=0)
    load = Loader(b"old", UpstreamError("5xx"))
    await cache.get(KEY, load)
    clock.advance(11)
    with pytest.raises(UpstreamError):
        await cache.get(KEY, load)


async def test_stale_is_not_served_from_a_negative_entry() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10, not_found_ttl=5, max_stale=3600)
    load = Loader(NotFound("missing"), UpstreamError("5xx"))
    with pytest.raises(NotFound):
        await cache.get(KEY, load)
    clock.advance(6)
    with pytest.raises(UpstreamError):
        await cache.get(KEY, load)


# Refresh-ahead -----------------------------------------------------------------------------


async def test_hit_in_last_tenth_of_ttl_starts_exactly_one_background_load() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=100)
    first_load = Loader(b"v1")
    await cache.get(KEY, first_load)
    refresh = GatedLoader(b"v2")
    clock.advance(89)
    assert cache.fresh(KEY, refresh) == b"v1"
    await settle()
    assert refresh.calls == 0  # 11 s left: not yet in the last tenth
    clock.advance(2)  # 9 s left
    for _ in range(10):
        assert cache.fresh(KEY, refresh) == b"v1"  # served at once, not waiting on AWS
    await settle()
    assert refresh.calls == 1
    assert cache.metrics.service("secretsmanager").refreshes == 1
    refresh.release.set()
    await settle()
    assert cache.fresh(KEY) == b"v2"
    clock.advance(50)  # the refreshed entry has its own full TTL
    assert cache.fresh(KEY) == b"v2"
    assert refresh.calls == 1


async def test_refresh_ahead_failure_keeps_serving_the_current_entry() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=100)
    await cache.get(KEY, Loader(b"v1"))
    clock.advance(95)
    failing = Loader(UpstreamError("5xx"))
    assert cache.fresh(KEY, failing) == b"v1"
    await settle()
    assert failing.calls == 1
    assert cache.fresh(KEY) == b"v1"
    clock.advance(5)
    assert cache.fresh(KEY) is None


async def test_miss_while_refresh_ahead_in_flight_joins_it() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=100)
    await cache.get(KEY, Loader(b"v1"))
    clock.advance(95)
    refresh = GatedLoader(b"v2")
    cache.fresh(KEY, refresh)
    await refresh.started.wait()
    clock.advance(10)  # now expired; a miss must not start a second load
    other = Loader(b"never")
    waiter = asyncio.create_task(cache.get(KEY, other))
    await settle()
    refresh.release.set()
    assert (await waiter).body == b"v2"
    assert other.calls == 0


async def test_refresh_ahead_does_not_compound_jitter() -> None:
    clock = FakeClock()
    # rand = 0.5, jitter 0.1: every stored entry lives 95% of the configured TTL
    cache = make_cache(clock, ttl=100, rand=lambda: 0.5, jitter=0.1)
    await cache.get(KEY, Loader(b"v1"))  # lives until t0 + 95
    clock.advance(90)
    cache.fresh(KEY, Loader(b"v2"))
    await settle()
    assert cache.fresh(KEY) == b"v2"
    # stored at t0 + 90 with TTL 100 -> 95 s of life, until t0 + 185
    clock.advance(94)
    assert cache.fresh(KEY) == b"v2"


# Stats and clock ---------------------------------------------------------------------------


async def test_stats_count_per_service() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    ssm = CacheKey("ssm", "/p")
    await cache.get(KEY, Loader(b"s"))
    await cache.get(KEY, Loader(b"s"))
    cache.fresh(KEY)
    await cache.get(ssm, Loader(b"p"))
    await cache.get(ssm, Loader(b"p2"), refresh=True)
    sm = cache.metrics.service("secretsmanager").as_dict()
    assert (sm["hits"], sm["misses"], sm["refreshes"]) == (2, 1, 0)
    p = cache.metrics.service("ssm").as_dict()
    assert (p["hits"], p["misses"], p["refreshes"]) == (0, 1, 1)
    assert cache.entries_by_service() == {
        "secretsmanager": (1, 1 + ENTRY_OVERHEAD_BYTES),
        "ssm": (1, 2 + ENTRY_OVERHEAD_BYTES),
    }


async def test_close_cancels_background_loads() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60)
    load = GatedLoader()
    task = asyncio.create_task(cache.get(KEY, load))
    await load.started.wait()
    await cache.close()
    with pytest.raises((asyncio.CancelledError, SecretcacheError)):
        await asyncio.wait_for(task, 1)


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], list[float]]:
    """The cache module's monotonic and wall clocks, set by the test (one-item lists)."""
    import secretcache.cache as cache_module

    mono, wall = [100.0], [5000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: mono[0])
    monkeypatch.setattr(cache_module.time, "time", lambda: wall[0])
    return mono, wall


def test_sandbox_clock_follows_wall_clock_jumps(clocks: tuple[list[float], list[float]]) -> None:
    mono, wall = clocks
    clock = SandboxClock()
    start = clock()
    mono[0] += 1
    wall[0] += 1
    assert clock() == pytest.approx(start + 1)
    wall[0] += 600  # frozen sandbox thawed: monotonic did not see the 10 minutes
    mono[0] += 0.001
    assert clock() == pytest.approx(start + 601)
    wall[0] -= 3600  # NTP step backwards: the cache clock never goes back
    mono[0] += 1
    assert clock() == pytest.approx(start + 602)


async def test_refresh_now_fetches_after_it_arrived_instead_of_joining_a_load_in_flight() -> None:
    cache = TtlCache(
        max_entries=10, max_bytes=1 << 20, policies=policies(60, jitter=0.0), clock=FakeClock()
    )
    before_rotation = GatedLoader(b"old")
    first = asyncio.create_task(cache.get(KEY, before_rotation))
    await before_rotation.started.wait()
    refreshed = await cache.get(KEY, Loader(b"new"), refresh=True)
    assert refreshed.body == b"new"
    before_rotation.release.set()
    assert (await first).body == b"old"  # its own callers get what they asked for
    assert cache.fresh(KEY) == b"new"  # but the older load does not overwrite the newer value


# SnapStart restores ------------------------------------------------------------------------


def test_sandbox_clock_reports_a_restore_sized_wall_jump_once(
    clocks: tuple[list[float], list[float]],
) -> None:
    mono, wall = clocks
    jumps: list[tuple[float, float]] = []
    clock = SandboxClock(on_jump=lambda seconds, now: jumps.append((seconds, now)))
    start = clock()
    mono[0] += 5
    wall[0] += 5.5  # drift and scheduling noise: no restore
    clock()
    assert jumps == []
    wall[0] += 7200  # restored two hours after the snapshot; monotonic did not move
    now = clock()
    assert len(jumps) == 1 and jumps[0][0] == pytest.approx(7200) and jumps[0][1] == now
    assert now == pytest.approx(start + 7205.5)
    mono[0] += 1
    wall[0] += 1
    clock()
    assert len(jumps) == 1  # reported once, not on every later read
    wall[0] -= 3600  # a step backwards is no restore
    clock()
    assert len(jumps) == 1


async def test_a_clock_jump_expires_what_was_held_but_keeps_it_for_stale_on_error(
    clocks: tuple[list[float], list[float]],
) -> None:
    _mono, wall = clocks
    cache = TtlCache(
        max_entries=10,
        max_bytes=1 << 20,
        policies=policies(3600, max_stale=600, jitter=0.0),
    )
    told: list[float] = []
    cache.on_clock_jump = told.append
    cache.watch_restore = True  # SnapStart, before the restore
    await cache.get(KEY, Loader(b"from-the-snapshot"))
    wall[0] += 30  # well within the TTL: without the restore rule this would still be fresh
    assert cache.fresh(KEY) is None
    assert told == [pytest.approx(30)]
    stale = await cache.get(KEY, Loader(UpstreamTimeout("AWS is slow")))
    assert (stale.outcome, stale.body) == ("stale", b"from-the-snapshot")
    fetched = await cache.get(KEY, Loader(b"after-restore"))
    assert (fetched.outcome, fetched.body) == ("miss", b"after-restore")
    assert cache.fresh(KEY) == b"after-restore"


async def test_expire_all_makes_later_callers_start_their_own_load() -> None:
    cache = make_cache(FakeClock())
    before_snapshot = GatedLoader(b"pre-snapshot")
    first = asyncio.create_task(cache.get(KEY, before_snapshot))
    await before_snapshot.started.wait()
    assert cache.expire_all() == 0
    after = await cache.get(KEY, Loader(b"post-restore"))
    assert after.outcome == "miss" and after.body == b"post-restore"
    before_snapshot.release.set()
    assert (await first).body == b"pre-snapshot"
    assert cache.fresh(KEY) == b"post-restore"  # the older load does not store its result


async def test_a_load_from_before_a_restore_first_seen_when_it_ends_is_not_stored(
    clocks: tuple[list[float], list[float]],
) -> None:
    _mono, wall = clocks
    cache = TtlCache(max_entries=10, max_bytes=1 << 20, policies=policies(3600, jitter=0.0))
    cache.watch_restore = True
    before_snapshot = GatedLoader(b"pre-snapshot")
    waiter = asyncio.create_task(cache.get(KEY, before_snapshot))
    await before_snapshot.started.wait()
    wall[0] += 7200  # the snapshot is restored while the load is in flight
    before_snapshot.release.set()
    assert (await waiter).body == b"pre-snapshot"  # its caller gets what it asked for
    assert cache.fresh(KEY) is None and len(cache) == 0  # but it is not kept


async def test_only_the_first_jump_under_snapstart_is_a_restore(
    clocks: tuple[list[float], list[float]],
) -> None:
    _mono, wall = clocks
    cache = TtlCache(max_entries=10, max_bytes=1 << 20, policies=policies(3600, jitter=0.0))
    told: list[float] = []
    cache.on_clock_jump = told.append
    await cache.get(KEY, Loader(b"v1"))
    wall[0] += 30  # not SnapStart: a jump ages entries, it expires nothing
    assert cache.fresh(KEY) == b"v1" and told == []
    cache.watch_restore = True
    wall[0] += 30  # the restore
    assert cache.fresh(KEY) is None and told == [pytest.approx(30)]
    await cache.get(KEY, Loader(b"v2"))
    wall[0] += 30  # a later thaw of the restored sandbox: no second restore
    assert cache.fresh(KEY) == b"v2" and len(told) == 1
