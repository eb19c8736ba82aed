"""Role credentials (`roleArn`): refresh timing on an injected clock, coalescing, the role bound."""

from __future__ import annotations

import asyncio

import pytest
from secretcache.aws.credentials import Credentials
from secretcache.errors import AccessDenied, MaxRolesExceeded, UpstreamError
from secretcache.roles import (
    ADVISORY_REFRESH_SECONDS,
    MANDATORY_REFRESH_SECONDS,
    RETRY_AFTER_FAILURE_SECONDS,
    RoleCredentials,
    RoleRegistry,
    session_name,
)

ROLE = "arn:aws:iam::222222222222:role/reader"
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeSts:
    """AssumeRole answering numbered credentials valid for an hour, or failing on demand."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, role_arn: str) -> Credentials:
        self.calls.append(role_arn)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        n = len(self.calls)
        return Credentials(f"ASIA{n}", f"secret-{n}", f"token-{n}", self.clock() + HOUR)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sts(clock: Clock) -> FakeSts:
    return FakeSts(clock)


async def test_credentials_are_reused_until_the_refresh_window(clock: Clock, sts: FakeSts) -> None:
    role = RoleCredentials(ROLE, sts, clock)
    first = await role.get()
    clock.now += HOUR - ADVISORY_REFRESH_SECONDS - 1
    assert await role.get() is first
    assert len(sts.calls) == 1
    clock.now += 2  # now inside the advisory window: refreshed before expiry
    refreshed = await role.get()
    assert refreshed.access_key == "ASIA2" and len(sts.calls) == 2


async def test_concurrent_reads_make_one_assume_role_call(clock: Clock, sts: FakeSts) -> None:
    role = RoleCredentials(ROLE, sts, clock)
    sts.gate = asyncio.Event()
    waiting = [asyncio.create_task(role.get()) for _ in range(20)]
    await asyncio.sleep(0)
    sts.gate.set()
    results = await asyncio.gather(*waiting)
    assert {c.access_key for c in results} == {"ASIA1"}
    assert len(sts.calls) == 1


async def test_a_failed_refresh_keeps_the_old_credentials_while_they_are_valid(
    clock: Clock, sts: FakeSts
) -> None:
    role = RoleCredentials(ROLE, sts, clock)
    first = await role.get()
    clock.now += HOUR - ADVISORY_REFRESH_SECONDS + 1
    sts.fail = UpstreamError("sts is unreachable")
    assert await role.get() is first
    assert len(sts.calls) == 2
    # The next attempt waits a little, so a failing STS is not called on every read.
    assert await role.get() is first
    assert len(sts.calls) == 2
    clock.now += RETRY_AFTER_FAILURE_SECONDS + 1
    assert await role.get() is first
    assert len(sts.calls) == 3
    # Too close to expiry: the failure is the answer.
    clock.now = first.expires_at - MANDATORY_REFRESH_SECONDS + 1  # type: ignore[operator]
    with pytest.raises(UpstreamError):
        await role.get()
    sts.fail = None
    assert (await role.get()).access_key.startswith("ASIA")


async def test_the_first_failure_is_raised(clock: Clock, sts: FakeSts) -> None:
    sts.fail = AccessDenied("denied")
    with pytest.raises(AccessDenied):
        await RoleCredentials(ROLE, sts, clock).get()


async def test_the_bound_refuses_a_new_role_and_never_evicts(clock: Clock, sts: FakeSts) -> None:
    registry = RoleRegistry(2, sts, clock)
    roles = [f"arn:aws:iam::222222222222:role/r{i}" for i in range(3)]
    await registry.credentials(roles[0])
    await registry.credentials(roles[1])
    with pytest.raises(MaxRolesExceeded) as refused:
        await registry.credentials(roles[2])
    assert "SECRETCACHE_MAX_ROLES=2" in refused.value.message
    assert roles[2] in refused.value.message
    assert refused.value.status == 400
    assert roles[0] in registry and roles[1] in registry and len(registry) == 2
    assert len(sts.calls) == 2  # the refused role was never assumed


async def test_a_role_whose_first_assume_fails_takes_no_place(clock: Clock, sts: FakeSts) -> None:
    registry = RoleRegistry(1, sts, clock)
    sts.fail = AccessDenied("denied")
    with pytest.raises(AccessDenied):
        await registry.credentials("arn:aws:iam::222222222222:role/typo")
    sts.fail = None
    await registry.credentials(ROLE)
    assert len(registry) == 1


async def test_a_new_role_in_flight_holds_its_place(clock: Clock, sts: FakeSts) -> None:
    registry = RoleRegistry(1, sts, clock)
    sts.gate = asyncio.Event()
    first = asyncio.create_task(registry.credentials(ROLE))
    same = asyncio.create_task(registry.credentials(ROLE))
    await asyncio.sleep(0)
    with pytest.raises(MaxRolesExceeded):
        await registry.credentials("arn:aws:iam::222222222222:role/other")
    sts.gate.set()
    assert await first is await same
    assert len(sts.calls) == 1


async def test_zero_roles_refuses_every_role(clock: Clock, sts: FakeSts) -> None:
    with pytest.raises(MaxRolesExceeded):
        await RoleRegistry(0, sts, clock).credentials(ROLE)


def test_credentials_never_show_in_a_repr(clock: Clock, sts: FakeSts) -> None:
    credentials = Credentials("ASIAX", "the-secret-key", "the-session-token", 1.0)
    assert "the-secret-key" not in repr(credentials)
    assert "the-session-token" not in repr(credentials)
    assert repr(RoleCredentials(ROLE, sts, clock)) == f"RoleCredentials({ROLE!r})"


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("my-fn", "secretcache-my-fn"),
        (None, "secretcache-standalone"),
        ("a b/c:d", "secretcache-a-b-c-d"),
        ("x" * 100, ("secretcache-" + "x" * 100)[:64]),
        ("fn_1+=,.@-", "secretcache-fn_1+=,.@-"),
        ("é", "secretcache--"),
    ],
)
def test_session_name_is_made_of_sts_characters(function: str | None, expected: str) -> None:
    assert session_name(function) == expected
    assert 2 <= len(session_name(function)) <= 64


async def test_a_restore_drops_every_roles_credentials_and_keeps_their_places(
    clock: Clock, sts: FakeSts
) -> None:
    registry = RoleRegistry(2, sts, clock)
    other = "arn:aws:iam::333333333333:role/reader"
    before = {role: await (await registry.credentials(role)).get() for role in (ROLE, other)}
    assert [c.access_key for c in before.values()] == ["ASIA1", "ASIA2"]
    registry.invalidate()  # SnapStart restore, five minutes after the snapshot
    clock.now += 300
    after = {role: await (await registry.credentials(role)).get() for role in (ROLE, other)}
    assert sorted(c.access_key for c in after.values()) == ["ASIA3", "ASIA4"]
    assert len(registry) == 2  # still the same two roles under the bound
    with pytest.raises(MaxRolesExceeded):
        await registry.credentials("arn:aws:iam::444444444444:role/reader")


async def test_a_restore_drops_credentials_even_when_the_new_assume_role_fails(
    clock: Clock, sts: FakeSts
) -> None:
    role = RoleCredentials(ROLE, sts, clock)
    await role.get()
    role.invalidate()
    sts.fail = AccessDenied("not allowed to assume the role")
    with pytest.raises(AccessDenied):
        await role.get()  # never the credentials from before the snapshot


async def test_an_assume_role_in_flight_at_the_snapshot_stores_nothing_after_it(
    clock: Clock, sts: FakeSts
) -> None:
    role = RoleCredentials(ROLE, sts, clock)
    sts.gate = asyncio.Event()
    before = asyncio.create_task(role.get())
    await asyncio.sleep(0)
    role.invalidate()
    sts.gate.set()
    await before  # its caller gets an answer ...
    after = await role.get()  # ... but nothing is kept from a call started before the restore
    assert after.access_key == "ASIA2" and len(sts.calls) == 2
