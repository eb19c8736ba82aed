"""The synchronous client: the calls of :mod:`._calls` over kept-alive blocking sockets.

It speaks HTTP on a plain socket rather than through ``http.client``, whose import (the
``email`` package behind it) would cost a handler's cold start ~15 ms on its first read;
``socket`` itself is imported on the first request, not at import.
"""

from __future__ import annotations

import time

from . import _calls as calls
from . import _protocol as proto
from ._attempts import Attempt, Attempts, Stale, Starting
from ._attempts import backoff as backoff  # defined here before: still importable from here

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from types import TracebackType
    from typing import Concatenate, ParamSpec, TypeVar

    P = ParamSpec("P")
    T = TypeVar("T")

__all__ = ["Client"]

_RECEIVE_SIZE = 65536


class _Connection:
    """One kept-alive socket to the extension."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def exchange(self, request: bytes, timeout: float) -> proto.Answer:
        """Send one request and read its answer, each socket operation within ``timeout``."""
        self.sock.settimeout(timeout)
        self.sock.sendall(request)
        parser = proto.ResponseParser()
        while (answer := parser.feed(self.sock.recv(_RECEIVE_SIZE))) is None:
            pass
        return answer

    def close(self) -> None:
        self.sock.close()


def _blocking(
    read: Callable[Concatenate[calls.BaseClient, P], calls.Call[T]],
) -> Callable[Concatenate[Client, P], T]:
    """``read`` as a Client method: build the call, perform it, return its result."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._perform(read(self, *args, **kwargs))

    return calls.as_method(method, read, "Client")


class Client(calls.BaseClient):
    """Reads secrets, parameters and KMS decrypts from the secretcache extension.

    Holds a small pool of kept-alive connections (one, unless threads overlap), safe to
    share across threads and across ``fork()``. ``timeout`` bounds each call, start-up
    retries included; ``retries`` caps those retries (``None``: as many as fit in
    ``timeout``).
    """

    get_secret = _blocking(calls.get_secret)
    get_secret_value = _blocking(calls.get_secret_value)
    get_parameter = _blocking(calls.get_parameter)
    get_parameters_by_path = _blocking(calls.get_parameters_by_path)
    kms_decrypt = _blocking(calls.kms_decrypt)

    def close(self) -> None:
        """Close the idle connections; the client stays usable and reconnects on demand."""
        for conn in self._pool.drain():
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------

    def _perform(self, call: calls.Call[T]) -> T:
        """Attempt ``call`` until an answer is final (see :class:`._attempts.Attempts`)."""
        attempts = Attempts(self.timeout, self.retries)
        while True:
            answer = attempts.settle(self._attempt(call.request, attempts))
            if answer is not None:
                return call.result(answer)
            time.sleep(attempts.delay)

    def _attempt(self, request: bytes, attempts: Attempts) -> proto.Answer | Starting | Stale:
        budget = attempts.budget()  # each socket operation's timeout
        with Attempt(self._pool, attempts.fresh, self.timeout) as attempt:
            if attempt.conn is None:
                attempt.conn = self._connect(budget)
            attempt.answered(attempt.conn.exchange(request, budget))
        return attempt.outcome

    def _connect(self, timeout: float) -> _Connection:
        import socket

        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock)
