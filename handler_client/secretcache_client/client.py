"""The synchronous client: kept-alive HTTP/1.1 connections to the extension.

It speaks HTTP on a plain socket rather than through ``http.client``, whose import (the
``email`` package behind it) would cost a handler's cold start ~15 ms on its first read;
``socket`` itself is imported on the first request, not at import.
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock

from . import _protocol as proto
from .errors import ExtensionUnavailable

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    import socket
    from collections.abc import Mapping
    from types import TracebackType
    from typing import Any, Literal, overload

__all__ = ["Client"]

_FIRST_BACKOFF = 0.005
_MAX_BACKOFF = 0.1
_MIN_ATTEMPT = 0.01


class _Starting(Exception):
    """The extension is starting (or absent): refused, or reset before any answer."""


class _Connection:
    """One kept-alive socket to the extension, with a buffered reader over it."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes, bool]:
        """Send one request; status, body and whether the connection may be reused."""
        self.sock.settimeout(timeout)
        self.sock.sendall(request)
        reader = self.reader
        while True:
            status_line = reader.readline(65537)
            if not status_line:
                raise ConnectionResetError("connection closed before a response")
            version, status = proto.status_of(status_line)
            headers: dict[bytes, bytes] = {}
            for _ in range(proto.MAX_HEADER_LINES):
                line = reader.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
                proto.add_header(headers, line)
            else:
                raise proto.MalformedResponse("too many header lines")
            if status >= 200:
                break  # 1xx answers are followed by the real one
        kind, length, keep_alive = proto.framing(version, status, headers)
        if kind == "chunked":
            chunks: list[bytes] = []
            while (size := proto.chunk_size(reader.readline(65537))) > 0:
                chunks.append(self._exactly(size))
                self._exactly(2)
            while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return status, b"".join(chunks), keep_alive
        if kind == "length":
            return status, self._exactly(length), keep_alive
        return status, reader.read(), False  # delimited by the server closing

    def _exactly(self, size: int) -> bytes:
        data = self.reader.read(size)
        if len(data) != size:
            raise ConnectionResetError("connection closed inside a response")
        return data

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def backoff(attempt: int) -> float:
    """Delay before start-up retry number ``attempt`` (1-based): 5 ms doubling to 100 ms."""
    return min(_FIRST_BACKOFF * 2.0 ** (attempt - 1), _MAX_BACKOFF)


