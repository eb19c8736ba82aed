"""The listener: an HTTP/1.1 fast path for the hot reads, handing everything else to aiohttp.

A cache hit through aiohttp costs ~45 us of server CPU (parser, request objects, middlewares);
the reads that dominate a function's traffic (`GET /secretsmanager/get`,
`GET /systemsmanager/parameters/get`, with the token, no body; `POST /kms/decrypt` with a JSON
body) need far less. This protocol serves exactly those requests, hits and misses, with the
same rules (`query.py`) and the same bytes from the same cache. Anything else (another path or
method, a body elsewhere, an unusual header, a request line, query or body the fast path would
reject) hands the connection to aiohttp for the rest of its life, so every rejection is still
rendered by the one error path in `server.py`.

It needs no aiohttp, so it serves as soon as the socket is bound; the first connection that needs
aiohttp starts loading it, and waits for it, as does any other meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import Callable
from typing import Any

from .cache import Lookup
from .errors import BadRequest, SecretcacheError, ServiceUnavailable
from .log import log, where
from .prefetch import kms_digest
from .query import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    decrypt_request,
    first,
    flag,
    parse_query_string,
    required,
    ssm_selector,
    token_matches,
)
from .reads import Reads
from .status import Status

_ROUTES = {
    (b"GET", b"/secretsmanager/get"): "secret",
    (b"GET", b"/secretsmanager/get/"): "secret",
    (b"GET", b"/systemsmanager/parameters/get"): "parameter",
    (b"GET", b"/systemsmanager/parameters/get/"): "parameter",
    # With a body (Content-Length only): a function that only decrypts never needs aiohttp.
    (b"POST", b"/kms/decrypt"): "decrypt",
    # No token (as in server.py): health checks should not load aiohttp either.
    (b"GET", b"/health"): "health",
}
#: `_plan`'s answer when a request's body has not fully arrived yet.
_NEED_MORE = object()
#: What the fast path takes (anything else goes to aiohttp's stricter parser): a target of
#: printable ASCII without space or fragment, token-character header names, no control bytes.
_TARGET = re.compile(rb"/[!-\"$-~]*")
_HEADER_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TOKEN_HEADERS = (b"x-aws-parameters-secrets-token", b"x-vault-token")
#: Headers whose presence means the request is not a plain bodiless GET.
_NOT_FAST = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"connection"})
_PHRASES = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
#: Unread bytes held while a miss is in flight before the socket stops being read.
_MAX_BUFFER = 64 * 1024


class FastPath:
    """Shared state of the listener: reads, access rules, live connections, the aiohttp hand-off."""

    def __init__(
        self,
        reads: Reads,
        status: Status,
        *,
        token: str,
        allowed_hosts: frozenset[str],
        max_connections: int,
    ) -> None:
        self.reads = reads
        self.cache = reads.cache
        self.token = token.encode("utf-8")
        self.allowed_hosts = frozenset(h.encode("latin-1") for h in allowed_hosts)
        self.max_connections = max_connections
        self.status = status
        #: Every connection we answer for, fast or handed off; weak so none is counted forever.
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        self._handoff: Callable[[Callable[[Any], None]], asyncio.Protocol] | None = None
        self._handoff_ready = asyncio.Event()
        #: Called once, by the first connection that needs aiohttp, to start loading it (so a
        #: function that only makes fast-path reads never pays aiohttp's ~15 MiB).
        self.load_handoff: Callable[[], None] | None = None
        self._date = b""
        self._date_second = -1

    def enable_handoff(
        self, make_protocol: Callable[[Callable[[Any], None]], asyncio.Protocol]
    ) -> None:
        """Install aiohttp: `make_protocol(on_lost)` builds a handler for one connection."""
        self._handoff = make_protocol
        self._handoff_ready.set()

    def protocol_factory(self) -> asyncio.Protocol:
        """For `loop.create_server`: refuse past the connection cap, else a fast-path protocol."""
        if len(self.live) >= self.max_connections:
            return RefusedConnection()
        protocol = FastPathProtocol(self)
        self.live.add(protocol)
        return protocol

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        return self._date

    def close_connections(self) -> None:
        """At shutdown: close fast-path connections (aiohttp closes the handed-off ones)."""
        for protocol in list(self.live):
            if isinstance(protocol, FastPathProtocol):
                protocol.close()

    async def hand_off(self, protocol: FastPathProtocol) -> None:
        if self._handoff is None:
            load, self.load_handoff = self.load_handoff, None
            if load is not None:
                load()
            await self._handoff_ready.wait()
        assert self._handoff is not None
        protocol.switch_to(self._handoff(self.live.discard))


class FastPathProtocol(asyncio.Protocol):
    """One connection: serves fast-path requests in order until it hands the connection off."""

    def __init__(self, hub: FastPath) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False  # a miss is in flight, or the connection is being handed off
        self.paused = False
        self.eof = False
        self.task: asyncio.Task[None] | None = None

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._serve_buffered()
        elif len(self.buffer) > _MAX_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        if not self.busy and self.transport is not None:
            self.transport.close()
        return True  # keep the write side open until a pending response is written

    def connection_lost(self, exc: BaseException | None) -> None:
        self.hub.live.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Serving --------------------------------------------------------------------------------

    def _serve_buffered(self) -> None:
        hub = self.hub
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._hand_off()
                return
            if end + 4 > MAX_HEADER_BYTES or hub.status.closing:
                self._hand_off()
                return
            plan = self._plan(self.buffer[:end], end + 4)
            if plan is None:
                self._hand_off()
                return
            if plan is _NEED_MORE:
                return
            if isinstance(plan, bytes):  # answered without a read (health)
                self.buffer = self.buffer[end + 4 :]
                self._write(200, plan)
                continue
            key, load, ttl, refresh, body_size = plan
            self.buffer = self.buffer[end + 4 + body_size :]
            if not refresh:
                body = hub.cache.fresh(key, load)
                if body is not None:
                    self._write(200, body)
                    continue
            self.busy = True
            self.task = asyncio.get_running_loop().create_task(
                self._complete(hub.reads.read(key, load, ttl, refresh))
            )
            return
        return

    def _plan(self, head: bytes, body_start: int) -> Any:
        """The read a request asks for and its body size, the bytes of an answer that needs no
        read, `_NEED_MORE` while its body is still arriving, or None when aiohttp should answer."""
        hub = self.hub
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1" or len(lines) - 1 > MAX_HEADER_COUNT:
            return None
        target = parts[1]
        if _TARGET.fullmatch(target) is None:
            return None
        path, _, raw_query = target.partition(b"?")
        route = _ROUTES.get((parts[0], path))
        if route is None:
            return None
        token = host = None
        body_size = 0
        seen_length = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if (
                not colon
                or _HEADER_NAME.fullmatch(name) is None
                or _HEADER_VALUE.fullmatch(value) is None
            ):
                return None
            lower = name.lower()
            value = value.strip(b" \t")
            if lower in _TOKEN_HEADERS:
                if token is not None:
                    return None
                token = value
            elif lower == b"host":
                if host is not None:
                    return None
                host = value
            elif lower == b"content-length":
                if route != "decrypt":
                    if value != b"0":
                        return None
                elif not value.isdigit() or int(value) > MAX_BODY_BYTES or seen_length:
                    return None  # aiohttp answers 413 (or 400) from the same rules
                else:
                    body_size = int(value)
                seen_length = True
            elif lower in _NOT_FAST:
                return None
        if host is not None and host.lower() not in hub.allowed_hosts:
            return None
        if route == "health":
            return hub.status.health_body(hub.reads.backends.loaded)
        if token is None or not token_matches(token, hub.token):
            return None
        if route == "decrypt" and len(self.buffer) < body_start + body_size:
            return _NEED_MORE
        try:
            pairs = parse_query_string(raw_query.decode("ascii"))
            refresh = flag(pairs, "refreshNow")
            if route == "decrypt":
                body = self.buffer[body_start : body_start + body_size]
                blob, context, key_id, algorithm = decrypt_request(body)
                digest = kms_digest(blob, context, key_id, algorithm)
                key, load, ttl = hub.reads.decrypt_read(blob, context, key_id, algorithm, digest)
            elif route == "secret":
                key, load, ttl = hub.reads.secret_read(
                    required(pairs, "secretId"),
                    first(pairs, "versionId") or None,
                    first(pairs, "versionStage") or None,
                )
            else:
                key, load, ttl = hub.reads.parameter_read(
                    required(pairs, "name"), ssm_selector(pairs), flag(pairs, "withDecryption")
                )
        except BadRequest:
            return None  # aiohttp renders the error, from the same rules
        return key, load, ttl, refresh, body_size

    async def _complete(self, pending: Any) -> None:
        try:
            lookup: Lookup = await pending
        except SecretcacheError as exc:
            if exc.status >= 500:
                log.warn("request.failed", status=exc.status, errorType=exc.error_type)
            self._write(exc.status, exc.to_body())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("request.internal_error", error=type(exc).__name__, where=where(exc))
            self._write(500, SecretcacheError("internal error").to_body())
        else:
            if lookup.outcome == "stale":
                extra = b"Age: %d\r\nX-Secretcache-Stale: true\r\n" % int(lookup.age)
                self._write(200, lookup.body, extra)
            else:
                self._write(200, lookup.body)
        self.task = None
        self.busy = False
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        if self.buffer:
            self._serve_buffered()
        if self.eof and not self.busy and self.transport is not None:
            self.transport.close()

    def _write(self, status: int, body: bytes, extra: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
            % (
                status,
                _PHRASES.get(status, b"Error"),
            )
        )
        self.transport.write(
            head
            + extra
            + b"Content-Length: %d\r\nDate: %s\r\n\r\n" % (len(body), self.hub.date())
            + body
        )

    # Hand-off -------------------------------------------------------------------------------

    def _hand_off(self) -> None:
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self.hub.hand_off(self))

    def switch_to(self, protocol: asyncio.Protocol) -> None:
        """Give the transport, and the bytes not yet served, to aiohttp's protocol."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.hub.live.discard(self)
        self.hub.live.add(protocol)
        self.transport = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.buffer:
            buffered, self.buffer = self.buffer, b""
            protocol.data_received(buffered)
        if self.paused:
            transport.resume_reading()


class RefusedConnection(asyncio.Protocol):
    """Answers one connection over the cap with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = ServiceUnavailable(
            "too many concurrent connections", error_type="TooManyConnections"
        ).to_body()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        transport.write(head.encode() + body)  # type: ignore[attr-defined]
        transport.close()
