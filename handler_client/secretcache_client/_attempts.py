"""How one call is attempted, without I/O: connections, failures and start-up retries.

Both transports run each :class:`~._calls.Call` the same way: an :class:`Attempt` takes an
idle connection from the :class:`IdlePool` (or the transport opens one), the transport
exchanges the bytes, and :class:`Attempts` decides from the outcome whether the answer is
final or the call waits and tries again while the extension starts.
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock

from . import _protocol as proto
from .errors import ExtensionUnavailable

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Generic, Protocol, TypeVar

    class _Closable(Protocol):
        def close(self) -> None: ...

    C = TypeVar("C", bound=_Closable)
else:
    # Generic to type checkers only: at run time a subscript such as IdlePool[C] appears only
    # in annotations, which are never evaluated, and Generic[...] as a base is plain object.
    C = None

    class Generic:
        def __class_getitem__(cls, item: object) -> type:
            return object


_FIRST_BACKOFF = 0.005
_MAX_BACKOFF = 0.1
MIN_ATTEMPT = 0.01
"""No attempt starts with less time than this left: it could not finish."""


class IdlePool(Generic[C]):
    """Kept-alive connections between calls, at most ``size``; safe across threads, and a
    forked child never reuses its parent's sockets."""

    __slots__ = ("_idle", "_lock", "_pid", "size")

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._idle: list[C] = []
        self._lock = allocate_lock()
        self._pid = os.getpid()

    def take(self) -> C | None:
        """An idle connection, or ``None``."""
        with self._lock:
            if self._pid != os.getpid():
                self._idle = []  # the parent's sockets: a forked child must not share them
                self._pid = os.getpid()
            return self._idle.pop() if self._idle else None

    def put(self, conn: C) -> None:
        """Keep ``conn`` for a later call, or close it if the pool is full."""
        with self._lock:
            if len(self._idle) < self.size and self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()

    def drain(self) -> list[C]:
        """Remove and return every idle connection (the caller closes them)."""
        with self._lock:
            idle, self._idle = self._idle, []
        return idle


class Starting:
    """Outcome of an attempt that reached no extension (refused, or reset before any
    answer): it may still be starting, so the call retries with backoff."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Stale:
    """Outcome of an attempt on a kept-alive connection the extension had closed while idle:
    retried at once on a new connection (Decrypt too: it has no side effects)."""

    __slots__ = ()


STALE = Stale()


def backoff(attempt: int) -> float:
    """Delay before start-up retry number ``attempt`` (1-based): 5 ms doubling to 100 ms."""
    return min(_FIRST_BACKOFF * 2.0 ** (attempt - 1), _MAX_BACKOFF)


class Attempts:
    """The attempts of one call: each one's time budget, and what to do with its outcome.

    An answer is final unless it is AWS's extension's ``not ready to serve traffic``; a
    final answer ends the call. Otherwise the call waits ``delay`` and tries again, until
    ``retries`` or the time budget run out (then :class:`ExtensionUnavailable`). A
    :class:`Stale` outcome is retried at once on a fresh connection and does not count.
    """

    __slots__ = ("_clock", "_deadline", "_retries", "_timeout", "count", "delay", "fresh")

    def __init__(
        self, timeout: float, retries: int | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._deadline = clock() + timeout
        self._timeout = timeout
        self._retries = retries
        self.count = 0  # attempts settled so far, stale ones aside
        self.delay = 0.0  # wait before the next attempt
        self.fresh = False  # the next attempt must open a new connection

    def budget(self) -> float:
        """Time the next attempt may take: what is left of the call's timeout."""
        return max(self._deadline - self._clock(), 0.001)

    def settle(self, outcome: proto.Answer | Starting | Stale) -> proto.Answer | None:
        """The final answer, or ``None`` to wait ``delay`` and try again."""
        if isinstance(outcome, Stale):
            self.fresh, self.delay = True, 0.0
            return None
        self.fresh = False
        self.count += 1
        if isinstance(outcome, Starting):
            reason = f"{outcome.reason}: is the extension running?"
        elif proto.is_not_ready(outcome.status, outcome.body):
            reason = "the extension is not ready to serve traffic"
        else:
            return outcome
        self.delay = backoff(self.count)
        # Give up rather than start an attempt with too little time left to finish it.
        out_of_time = self._clock() + self.delay + MIN_ATTEMPT >= self._deadline
        if out_of_time or (self._retries is not None and self.count > self._retries):
            raise proto.unavailable(reason, self.count, self._timeout)
        return None


def timed_out(timeout: float) -> ExtensionUnavailable:
    """The error for a call whose attempt got no answer within the time left."""
    return ExtensionUnavailable(
        f"no answer from the extension within {timeout:g} s", error_type="Timeout"
    )


class Attempt(Generic[C]):
    """One attempt's connection, around the transport's I/O as a context manager.

    The connection is an idle one from the pool (unless the attempt must be ``fresh``) or
    the one the transport opens into :attr:`conn`; it goes back to the pool after a
    kept-alive answer and is closed after anything else. A connection failure inside the
    block becomes the attempt's :attr:`outcome` (see :func:`failure_outcome`).
    """

    __slots__ = ("_outcome", "_pool", "_reused", "_timeout", "conn")

    def __init__(self, pool: IdlePool[C], fresh: bool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self.conn: C | None = None if fresh else pool.take()
        self._reused = self.conn is not None
        self._outcome: proto.Answer | Starting | Stale | None = None

    def answered(self, answer: proto.Answer) -> None:
        """Record the answer the transport read."""
        self._outcome = answer

    @property
    def outcome(self) -> proto.Answer | Starting | Stale:
        """The answer, or what the connection's failure means for the call."""
        if self._outcome is None:
            raise RuntimeError("the attempt has not finished")
        return self._outcome

    def __enter__(self) -> Attempt[C]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        conn = self.conn
        answer = self._outcome
        if exc is None and isinstance(answer, proto.Answer) and conn is not None:
            if answer.keep_alive:
                self._pool.put(conn)
            else:
                conn.close()
            return False
        if conn is not None:
            conn.close()  # interrupted mid-exchange, or failed: the stream is out of step
        if exc is None:
            return False
        self._outcome = failure_outcome(
            exc, connected=conn is not None, reused=self._reused, timeout=self._timeout
        )
        return self._outcome is not None  # swallow only the failures it turned into outcomes


def failure_outcome(
    exc: BaseException, *, connected: bool, reused: bool, timeout: float
) -> Starting | Stale | None:
    """What ``exc``, raised while connecting or exchanging, means for the call.

    A refusal, or a reset before any answer on a new connection, is a starting extension
    (a starting extension handing its pre-bound socket over resets); a failure on a reused
    connection is a stale one. Timeouts and other failures raise ExtensionUnavailable.
    ``None``: not a connection failure (an interrupt, a cancellation); let it propagate.
    """
    if isinstance(exc, TimeoutError):
        raise timed_out(timeout) from exc
    if isinstance(exc, proto.MalformedResponse):
        raise ExtensionUnavailable(f"unreadable answer from the extension ({exc})") from None
    if not isinstance(exc, OSError):
        return None
    if not connected:
        if isinstance(exc, ConnectionRefusedError):
            return Starting("connection refused")
        raise ExtensionUnavailable(
            f"cannot connect to the extension ({type(exc).__name__})"
        ) from exc
    if reused:
        return STALE
    if isinstance(exc, ConnectionError):
        return Starting("connection reset")
    raise ExtensionUnavailable(
        f"connection to the extension failed ({type(exc).__name__})"
    ) from exc
