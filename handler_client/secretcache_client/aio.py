"""The asyncio client: the same calls as :mod:`secretcache_client`, as coroutines.

Speaks HTTP/1.1 over asyncio streams itself (no dependencies) and keeps connections
alive between calls made on the same event loop.

    from secretcache_client.aio import get_secret

    async def handler_main():
        password = await get_secret("prod/db", transform="json")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from . import _protocol as proto
from .client import _MIN_ATTEMPT, backoff
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
    from collections.abc import Mapping
    from types import TracebackType
    from typing import Any, Literal, overload

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
    "get_secret",
    "get_secret_value",
    "kms_decrypt",
]


class _Starting(Exception):
    """The extension is starting (or absent): refused, or reset before any answer."""


class _Connection:
    """One kept-alive stream pair to the extension."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        # RuntimeError: its event loop is closed; the transport closes itself when collected.
        with contextlib.suppress(RuntimeError):
            self.writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection may be reused."""
    while True:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed before a response")
        version, status = proto.status_of(status_line)
        headers: dict[bytes, bytes] = {}
        for _ in range(proto.MAX_HEADER_LINES):
            line = await reader.readline()
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
        while (size := proto.chunk_size(await reader.readline())) > 0:
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return status, b"".join(chunks), keep_alive
    if kind == "length":
        return status, await reader.readexactly(length), keep_alive
    return status, await reader.read(), False  # delimited by the server closing


class AsyncClient:
    """Asyncio counterpart of :class:`secretcache_client.Client`; same settings.

    Connections are kept per event loop: a handler that calls ``asyncio.run`` on every
    invoke gets a fresh connection each time (the old loop's are dropped).
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
            proto.resolve_token(token)
        self._port = None if port is None else proto.resolve_port(port)
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self._max_idle = max(0, max_idle_connections)
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"AsyncClient(port={self.port}, timeout={self.timeout!r}, retries={self.retries!r})"

    @property
    def port(self) -> int:
        """The extension's port (resolved from the environment on first use)."""
        if self._port is None:
            self._port = proto.resolve_port(None)
        return self._port

    # -- public API ---------------------------------------------------------------------

    if TYPE_CHECKING:  # the overloads matter only to type checkers

        @overload
        async def get_secret(
            self,
            secret_id: str,
            *,
            version_id: str | None = ...,
            version_stage: str | None = ...,
            transform: None = ...,
            refresh: bool = ...,
        ) -> str | bytes: ...
        @overload
        async def get_secret(
            self,
            secret_id: str,
            *,
            version_id: str | None = ...,
            version_stage: str | None = ...,
            transform: Literal["binary"],
            refresh: bool = ...,
        ) -> bytes: ...
        @overload
        async def get_secret(
            self,
            secret_id: str,
            *,
            version_id: str | None = ...,
            version_stage: str | None = ...,
            transform: Literal["json", "auto"],
            refresh: bool = ...,
        ) -> Any: ...

    async def get_secret(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        transform: proto.Transform | None = None,
        refresh: bool = False,
    ) -> Any:
        """A secret's value; see :meth:`secretcache_client.Client.get_secret`."""
        proto.check_transform(transform, parameter=False)
        document = await self.get_secret_value(
            secret_id, version_id=version_id, version_stage=version_stage, refresh=refresh
        )
        return proto.secret_result(document, secret_id, transform)

    async def get_secret_value(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """The whole GetSecretValue answer (``ARN``, ``Name``, ``SecretString``, ...)."""
        path = proto.secret_path(secret_id, version_id, version_stage, refresh)
        return await self._call("GET", path, None)

    if TYPE_CHECKING:  # the overloads matter only to type checkers

        @overload
        async def get_parameter(
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
        async def get_parameter(
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
        async def get_parameter(
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
        async def get_parameter(
            self,
            name: str,
            *,
            decrypt: bool = ...,
            version: int | str | None = ...,
            label: str | None = ...,
            transform: Literal["json", "auto"],
            refresh: bool = ...,
        ) -> Any: ...

    async def get_parameter(
        self,
        name: str,
        *,
        decrypt: bool = True,
        version: int | str | None = None,
        label: str | None = None,
        transform: proto.ParameterTransform | None = None,
        refresh: bool = False,
    ) -> Any:
        """A Parameter Store value; see :meth:`secretcache_client.Client.get_parameter`."""
        proto.check_transform(transform, parameter=True)
        path = proto.parameter_path(name, decrypt, version, label, refresh)
        return proto.parameter_result(await self._call("GET", path, None), name, transform)

    async def get_parameters_by_path(
        self, path: str, *, decrypt: bool = True, recursive: bool = False, refresh: bool = False
    ) -> dict[str, str]:
        """Every parameter under ``path``; see :meth:`Client.get_parameters_by_path`."""
        query = proto.parameters_by_path_path(path, decrypt, recursive, refresh)
        return proto.parameters_by_path_result(await self._call("GET", query, None))

    async def kms_decrypt(
        self,
        ciphertext: bytes | str,
        *,
        encryption_context: Mapping[str, str] | None = None,
        key_id: str | None = None,
    ) -> bytes:
        """KMS Decrypt through the extension; ``str`` ciphertext is taken as base64."""
        body = proto.decrypt_body(ciphertext, encryption_context, key_id)
        return proto.plaintext_result(await self._call("POST", proto.DECRYPT_PATH, body))

    async def aclose(self) -> None:
        """Close the idle connections; the client stays usable and reconnects on demand."""
        idle, self._idle = self._idle, []
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

    async def _call(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        """One request, retried while the extension starts, within ``self.timeout``."""
        token = proto.resolve_token(self._token)
        request = proto.request_bytes(method, path, self.port, body, token)
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                status, data = await asyncio.wait_for(self._exchange(request), remaining)
            except _Starting as exc:
                reason = f"{exc}: is the extension running?"
            except asyncio.TimeoutError:
                raise ExtensionUnavailable(
                    f"no answer from the extension within {self.timeout:g} s",
                    error_type="Timeout",
                ) from None
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
            await asyncio.sleep(delay)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        conn = self._take_idle()
        # A kept-alive connection the extension has since closed fails on first use; that
        # earns one retry on a fresh connection. Decrypt is retried too: it has no effects.
        retry_stale = conn is not None
        while True:
            if conn is None:
                conn = await self._open()
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                status, data, keep_alive = await _read_response(conn.reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
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
                conn.close()  # cancelled or timed out mid-exchange: the stream is out of step
                raise
            if keep_alive and len(self._idle) < self._max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            return status, data

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except ConnectionRefusedError:
            raise _Starting("connection refused") from None
        except OSError as exc:
            raise ExtensionUnavailable(
                f"cannot connect to the extension ({type(exc).__name__})"
            ) from exc
        return _Connection(reader, writer)

    def _take_idle(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pid != os.getpid():
            # Streams belong to the loop (and process) that opened them.
            stale, self._idle = self._idle, []
            for conn in stale:
                conn.close()
            self._loop = loop
            self._pid = os.getpid()
        return self._idle.pop() if self._idle else None


default_client = AsyncClient()
"""The instance behind the module-level coroutines (port and token from the environment)."""

get_secret = default_client.get_secret
get_secret_value = default_client.get_secret_value
get_parameter = default_client.get_parameter
kms_decrypt = default_client.kms_decrypt
