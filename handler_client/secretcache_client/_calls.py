"""The client's calls, without I/O: settings, the five reads, and start-up retries.

:class:`~secretcache_client.Client` (blocking sockets) and
:class:`~secretcache_client.aio.AsyncClient` (asyncio streams) are only transports: each
moves a :class:`Call`'s request bytes to the extension and the answer back. Everything they
must agree on is here, once, so they cannot drift:

- :class:`BaseClient`: the settings both take, validated in one place;
- the reads (:func:`get_secret`, ...): each turns its arguments into a :class:`Call`, the
  request plus how the answer becomes the caller's result. ``Client`` binds each one as a
  blocking method, ``AsyncClient`` as a coroutine method, from the same function, so a read
  added here appears on both;
- :class:`Attempts`: how long each attempt may take, and whether and when to retry while
  the extension starts;
- :func:`failure_outcome`: what an exception from a connection means for the call.
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock

from . import _protocol as proto
from .errors import ExtensionUnavailable

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Generic, Literal, Protocol, TypeVar, overload

    class _Closable(Protocol):
        def close(self) -> None: ...

    T = TypeVar("T")
    F = TypeVar("F", bound=Callable[..., Any])
    C = TypeVar("C", bound=_Closable)
else:
    # Generic to type checkers only: at run time a subscript such as Call[T] appears only in
    # annotations, which are never evaluated, and Generic[...] as a base is plain object.
    T = C = None

    class Generic:
        def __class_getitem__(cls, item: object) -> type:
            return object


_FIRST_BACKOFF = 0.005
_MAX_BACKOFF = 0.1
MIN_ATTEMPT = 0.01
"""No attempt starts with less time than this left: it could not finish."""


class BaseClient:
    """The settings shared by ``Client`` and ``AsyncClient``.

    ``timeout`` bounds each call, start-up retries included; ``retries`` caps those
    retries (``None``: as many as fit in ``timeout``); at most ``max_idle_connections``
    kept-alive connections stay open between calls.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        token: str | None = None,
        timeout: float = 3.0,
        retries: int | None = None,
        max_idle_connections: int = 4,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries is not None and retries < 0:
            raise ValueError("retries must be >= 0 or None")
        if token is not None:
            proto.resolve_token(token)  # reject an unusable token now, not per call
        self._port = None if port is None else proto.resolve_port(port)
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self._pool: IdlePool[Any] = IdlePool(max_idle_connections)

    def __repr__(self) -> str:
        # Never the token.
        return (
            f"{type(self).__name__}(port={self.port}, timeout={self.timeout!r}, "
            f"retries={self.retries!r})"
        )

    @property
    def port(self) -> int:
        """The extension's port (resolved from the environment on first use)."""
        if self._port is None:
            self._port = proto.resolve_port(None)
        return self._port

    def prepare(
        self, method: str, path: str, body: bytes | None, shape: Callable[[dict[str, Any]], T]
    ) -> Call[T]:
        """The Call for one request, with the token as it is now."""
        token = proto.resolve_token(self._token)
        return Call(proto.request_bytes(method, path, self.port, body, token), token, shape)


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


class Call(Generic[T]):
    """One prepared request and how its answer becomes the caller's result."""

    __slots__ = ("request", "shape", "token")

    def __init__(
        self, request: bytes, token: str | None, shape: Callable[[dict[str, Any]], T]
    ) -> None:
        self.request = request
        self.token = token  # kept to scrub it out of error text
        self.shape = shape

    def result(self, answer: proto.Answer) -> T:
        """The result of a final answer, or the typed exception for an error answer."""
        if answer.status != 200:
            raise proto.error_for(answer.status, answer.body, self.token)
        return self.shape(proto.parse_success(answer.body))


# -- the reads: one function each, bound onto both clients ---------------------------------


def as_method(method: F, read: Callable[..., Any], owner: str) -> F:
    """Give ``method`` (a client's binding of ``read``) the read's name, docs and signature."""
    method.__name__ = read.__name__
    method.__qualname__ = f"{owner}.{read.__name__}"
    method.__doc__ = read.__doc__
    method.__wrapped__ = read  # type: ignore[attr-defined]  # inspect.signature follows it
    return method


