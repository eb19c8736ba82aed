"""The asyncio client: the same calls as :mod:`secretcache_client`, as coroutines.

The calls themselves live in :mod:`._calls`, shared with the blocking client; this module
only moves their bytes over asyncio streams (no dependencies) and keeps connections alive
between calls made on the same event loop.

    from secretcache_client.aio import get_secret

    async def handler_main():
        password = await get_secret("prod/db", transform="json")
"""

from __future__ import annotations

import asyncio
import contextlib

from . import _calls as calls
from . import _protocol as proto
from ._attempts import Attempt, Attempts, Stale, Starting, timed_out
from .errors import (
    AccessDenied,
    BadRequest,
    ExtensionUnavailable,
    SecretcacheError,
    SecretNotFound,
    Throttled,
    TransformError,
    Unauthorized,
    UpstreamError,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType
    from typing import Any, Concatenate, ParamSpec, TypeVar

    P = ParamSpec("P")
    T = TypeVar("T")

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "BadRequest",
    "ExtensionUnavailable",
    "SecretNotFound",
    "SecretcacheError",
    "Throttled",
    "TransformError",
    "Unauthorized",
    "UpstreamError",
    "default_client",
    "get_parameter",
    "get_parameters_by_path",
    "get_secret",
    "get_secret_value",
    "kms_decrypt",
]

_RECEIVE_SIZE = 65536


class _Connection:
    """One kept-alive stream pair to the extension."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> proto.Answer:
        """Send one request and read its answer."""
        self.writer.write(request)
        await self.writer.drain()
        parser = proto.ResponseParser()
        while (answer := parser.feed(await self.reader.read(_RECEIVE_SIZE))) is None:
            pass
        return answer

    def close(self) -> None:
        # RuntimeError: its event loop is closed; the transport closes itself when collected.
        with contextlib.suppress(RuntimeError):
            self.writer.close()


def _awaitable(
    read: Callable[Concatenate[calls.BaseClient, P], calls.Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """``read`` as an AsyncClient coroutine method: build the call, perform it."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._perform(read(self, *args, **kwargs))

    return calls.as_method(method, read, "AsyncClient")


class AsyncClient(calls.BaseClient):
    """Asyncio counterpart of :class:`secretcache_client.Client`; same settings and calls.

    Connections are kept per event loop: a handler that calls ``asyncio.run`` on every
    invoke gets a fresh connection each time (the old loop's are dropped).
    """

    get_secret = _awaitable(calls.get_secret)
    get_secret_value = _awaitable(calls.get_secret_value)
    get_parameter = _awaitable(calls.get_parameter)
    get_parameters_by_path = _awaitable(calls.get_parameters_by_path)
    kms_decrypt = _awaitable(calls.kms_decrypt)

    _loop: asyncio.AbstractEventLoop | None = None  # the loop the idle connections belong to

    async def aclose(self) -> None:
        """Close the idle connections; the client stays usable and reconnects on demand."""
        idle = self._pool.drain()
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(OSError, RuntimeError):
                await conn.writer.wait_closed()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- transport ----------------------------------------------------------------------

    async def _perform(self, call: calls.Call[T]) -> T:
        """Attempt ``call`` until an answer is final (see :class:`._attempts.Attempts`)."""
        attempts = Attempts(self.timeout, self.retries)
        while True:
            try:
                outcome = await asyncio.wait_for(
                    self._attempt(call.request, attempts.fresh), attempts.budget()
                )
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                raise timed_out(self.timeout) from None
            answer = attempts.settle(outcome)
            if answer is not None:
                return call.result(answer)
            await asyncio.sleep(attempts.delay)

    async def _attempt(self, request: bytes, fresh: bool) -> proto.Answer | Starting | Stale:
        self._forget_other_loops()
        with Attempt(self._pool, fresh, self.timeout) as attempt:
            if attempt.conn is None:
                attempt.conn = _Connection(*await asyncio.open_connection("127.0.0.1", self.port))
            attempt.answered(await attempt.conn.exchange(request))
        return attempt.outcome

    def _forget_other_loops(self) -> None:
        """Close the idle connections if they belong to another event loop than this one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for conn in self._pool.drain():
                conn.close()
            self._loop = loop


default_client = AsyncClient()
"""The instance behind the module-level coroutines (port and token from the environment)."""

get_secret = default_client.get_secret
get_secret_value = default_client.get_secret_value
get_parameter = default_client.get_parameter
get_parameters_by_path = default_client.get_parameters_by_path
kms_decrypt = default_client.kms_decrypt
