"""Roles a read assumes (`roleArn`): at most SECRETCACHE_MAX_ROLES, credentials kept fresh.

Each role's credentials come from STS AssumeRole, called with the function's own credentials
(the caller passes the call in, so both upstreams share this policy). They are refreshed
`ADVISORY_REFRESH_SECONDS` before they expire, by one call however many reads want them; a
refresh that fails while the old credentials still have more than `MANDATORY_REFRESH_SECONDS`
left keeps serving the old ones (and is retried no sooner than `RETRY_AFTER_FAILURE_SECONDS`).

A role counts against the bound once AssumeRole has succeeded for it; a new role beyond the
bound is refused (`MaxRolesExceeded`), never admitted by evicting another, so a caller cannot
churn roles (and with them caches and connections). A role whose first AssumeRole fails is not
kept. Credentials never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from .aws.credentials import Credentials
from .errors import MaxRolesExceeded, SecretcacheError

#: Refresh this long before the credentials expire (botocore's advisory window) ...
ADVISORY_REFRESH_SECONDS = 15 * 60
#: ... and, while refreshing fails, keep signing with the old ones until this close to expiry.
MANDATORY_REFRESH_SECONDS = 60
#: After a failed refresh (old credentials still good), the next attempt waits this long.
RETRY_AFTER_FAILURE_SECONDS = 10.0
DEFAULT_MAX_ROLES = 10
MAX_SESSION_NAME = 64
_SESSION_NAME_INVALID = re.compile(r"[^\w+=,.@-]", re.ASCII)

#: AssumeRole for one role ARN: the role's credentials, or a `SecretcacheError`.
AssumeRole = Callable[[str], Awaitable[Credentials]]


def session_name(function_name: str | None) -> str:
    """RoleSessionName from the function's name: STS's characters only, 2 to 64 of them.

    CloudTrail in the role's account shows it, so the owner can tell which function read.
    """
    name = _SESSION_NAME_INVALID.sub("-", f"secretcache-{function_name or 'standalone'}")
    return name[:MAX_SESSION_NAME]


class RoleCredentials:
    """One role's credentials: assumed when first needed, refreshed before they expire."""

    def __init__(
        self,
        role_arn: str,
        assume: AssumeRole,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.role_arn = role_arn
        self._assume = assume
        self._clock = clock
        self._current: Credentials | None = None
        self._refreshing: asyncio.Task[Credentials] | None = None
        self._next_attempt = 0.0
        #: Bumped by `invalidate`: a refresh started before it may not store what it got.
        self._generation = 0

    def __repr__(self) -> str:
        return f"RoleCredentials({self.role_arn!r})"

    def _left(self) -> float:
        current = self._current
        if current is None:
            return 0.0
        if current.expires_at is None:
            return float("inf")
        return current.expires_at - self._clock()

    async def get(self) -> Credentials:
        """Usable credentials for the role; raises the AssumeRole error when there are none."""
        left = self._left()
        if left > ADVISORY_REFRESH_SECONDS or (
            left > MANDATORY_REFRESH_SECONDS and self._clock() < self._next_attempt
        ):
            assert self._current is not None
            return self._current
        task = self._refreshing
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(self._generation))
            self._refreshing = task
        try:
            return await asyncio.shield(task)
        except SecretcacheError:
            if self._left() > MANDATORY_REFRESH_SECONDS:
                assert self._current is not None
                return self._current
            raise

    async def _refresh(self, generation: int) -> Credentials:
        try:
            credentials = await self._assume(self.role_arn)
        except BaseException:
            if generation == self._generation:
                self._next_attempt = self._clock() + RETRY_AFTER_FAILURE_SECONDS
            raise
        finally:
            if generation == self._generation:
                self._refreshing = None
        if generation == self._generation:
            self._current = credentials
        return credentials

    def invalidate(self) -> None:
        """SnapStart restore: forget the credentials assumed before the snapshot (every sandbox
        restored from it would share them, and they may have expired while it was stored); the
        next read assumes the role again. A refresh in flight from before may not store its
        answer."""
        self._generation += 1
        self._current = None
        self._refreshing = None
        self._next_attempt = 0.0

    @property
    def assumed(self) -> bool:
        """Whether AssumeRole has succeeded at least once."""
        return self._current is not None


class RoleRegistry:
    """The roles in use, at most `max_roles`; each role's credentials are shared by its clients."""

    def __init__(
        self,
        max_roles: int,
        assume: AssumeRole,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_roles = max_roles
        self._assume = assume
        self._clock = clock
        self._roles: dict[str, RoleCredentials] = {}
        #: Roles whose first AssumeRole is in flight: they hold a place until it ends.
        self._pending: dict[str, RoleCredentials] = {}

    def __len__(self) -> int:
        return len(self._roles)

    def invalidate(self) -> None:
        """SnapStart restore: every role's credentials are assumed again when next needed (the
        roles keep their places under the bound)."""
        for role in (*self._roles.values(), *self._pending.values()):
            role.invalidate()

    def __contains__(self, role_arn: object) -> bool:
        return role_arn in self._roles

    async def credentials(self, role_arn: str) -> RoleCredentials:
        """The role's credentials source, assuming the role first if it is new.

        Raises `MaxRolesExceeded` for a new role beyond the bound, or the AssumeRole error.
        """
        known = self._roles.get(role_arn)
        if known is not None:
            return known
        pending = self._pending.get(role_arn)
        if pending is None:
            if len(self._roles) + len(self._pending) >= self.max_roles:
                raise MaxRolesExceeded(
                    f"{len(self._roles) + len(self._pending)} roles are in use, the most "
                    f"SECRETCACHE_MAX_ROLES={self.max_roles} allows; {role_arn} was not assumed "
                    "(raise SECRETCACHE_MAX_ROLES to read through more roles)"
                )
            pending = RoleCredentials(role_arn, self._assume, self._clock)
            self._pending[role_arn] = pending
        try:
            await pending.get()
        except BaseException:
            if not pending.assumed and self._pending.get(role_arn) is pending:
                del self._pending[role_arn]
            raise
        if self._pending.get(role_arn) is pending:
            del self._pending[role_arn]
            self._roles[role_arn] = pending
        return self._roles.get(role_arn, pending)