if TYPE_CHECKING:  # the overloads matter only to type checkers

    @overload
    def get_secret(
        client: BaseClient,
        secret_id: str,
        *,
        version_id: str | None = ...,
        version_stage: str | None = ...,
        transform: None = ...,
        refresh: bool = ...,
    ) -> Call[str | bytes]: ...
    @overload
    def get_secret(
        client: BaseClient,
        secret_id: str,
        *,
        version_id: str | None = ...,
        version_stage: str | None = ...,
        transform: Literal["binary"],
        refresh: bool = ...,
    ) -> Call[bytes]: ...
    @overload
    def get_secret(
        client: BaseClient,
        secret_id: str,
        *,
        version_id: str | None = ...,
        version_stage: str | None = ...,
        transform: Literal["json", "auto"],
        refresh: bool = ...,
    ) -> Call[Any]: ...


def get_secret(
    client: BaseClient,
    secret_id: str,
    *,
    version_id: str | None = None,
    version_stage: str | None = None,
    transform: proto.Transform | None = None,
    refresh: bool = False,
) -> Call[Any]:
    """A secret's value: ``SecretString`` (str) or ``SecretBinary`` (bytes).

    ``transform``: ``"json"`` parses it, ``"binary"`` base64-decodes a SecretString
    (a SecretBinary is returned as is), ``"auto"`` picks by the id's ``.json`` /
    ``.binary`` suffix. ``refresh=True`` makes the extension re-read it from AWS.
    """
    proto.check_transform(transform, parameter=False)
    path = proto.secret_path(secret_id, version_id, version_stage, refresh)
    return client.prepare(
        "GET", path, None, lambda document: proto.secret_result(document, secret_id, transform)
    )


def get_secret_value(
    client: BaseClient,
    secret_id: str,
    *,
    version_id: str | None = None,
    version_stage: str | None = None,
    refresh: bool = False,
) -> Call[dict[str, Any]]:
    """The whole GetSecretValue answer (``ARN``, ``Name``, ``SecretString``, ...)."""
    path = proto.secret_path(secret_id, version_id, version_stage, refresh)
    return client.prepare("GET", path, None, _whole)


def _whole(document: dict[str, Any]) -> dict[str, Any]:
    return document


if TYPE_CHECKING:  # the overloads matter only to type checkers

    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: None = ...,
        refresh: bool = ...,
    ) -> Call[str]: ...
    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: Literal["list"],
        refresh: bool = ...,
    ) -> Call[list[str]]: ...
    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: Literal["binary"],
        refresh: bool = ...,
    ) -> Call[bytes]: ...
    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: Literal["json", "auto"],
        refresh: bool = ...,
    ) -> Call[Any]: ...


def get_parameter(
    client: BaseClient,
    name: str,
    *,
    decrypt: bool = True,
    version: int | str | None = None,
    label: str | None = None,
    transform: proto.ParameterTransform | None = None,
    refresh: bool = False,
) -> Call[Any]:
    """A Parameter Store value (SecureStrings decrypted unless ``decrypt=False``).

    ``version`` or ``label`` selects one; ``transform="list"`` splits a StringList.
    """
    proto.check_transform(transform, parameter=True)
    path = proto.parameter_path(name, decrypt, version, label, refresh)
    return client.prepare(
        "GET", path, None, lambda document: proto.parameter_result(document, name, transform)
    )


def get_parameters_by_path(
    client: BaseClient,
    path: str,
    *,
    decrypt: bool = True,
    recursive: bool = False,
    refresh: bool = False,
) -> Call[dict[str, str]]:
    """Every parameter under ``path`` as {full name: value} (secretcache only)."""
    query = proto.parameters_by_path_path(path, decrypt, recursive, refresh)
    return client.prepare("GET", query, None, proto.parameters_by_path_result)


def kms_decrypt(
    client: BaseClient,
    ciphertext: bytes | str,
    *,
    encryption_context: Mapping[str, str] | None = None,
    key_id: str | None = None,
) -> Call[bytes]:
    """KMS Decrypt through the extension; ``str`` ciphertext is taken as base64."""
    body = proto.decrypt_body(ciphertext, encryption_context, key_id)
    return client.prepare("POST", proto.DECRYPT_PATH, body, proto.plaintext_result)


READS = (get_secret, get_secret_value, get_parameter, get_parameters_by_path, kms_decrypt)
"""Every read; both clients bind each one, and a test holds them to it."""


# -- start-up retries and connection failures ----------------------------------------------


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
