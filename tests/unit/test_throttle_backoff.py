"""Throttle memory with a fake clock: stale first while AWS throttles, a back-off per key, one
attempt for a background refresh, Retry-After, and nothing changed when AWS is healthy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from secretcache.backends import MAX_ATTEMPTS, AwsBackends
from secretcache.cache import CacheKey, Policy, TtlCache
from secretcache.config import ConfigError, load_config
from secretcache.errors import AccessDenied, NotFound, Throttled, UpstreamError
from secretcache.read_requests import ParameterRead
from secretcache.reads import Reads, cache_policies
from secretcache.throttle import (
    BACKOFF_BASE_SECONDS,
    SERVICE_MEMORY_SECONDS,
    ThrottleMemory,
    retry_after,
    upstream_attempts,
)

from tests.unit.test_cache import FakeClock, Loader, settle

KEY = CacheKey("ssm", "/app/db")
OTHER = CacheKey("ssm", "/app/url")
SM_KEY = CacheKey("secretsmanager", "db")
ENV = {"AWS_SESSION_TOKEN": "test-token"}
THROTTLED = Throttled("ssm: ThrottlingException: Rate exceeded")


def make_cache(
    clock: FakeClock, *, backoff: float = 20.0, max_stale: float = 3600.0, rand: float = 0.0
) -> TtlCache:
    policy = Policy(60.0, 0.0, max_stale, jitter=0.0, throttle_backoff=backoff)
    return TtlCache(
        max_entries=100,
        max_bytes=1 << 20,
        policies={s: policy for s in ("ssm", "secretsmanager", "kms")},
        clock=clock,
        rand=lambda: rand,
    )


class AttemptsLoader(Loader):
    """A Loader that also records the attempt limit each load ran under."""

    def __init__(self, *results: bytes | BaseException) -> None:
        super().__init__(*results)
        self.limits: list[int | None] = []

    async def __call__(self) -> bytes:
        self.limits.append(upstream_attempts.get())
        return await super().__call__()


async def expired_entry(cache: TtlCache, clock: FakeClock, key: CacheKey = KEY) -> None:
    await cache.get(key, Loader(b"old"))
    clock.advance(61)


# The back-off itself -----------------------------------------------------------------------


def test_backoff_doubles_per_throttled_load_is_capped_and_jittered() -> None:
    memory = ThrottleMemory(rand=lambda: 1.0)
    steps = [memory.throttled(KEY, "ssm", 0.0, 20.0) for _ in range(7)]
    assert steps == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    low = ThrottleMemory(rand=lambda: 0.0)
    assert low.throttled(KEY, "ssm", 0.0, 20.0) == 0.5 * BACKOFF_BASE_SECONDS  # never near 0
    assert low.backoff(KEY, 0.2) == pytest.approx(0.3)
    assert low.backoff(KEY, 0.5) == 0.0
    low.loaded(KEY)  # an answer starts the doubling again
    assert low.throttled(KEY, "ssm", 1.0, 20.0) == 0.5


def test_backoff_stays_at_the_cap_however_long_the_throttling_lasts() -> None:
    memory = ThrottleMemory(rand=lambda: 1.0)
    steps = [memory.throttled(KEY, "ssm", 0.0, 300.0) for _ in range(2000)]
    assert steps[-1] == 300.0  # one attempt per read can refuse a key thousands of times


def test_service_memory_is_per_service_and_ends() -> None:
    memory = ThrottleMemory(rand=lambda: 0.0)
    memory.throttled(KEY, "ssm", 100.0, 20.0)
    assert memory.service_throttled("ssm", 100.0 + SERVICE_MEMORY_SECONDS - 0.01)
    assert not memory.service_throttled("ssm", 100.0 + SERVICE_MEMORY_SECONDS)
    assert not memory.service_throttled("secretsmanager", 100.0)
    assert memory.backoff(OTHER, 100.0) == 0.0  # the back-off is the key's own


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(s) for s in (0.01, 0.5, 1.0, 1.2, 19.9)] == ["1", "1", "1", "2", "20"]


# The cache ---------------------------------------------------------------------------------


async def test_expired_entry_served_stale_without_waiting_while_service_throttled() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await expired_entry(cache, clock, KEY)
    await expired_entry(cache, clock, OTHER)
    # OTHER's refresh is throttled after its retries: the service is now known to throttle.
    with_retries = AttemptsLoader(THROTTLED)
    first = await cache.get(OTHER, with_retries)
    assert first.outcome == "stale" and with_retries.limits == [None]  # waited through retries
    # KEY was never refused itself, but its expired value is served at once ...
    gated = asyncio.Event()

    async def slow_load() -> bytes:
        await gated.wait()
        return b"new"

    lookup = await asyncio.wait_for(cache.get(KEY, slow_load), 1.0)
    assert (lookup.body, lookup.outcome) == (b"old", "stale")
    # ... and one background refresh is under way; a second read does not start another.
    assert KEY in cache._inflight
    again = await cache.get(KEY, slow_load)
    assert again.outcome == "stale"
    gated.set()
    await settle()
    assert cache.fresh(KEY) == b"new"


async def test_background_refresh_while_throttled_makes_one_attempt() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await expired_entry(cache, clock, KEY)
    await expired_entry(cache, clock, OTHER)
    await cache.get(OTHER, Loader(THROTTLED))
    load = AttemptsLoader(b"new")
    await cache.get(KEY, load)
    await settle()
    assert load.limits == [1]
    assert upstream_attempts.get() is None  # only the background task's context was changed


async def test_throttled_key_backs_off_then_tries_once_more() -> None:
    clock = FakeClock()
    cache = make_cache(clock, rand=1.0)  # back-offs of exactly 1, 2, 4 ... s
    await expired_entry(cache, clock)
    load = Loader(THROTTLED, THROTTLED, b"new")
    assert (await cache.get(KEY, load)).outcome == "stale"
    assert load.calls == 1
    for _ in range(50):  # every read during the back-off: stale, no call
        assert (await cache.get(KEY, load)).outcome == "stale"
        clock.advance(0.019)
    assert load.calls == 1
    clock.advance(0.1)  # 1.05 s: the back-off is over, the service still throttled
    assert (await cache.get(KEY, load)).outcome == "stale"
    await settle()
    assert load.calls == 2  # one background refresh, throttled again: 2 s back-off
    clock.advance(1.9)
    await cache.get(KEY, load)
    await settle()
    assert load.calls == 2
    clock.advance(0.2)
    await cache.get(KEY, load)
    await settle()
    assert load.calls == 3 and cache.fresh(KEY) == b"new"
    assert cache.throttle.backoff(KEY, clock()) == 0.0


async def test_no_value_during_back_off_makes_one_attempt_then_429_with_retry_after() -> None:
    clock = FakeClock()
    cache = make_cache(clock, rand=1.0)
    load = AttemptsLoader(THROTTLED, THROTTLED, b"v")
    with pytest.raises(Throttled) as first:
        await cache.get(KEY, load)  # AWS's own answer, after the retries: back-off 1 s
    assert first.value.retry_after == pytest.approx(1.0)
    clock.advance(0.4)
    with pytest.raises(Throttled) as second:
        await cache.get(KEY, load)  # tried once, throttled again: back-off 2 s from now
    assert second.value.status == 429
    assert second.value.error_type == "ThrottlingException"
    assert second.value.retry_after == pytest.approx(2.0)
    assert load.calls == 2 and load.limits == [None, 1]
    assert cache.throttle.backoff(KEY, clock()) == pytest.approx(2.0)
    clock.advance(0.5)
    assert (await cache.get(KEY, load)).body == b"v"  # still backing off: one attempt, answered
    assert load.calls == 3 and load.limits == [None, 1, 1]
    assert cache.throttle.backoff(KEY, clock()) == 0.0  # an answer ends the back-off
    assert THROTTLED.retry_after is None  # the loader's exception is copied, not changed


async def test_readers_during_back_off_share_the_one_attempt() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    with pytest.raises(Throttled):
        await cache.get(KEY, Loader(THROTTLED))
    gate = asyncio.Event()
    limits: list[int | None] = []

    async def load() -> bytes:
        limits.append(upstream_attempts.get())
        await gate.wait()
        return b"v"

    readers = [asyncio.ensure_future(cache.get(KEY, load)) for _ in range(10)]
    await settle()
    gate.set()
    results = await asyncio.gather(*readers)
    assert limits == [1]
    assert [r.body for r in results] == [b"v"] * 10
    assert sorted(r.outcome for r in results) == ["coalesced"] * 9 + ["miss"]


async def test_forced_refresh_during_back_off_makes_one_attempt() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await expired_entry(cache, clock)
    load = AttemptsLoader(THROTTLED, THROTTLED, b"new")
    assert (await cache.get(KEY, load)).outcome == "stale"  # throttled: the key backs off
    # A forced refresh never takes the stale value first: it asks AWS, once; when that is
    # throttled too, the read falls back as any failed forced refresh does (stale on error).
    assert (await cache.get(KEY, load, refresh=True)).outcome == "stale"
    assert load.calls == 2 and load.limits == [None, 1]
    lookup = await cache.get(KEY, load, refresh=True)
    assert (lookup.body, lookup.outcome) == (b"new", "refresh")
    assert load.limits == [None, 1, 1]


async def test_stale_beyond_max_stale_during_back_off_makes_one_attempt() -> None:
    clock = FakeClock()
    cache = make_cache(clock, max_stale=1.2)
    await expired_entry(cache, clock)  # 1 s past the TTL
    load = AttemptsLoader(THROTTLED, THROTTLED)
    assert (await cache.get(KEY, load)).outcome == "stale"
    clock.advance(0.3)  # 1.3 s past the TTL, in the 0.5 s back-off
    with pytest.raises(Throttled) as refused:
        await cache.get(KEY, load)
    assert refused.value.retry_after == pytest.approx(1.0)  # the second back-off: 2 s x 0.5
    assert load.limits == [None, 1]


async def test_stale_value_during_back_off_is_served_without_a_call() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await expired_entry(cache, clock)
    load = Loader(THROTTLED)
    assert (await cache.get(KEY, load)).outcome == "stale"
    for _ in range(5):
        assert (await cache.get(KEY, load)).outcome == "stale"
    await settle()
    assert load.calls == 1


@pytest.mark.parametrize("error", [NotFound("gone"), AccessDenied("no")])
async def test_not_found_and_access_denied_unchanged(error: Exception) -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await expired_entry(cache, clock, OTHER)
    await cache.get(OTHER, Loader(THROTTLED))  # the service is throttled
    load = Loader(error)
    with pytest.raises(type(error)):
        await cache.get(KEY, load)
    with pytest.raises(type(error)):  # asked again: no back-off for these
        await cache.get(KEY, load)
    assert load.calls == 2


async def test_other_transient_errors_do_not_back_off() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await expired_entry(cache, clock)
    load = Loader(UpstreamError("ssm: 500"), UpstreamError("ssm: 500"))
    assert (await cache.get(KEY, load)).outcome == "stale"
    assert (await cache.get(KEY, load)).outcome == "stale"
    assert load.calls == 2  # each read retried: a 5xx is not a rate limit
    assert not cache.throttle.service_throttled("ssm", clock())


async def test_refresh_ahead_waits_for_the_back_off() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await cache.get(KEY, Loader(b"v1"))
    clock.advance(55)  # in the refresh-ahead window
    load = Loader(THROTTLED, b"v2")
    assert cache.fresh(KEY, load) == b"v1"
    await settle()
    assert load.calls == 1
    for _ in range(10):
        assert cache.fresh(KEY, load) == b"v1"
    await settle()
    assert load.calls == 1  # no refresh per hit while the key backs off
    clock.advance(1.0)
    assert cache.fresh(KEY, load) == b"v1"
    await settle()
    assert load.calls == 2 and cache.fresh(KEY) == b"v2"


async def test_concurrent_readers_without_a_value_still_make_one_call() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    gate = asyncio.Event()
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise THROTTLED

    readers = [asyncio.ensure_future(cache.get(KEY, load)) for _ in range(20)]
    await settle()
    gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, Throttled) for r in results)


async def test_healthy_aws_unchanged_by_the_switch() -> None:
    for backoff in (0.0, 20.0):
        clock = FakeClock()
        cache = make_cache(clock, backoff=backoff)
        load = AttemptsLoader(b"v1", b"v2")
        assert (await cache.get(KEY, load)).outcome == "miss"
        clock.advance(61)
        assert (await cache.get(KEY, load)).outcome == "miss"
        assert load.limits == [None, None]


async def test_switched_off_every_read_waits_for_its_own_load() -> None:
    clock = FakeClock()
    cache = make_cache(clock, backoff=0.0)
    await expired_entry(cache, clock)
    load = Loader(THROTTLED, THROTTLED, THROTTLED)
    for _ in range(3):
        assert (await cache.get(KEY, load)).outcome == "stale"
    assert load.calls == 3  # as before this change


# The read core and the backends ------------------------------------------------------------


class ThrottlingUpstream:
    loaded = True

    def __init__(self) -> None:
        self.calls = 0

    async def get_parameter(self, name: str, with_decryption: bool) -> dict[str, Any]:
        self.calls += 1
        raise THROTTLED


async def test_throttled_response_carries_the_back_off_as_retry_after() -> None:
    clock = FakeClock()
    config = load_config(ENV)
    cache = TtlCache(
        max_entries=100,
        max_bytes=1 << 20,
        policies=cache_policies(config),
        clock=clock,
        rand=lambda: 1.0,
    )
    upstream = ThrottlingUpstream()
    reads = Reads(config, cache, upstream)  # type: ignore[arg-type]
    read = ParameterRead("/app/db")
    first = await reads.respond(read)
    assert first.status == 429 and dict(first.headers) == {"Retry-After": "1"}
    clock.advance(0.25)
    second = await reads.respond(read)  # during the back-off: one more attempt, throttled
    assert second.status == 429
    assert dict(second.headers) == {"Retry-After": "2"}
    assert b"ThrottlingException" in second.body
    assert upstream.calls == 2


class ThrottledClientError(Exception):
    """Shaped like botocore's ClientError for a throttled call."""

    def __init__(self) -> None:
        super().__init__("Rate exceeded")
        self.response = {
            "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }


class FakeSsmClient:
    def __init__(self) -> None:
        self.calls = 0

    async def get_parameter(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        raise ThrottledClientError()


def throttled_backends() -> tuple[AwsBackends, FakeSsmClient]:
    backends = AwsBackends(max_connections=1, timeouts={"ssm": 5.0}, rand=lambda: 0.0)
    client = FakeSsmClient()
    backends._clients[("ssm", "", "")] = client
    return backends, client


async def test_backends_retry_up_to_max_attempts_by_default() -> None:
    backends, client = throttled_backends()
    with pytest.raises(Throttled):
        await backends.get_parameter("/app/db", False)
    assert client.calls == MAX_ATTEMPTS


async def test_backends_make_the_attempts_the_context_allows() -> None:
    backends, client = throttled_backends()

    async def once() -> None:
        upstream_attempts.set(1)
        await backends.get_parameter("/app/db", False)

    with pytest.raises(Throttled):
        await asyncio.get_running_loop().create_task(once())
    assert client.calls == 1


@pytest.mark.parametrize("value", ["-1", "301", "soon", "2.5"])
def test_backoff_setting_is_validated(value: str) -> None:
    with pytest.raises(ConfigError, match="SECRETCACHE_THROTTLE_BACKOFF_SECONDS"):
        load_config({**ENV, "SECRETCACHE_THROTTLE_BACKOFF_SECONDS": value})


def test_backoff_setting_default_and_off() -> None:
    assert load_config(ENV).throttle_backoff_seconds == 20
    config = load_config({**ENV, "SECRETCACHE_THROTTLE_BACKOFF_SECONDS": "0"})
    assert config.throttle_backoff_seconds == 0
    assert cache_policies(config)["ssm"].throttle_backoff == 0.0