class Client:
    """Reads secrets, parameters and KMS decrypts from the secretcache extension.

    Holds a small pool of kept-alive connections (one, unless threads overlap), safe to
    share across threads. ``timeout`` bounds each call, start-up retries included;
    ``retries`` caps those retries (``None``: as many as fit in ``timeout``).
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
        self._max_idle = max(0, max_idle_connections)
        self._idle: list[_Connection] = []
        self._lock = allocate_lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        # Never the token.
        return f"Client(port={self.port}, timeout={self.timeout!r}, retries={self.retries!r})"

    @property
    def port(self) -> int:
        """The extension's port (resolved from the environment on first use)."""
        if self._port is None:
            self._port = proto.resolve_port(None)
        return self._port

    # -- public API ---------------------------------------------------------------------

    if TYPE_CHECKING:  # the overloads matter only to type checkers

        @overload
        def get_secret(
            self,
            secret_id: str,
            *,
            version_id: str | None = ...,
            version_stage: str | None = ...,
            transform: None = ...,
            refresh: bool = ...,
        ) -> str | bytes: ...
        @overload
        def get_secret(
            self,
            secret_id: str,
            *,
            version_id: str | None = ...,
            version_stage: str | None = ...,
            transform: Literal["binary"],
            refresh: bool = ...,
        ) -> bytes: ...
        @overload
        def get_secret(
            self,
            secret_id: str,
            *,
            version_id: str | None = ...,
            version_stage: str | None = ...,
            transform: Literal["json", "auto"],
            refresh: bool = ...,
        ) -> Any: ...

    def get_secret(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        transform: proto.Transform | None = None,
        refresh: bool = False,
    ) -> Any:
        """A secret's value: ``SecretString`` (str) or ``SecretBinary`` (bytes).

        ``transform``: ``"json"`` parses it, ``"binary"`` base64-decodes a SecretString
        (a SecretBinary is returned as is), ``"auto"`` picks by the id's ``.json`` /
        ``.binary`` suffix. ``refresh=True`` makes the extension re-read it from AWS.
        """
        proto.check_transform(transform, parameter=False)
        document = self.get_secret_value(
            secret_id, version_id=version_id, version_stage=version_stage, refresh=refresh
        )
        return proto.secret_result(document, secret_id, transform)

    def get_secret_value(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """The whole GetSecretValue answer (``ARN``, ``Name``, ``SecretString``, ...)."""
        path = proto.secret_path(secret_id, version_id, version_stage, refresh)
        return self._call("GET", path, None)

    if TYPE_CHECKING:  # the overloads matter only to type checkers

        @overload
        def get_parameter(
            self,
            name: str,
            *,
            decrypt: bool = ...,
            version: int | str | None = ...,
            label: str | None = ...,
            transform: None = ...,
            refresh: bool = ...,
        ) -> str: ...
        @overload
        def get_parameter(
            self,
            name: str,
            *,
            decrypt: bool = ...,
            version: int | str | None = ...,
            label: str | None = ...,
            transform: Literal["list"],
            refresh: bool = ...,
        ) -> list[str]: ...
        @overload
        def get_parameter(
            self,
            name: str,
            *,
            decrypt: bool = ...,
            version: int | str | None = ...,
            label: str | None = ...,
            transform: Literal["binary"],
            refresh: bool = ...,
        ) -> bytes: ...
        @overload
        def get_parameter(
            self,
            name: str,
            *,
            decrypt: bool = ...,
            version: int | str | None = ...,
            label: str | None = ...,
            transform: Literal["json", "auto"],
            refresh: bool = ...,
        ) -> Any: ...

    def get_parameter(
        self,
        name: str,
        *,
        decrypt: bool = True,
        version: int | str | None = None,
        label: str | None = None,
        transform: proto.ParameterTransform | None = None,
        refresh: bool = False,
    ) -> Any:
        """A Parameter Store value (SecureStrings decrypted unless ``decrypt=False``).

        ``version`` or ``label`` selects one; ``transform="list"`` splits a StringList.
        """
        proto.check_transform(transform, parameter=True)
        path = proto.parameter_path(name, decrypt, version, label, refresh)
        return proto.parameter_result(self._call("GET", path, None), name, transform)

    def get_parameters_by_path(
        self, path: str, *, decrypt: bool = True, recursive: bool = False, refresh: bool = False
    ) -> dict[str, str]:
        """Every parameter under ``path`` as {full name: value} (secretcache only)."""
        query = proto.parameters_by_path_path(path, decrypt, recursive, refresh)
        return proto.parameters_by_path_result(self._call("GET", query, None))

    def kms_decrypt(
        self,
        ciphertext: bytes | str,
        *,
        encryption_context: Mapping[str, str] | None = None,
        key_id: str | None = None,
    ) -> bytes:
        """KMS Decrypt through the extension; ``str`` ciphertext is taken as base64."""
        body = proto.decrypt_body(ciphertext, encryption_context, key_id)
        return proto.plaintext_result(self._call("POST", proto.DECRYPT_PATH, body))

    def close(self) -> None:
        """Close the idle connections; the client stays usable and reconnects on demand."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
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

    def _call(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        """One request, retried while the extension starts, within ``self.timeout``."""
        token = proto.resolve_token(self._token)
        request = proto.request_bytes(method, path, self.port, body, token)
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            try:
                status, data = self._exchange(request, max(remaining, 0.001))
            except _Starting as exc:
                reason = f"{exc}: is the extension running?"
            else:
                if not proto.is_not_ready(status, data):
                    if status == 200:
                        return proto.parse_success(data)
                    raise proto.error_for(status, data, token)
                reason = "the extension is not ready to serve traffic"
            delay = backoff(attempts)
            # Give up rather than start an attempt with too little time left to finish it.
            out_of_time = time.monotonic() + delay + _MIN_ATTEMPT >= deadline
            if out_of_time or (self.retries is not None and attempts > self.retries):
                raise proto.unavailable(reason, attempts, self.timeout)
            time.sleep(delay)

    def _exchange(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        conn = self._take_idle()
        # A kept-alive connection the extension has since closed fails on first use; that
        # earns one retry on a fresh connection. Decrypt is retried too: it has no effects.
        retry_stale = conn is not None
        while True:
            if conn is None:
                conn = self._open(timeout)
            try:
                status, data, keep_alive = conn.exchange(request, timeout)
            except TimeoutError as exc:
                conn.close()
                raise ExtensionUnavailable(
                    f"no answer from the extension within {self.timeout:g} s",
                    error_type="Timeout",
                ) from exc
            except OSError as exc:
                conn.close()
                conn = None
                if retry_stale:
                    retry_stale = False
                    continue
                if isinstance(exc, ConnectionError):
                    # Reset before any answer on a fresh connection: a starting extension
                    # (e.g. handing its pre-bound socket over) does this; retry like a refusal.
                    raise _Starting("connection reset") from None
                raise ExtensionUnavailable(
                    f"connection to the extension failed ({type(exc).__name__})"
                ) from exc
            except proto.MalformedResponse as exc:
                conn.close()
                raise ExtensionUnavailable(
                    f"unreadable answer from the extension ({exc})"
                ) from None
            except BaseException:
                conn.close()  # interrupted mid-exchange: the stream is out of step
                raise
            self._release(conn, keep_alive)
            return status, data

    def _open(self, timeout: float) -> _Connection:
        import socket

        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        except ConnectionRefusedError:
            raise _Starting("connection refused") from None
        except TimeoutError as exc:
            raise ExtensionUnavailable(
                f"no answer from the extension within {self.timeout:g} s", error_type="Timeout"
            ) from exc
        except OSError as exc:
            raise ExtensionUnavailable(
                f"cannot connect to the extension ({type(exc).__name__})"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock)

    def _take_idle(self) -> _Connection | None:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not share its parent's sockets.
                self._idle = []
                self._pid = os.getpid()
            return self._idle.pop() if self._idle else None

    def _release(self, conn: _Connection, keep_alive: bool) -> None:
        if keep_alive:
            with self._lock:
                if len(self._idle) < self._max_idle and self._pid == os.getpid():
                    self._idle.append(conn)
                    return
        conn.close()
