"""The listener: an HTTP/1.1 fast path for the hot reads, handing everything else to aiohttp.

A cache hit through aiohttp costs ~45 us of server CPU (parser, request objects, middlewares);
the reads that dominate a function's traffic (`GET /secretsmanager/get`,
`GET /systemsmanager/parameters/get`, with the token, no body) need far less. This protocol
serves exactly those requests, the Secrets Manager Agent's `GET /v1/<plain id>`, hits and
misses, the batch reads the exec wrapper makes at start (`batchget`, `getbatch`) and the health
checks (`/health`, `/ping`), with the same rules (`query.py`) and the same bytes from the same
cache. Anything else (another path or method, a body, an unusual header, a request line or query
the fast path would reject) hands the connection to aiohttp for the rest of its life, so every
rejection is still rendered by the one error path in `server.py`.

It needs no aiohttp, so it serves as soon as the socket is bound; a connection that needs
aiohttp before it has loaded waits for it.

Hostile clients: a request head must be complete within the request timeout once its first byte
has arrived (else 408 and close); a client that does not read its answers stops being read once
the write buffer passes asyncio's high-water mark; at the connection cap the longest-idle
connection is closed to make room (a function's pooled connection is only closed under that
pressure, never by an idle timer that a freeze would trip); only when every connection is busy
is a newcomer refused, after its request head is read: a health check is still answered (exempt
from the cap), the Agent's routes get its 429 `Connection limit exceeded`, ours 503. Bytes that
cannot be a fast-path request (bare LF line ends, TLS, another method) go to aiohttp at once,
which answers 400 for what it cannot parse.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote

from .errors import BadRequest, RequestTimeout, TooManyConnections, agent_error
from .json_body import json_body
from .log import log
from .query import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    Pairs,
    agent_route,
    parse_query_string,
    token_matches,
)
from .read_requests import (
    DecryptRead,
    ParameterRead,
    ParametersRead,
    SecretRead,
    SecretsRead,
)
from .reads import Reads, Response
from .status import Status

FastRead = SecretRead | ParameterRead | SecretsRead | ParametersRead
Route = Callable[[Pairs], FastRead]
_ROUTES: dict[bytes, Route] = {
    b"/secretsmanager/get": SecretRead.from_query,
    b"/secretsmanager/get/": SecretRead.from_query,
    b"/systemsmanager/parameters/get": ParameterRead.from_query,
    b"/systemsmanager/parameters/get/": ParameterRead.from_query,
    # The batch reads the exec wrapper makes at start: served here, its INIT does not wait for
    # aiohttp to load. Answered by `Reads.respond` (no stored body for a batch: items are cached
    # one by one), the same call aiohttp's handlers make.
    b"/secretsmanager/batchget": SecretsRead.from_query,
    b"/secretsmanager/batchget/": SecretsRead.from_query,
    b"/systemsmanager/parameters/getbatch": ParametersRead.from_query,
    b"/systemsmanager/parameters/getbatch/": ParametersRead.from_query,
}
#: Reads with no stored body of their own: always answered by `Reads.respond`.
_BATCH_READS = frozenset({SecretsRead, ParametersRead})
#: SECRETCACHE_COMPAT=agent: `/secretsmanager/get` parsed by the Agent's rules, Agent-shaped.
_AGENT_ROUTES: dict[bytes, Route] = {
    **_ROUTES,
    b"/secretsmanager/get": SecretRead.from_agent_query,
    b"/secretsmanager/get/": SecretRead.from_agent_query,
}
#: With a Content-Length body: a function that only decrypts never needs aiohttp.
_POST_ROUTES: dict[bytes, Callable[[bytes, Pairs], DecryptRead]] = {
    b"/kms/decrypt": DecryptRead.from_body,
}
#: No token (as in server.py): a health check should not load aiohttp either.
_HEALTH_PATHS = frozenset({b"/health", b"/health/"})
#: The Secrets Manager Agent's health check: `healthy` as text, as aiohttp's `ping` answers.
_PING_PATHS = frozenset({b"/ping", b"/ping/"})
_PING_BODY = b"healthy"
#: `_plan`'s answer while a request's body has not fully arrived.
_NEED_MORE = object()
#: What the fast path takes (anything else goes to aiohttp's stricter parser): a target of
#: printable ASCII without space or fragment, token-character header names, no control bytes.
_TARGET = re.compile(rb"/[!-\"$-~]*")
_HEADER_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TOKEN_HEADERS = (b"x-aws-parameters-secrets-token", b"x-vault-token")
#: Headers whose presence means the request is not a plain bodiless GET, or (X-Forwarded-For)
#: is refused: aiohttp answers those, so the check costs the hot path no extra step.
_NOT_FAST = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"x-forwarded-for"})
_JSON_HEADERS = b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
_TEXT_HEADERS = b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
#: What a request head must start with to be worth waiting for on the fast path.
_FAST_STARTS = (b"GET /", b"POST /kms/decrypt")
_PHRASES = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
#: Unread bytes held while a miss is in flight before the socket stops being read.
_MAX_BUFFER = 64 * 1024
#: How long a connection over the cap waits for its request head, and how long it is kept after
#: its answer to read what the client still sends, so that closing it does not reset the
#: connection (and lose the answer) while a request is unread.
REFUSED_LINGER_SECONDS = 1.0
#: Connections over the cap whose heads are read at once (each lives at most two lingers);
#: past this many a newcomer is answered 503 without being read (its route is unknown).
MAX_OVER_CAP = 64


class FastPath:
    """Shared state of the listener: reads, access rules, live connections, the aiohttp hand-off.

    Every live connection (fast path or handed off) answers `idle_since()` (None while a request
    is being served) and `evict()`, so the cap can make room by closing the longest-idle one.
    """

    def __init__(
        self,
        reads: Reads,
        status: Status,
        *,
        token: str,
        allowed_hosts: frozenset[str],
        max_connections: int,
        request_timeout: float,
    ) -> None:
        self.reads = reads
        self.token = token.encode("utf-8")
        self.allowed_hosts = frozenset(h.encode("latin-1") for h in allowed_hosts)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.status = status
        self.agent_secret_get = reads.config.compat == "agent"
        self.routes = _AGENT_ROUTES if self.agent_secret_get else _ROUTES
        #: Every connection we answer for, fast or handed off; weak so none is counted forever.
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Connections over the cap, read to be answered (OverCapConnection); not in `live`.
        self.over_cap: set[OverCapConnection] = set()
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
        """For `loop.create_server`: at the cap close the longest-idle connection, or refuse."""
        if len(self.live) >= self.max_connections and not self._evict_longest_idle():
            if len(self.over_cap) < MAX_OVER_CAP:
                return OverCapConnection(self)
            return RefusedConnection(self.refusal(b""))
        protocol = FastPathProtocol(self)
        self.live.add(protocol)
        return protocol

    def _evict_longest_idle(self) -> bool:
        oldest: Any = None
        oldest_since = 0.0
        for connection in self.live:
            since = connection.idle_since()
            if since is not None and (oldest is None or since < oldest_since):
                oldest, oldest_since = connection, since
        if oldest is None:
            return False
        self.live.discard(oldest)
        oldest.evict()
        log.debug("connection.evicted", idleSeconds=round(time.monotonic() - oldest_since, 1))
        return True

    def refusal(self, head: bytes) -> bytes:
        """The answer to a connection over the cap, by the route its request line names: the
        Agent's 429 on its routes, our 503 elsewhere (and when no request line arrived)."""
        error = TooManyConnections(
            f"Connection limit exceeded: SECRETCACHE_MAX_CLIENT_CONNECTIONS={self.max_connections}"
            " and every open connection is serving a request"
        )
        status, body = error.status, error.to_body()
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) > 1:
            path = unquote(parts[1].partition(b"?")[0].decode("latin-1"))
            if agent_route(path, self.agent_secret_get):
                status, body = agent_error(error)
        log.debug("connection.refused", status=status)
        return self.response(status, body, extra=b"Connection: close\r\n")

    def response(
        self, status: int, body: bytes, headers: bytes = _JSON_HEADERS, extra: bytes = b""
    ) -> bytes:
        """A whole HTTP/1.1 response, as every fast-path answer is written."""
        head = b"HTTP/1.1 %d %s\r\n%s" % (status, _PHRASES.get(status, b"Error"), headers)
        return (
            head
            + extra
            + b"Content-Length: %d\r\nDate: %s\r\n\r\n" % (len(body), self.date())
            + body
        )

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
        for over in list(self.over_cap):
            over.close()

    async def hand_off(self, protocol: FastPathProtocol) -> None:
        if self._handoff is None:
            load, self.load_handoff = self.load_handoff, None
            if load is not None:
                load()
            await self._handoff_ready.wait()
        assert self._handoff is not None
        protocol.switch_to(self._handoff(self.live.discard))


class _Plan(NamedTuple):
    """A fast-path request, parsed: the typed read (or the answer when it needs none), whether
    to close after answering, and the size of its body."""

    read: FastRead | DecryptRead | None
    close: bool
    body_size: int = 0
    answer: bytes = b""
    headers: bytes = _JSON_HEADERS


class FastPathProtocol(asyncio.Protocol):
    """One connection: serves fast-path requests in order until it hands the connection off."""

    def __init__(self, hub: FastPath) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False  # a miss is in flight, or the connection is being handed off
        self.reading_paused = False
        self.writing_paused = False
        self.eof = False
        self.task: asyncio.Task[None] | None = None
        self.idle_at = time.monotonic()
        self.head_started = 0.0
        self.head_timer: asyncio.TimerHandle | None = None
        self.awaiting_body = False

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if not self.busy:
            self._serve_buffered()
        else:
            self._update_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._finish_if_done()
        return True  # keep the write side open until a pending response is written

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()
        if not self.busy:
            self._serve_buffered()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.hub.live.discard(self)
        self._stop_head_timer()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Connection cap ---------------------------------------------------------------------------

    def idle_since(self) -> float | None:
        """When this connection last did useful work; None while a request is being served (or
        its body is still arriving: a request in progress is not idle)."""
        if self.busy or self.awaiting_body:
            return None
        return self.head_started if self.buffer else self.idle_at

    def evict(self) -> None:
        if self.transport is None:
            return
        if self.buffer:
            self.transport.abort()  # a head dribbled in: no answer is owed
        else:
            self.transport.close()

    # Serving --------------------------------------------------------------------------------

    def _serve_buffered(self) -> None:
        hub = self.hub
        while self.transport is not None and not self.writing_paused:
            if self.transport.is_closing():
                return
            buffer = self.buffer
            if not buffer:
                self._stop_head_timer()
                self._finish_if_done()
                return
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES or not _may_become_fast(buffer):
                    self._hand_off()
                elif self.eof:
                    self.transport.close()  # the client will send no more of this head
                elif self.head_timer is None:
                    self.head_started = time.monotonic()
                    self.head_timer = asyncio.get_running_loop().call_later(
                        hub.request_timeout, self._head_timed_out
                    )
                return
            if end + 4 > MAX_HEADER_BYTES or hub.status.closing:
                self._hand_off()
                return
            plan = self._plan(buffer[:end], end + 4)
            if plan is None:
                self._hand_off()
                return
            self.awaiting_body = plan is _NEED_MORE
            if plan is _NEED_MORE:  # a body still arriving: the head's deadline covers it too
                if self.eof:
                    self.transport.close()
                elif self.head_timer is None:
                    self.head_started = time.monotonic()
                    self.head_timer = asyncio.get_running_loop().call_later(
                        hub.request_timeout, self._head_timed_out
                    )
                return
            self._stop_head_timer()
            self.buffer = buffer[end + 4 + plan.body_size :]
            read = plan.read
            if read is None:
                body: bytes | None = plan.answer
            elif type(read) in _BATCH_READS:
                body = None
            else:
                body = hub.reads.cached(read)
            if body is None:
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(self._complete(plan))
                return
            self._write(200, body, headers=plan.headers)
            if plan.close:
                self.transport.close()
                return

    def _plan(self, head: bytes, body_start: int) -> Any:
        return plan_request(self.hub, self.buffer, head, body_start)

    async def _complete(self, plan: _Plan) -> None:
        assert plan.read is not None  # an answer that needs no read never gets here
        response: Response = await self.hub.reads.respond(plan.read)
        extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in response.headers)
        self._write(response.status, response.body, extra)
        self.task = None
        self.busy = False
        if plan.close and self.transport is not None:
            self.transport.close()
            return
        self._update_reading()
        self._serve_buffered()

    def _write(
        self, status: int, body: bytes, extra: bytes = b"", headers: bytes = _JSON_HEADERS
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.idle_at = time.monotonic()
        transport.write(self.hub.response(status, body, headers, extra))

    def _update_reading(self) -> None:
        """Read while neither the client's unread answers nor a stalled pipeline pile up."""
        transport = self.transport
        if transport is None:
            return
        pause = self.writing_paused or (self.busy and len(self.buffer) > _MAX_BUFFER)
        if pause and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif not pause and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def _finish_if_done(self) -> None:
        """After the client's FIN: close once every complete request has been answered."""
        if self.eof and not self.busy and not self.writing_paused and self.transport is not None:
            if not self.buffer:
                self.transport.close()
            elif self.buffer.find(b"\r\n\r\n") < 0:
                self.transport.close()  # an incomplete head that can never be completed
            else:
                self._serve_buffered()

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.busy or not self.buffer or self.transport is None:
            return
        error = RequestTimeout(
            f"the request head did not arrive within {self.hub.request_timeout:g} s"
        )
        self._write(error.status, error.to_body(), b"Connection: close\r\n")
        self.buffer = b""
        self.transport.close()

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    # Hand-off -------------------------------------------------------------------------------

    def _hand_off(self) -> None:
        self._stop_head_timer()
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self.hub.hand_off(self))

    def switch_to(self, protocol: asyncio.Protocol) -> None:
        """Give the transport, the bytes not yet served and any FIN to aiohttp's protocol."""
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
        if self.eof and not protocol.eof_received():
            transport.close()
        if self.reading_paused:
            transport.resume_reading()


def plan_request(hub: FastPath, buffer: bytes, head: bytes, body_start: int) -> Any:
    """The read a request asks for (or the answer when it needs none: the health checks),
    `_NEED_MORE` while its body is still arriving in `buffer`, or None when aiohttp should
    answer it.

    The rules are aiohttp's (query.py holds the shared bounds): whatever the fast path does
    not accept, aiohttp answers, so both stacks accept and refuse the same requests.
    """
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    target = parts[1]
    if _TARGET.fullmatch(target) is None:
        return None
    path, _, raw_query = target.partition(b"?")
    method = parts[0]
    post = method == b"POST" and path in _POST_ROUTES
    health = method == b"GET" and path in _HEALTH_PATHS
    ping = method == b"GET" and path in _PING_PATHS
    route = None
    if method == b"GET" and not health and not ping:
        route = hub.routes.get(path) or _agent_path_route(path)
    if not post and not health and not ping and route is None:
        return None
    token = host = length = None
    close = False
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
            if length is not None or not value.isdigit() or (value != b"0" and not post):
                return None
            if int(value) > MAX_BODY_BYTES:
                return None  # aiohttp answers 413, from the same rules
            length = value
        elif lower == b"connection":
            option = value.lower()
            if option == b"close":
                close = True
            elif option != b"keep-alive":
                return None
        elif lower in _NOT_FAST:
            return None
    # HTTP/1.1 requires Host; without one aiohttp answers 400.
    if host is None or host.lower() not in hub.allowed_hosts:
        return None
    if health:
        ready = hub.status.ready and hub.reads.backends.loaded
        return _Plan(None, close, answer=json_body(hub.status.health(ready)))
    if ping:
        return _Plan(None, close, answer=_PING_BODY, headers=_TEXT_HEADERS)
    if token is None or not token_matches(token, hub.token):
        return None
    body_size = int(length) if length is not None else 0
    if post and length is None:
        return None  # chunked or no body: aiohttp's rules
    if body_size and len(buffer) < body_start + body_size:
        return _NEED_MORE
    try:
        pairs = parse_query_string(raw_query.decode("ascii"))
        if post:
            body = buffer[body_start : body_start + body_size]
            read: Any = _POST_ROUTES[path](body, pairs)
        else:
            assert route is not None
            read = route(pairs)
    except BadRequest:
        return None  # aiohttp renders the error, from the same rules
    return _Plan(read, close, body_size)


def _agent_path_route(path: bytes) -> Route | None:
    """The Agent's `/v1/<id>` when the id is plain (no escape, no dot segment), else None.

    Only on a miss of the fixed routes, so their hits pay nothing for it. A plain id is the same
    text to aiohttp, so both stacks read the same secret; anything else goes to aiohttp.
    """
    if path[:4] != b"/v1/" or len(path) == 4 or b"%" in path or b"/." in path:
        return None
    secret_id = path[4:].decode("ascii")
    return lambda pairs: SecretRead.from_agent_path(secret_id, pairs)


def _may_become_fast(partial: bytes) -> bool:
    """Whether an incomplete head can still turn into a fast-path request (else hand off now)."""
    if not any(partial[: len(p)] == p[: len(partial)] for p in _FAST_STARTS):
        return False
    return partial.count(b"\n") == partial.count(b"\r\n")


class OverCapConnection(asyncio.Protocol):
    """A connection that arrived while every connection the cap allows was serving a request.

    Its first request head is read (for at most REFUSED_LINGER_SECONDS): a health check the fast
    path can answer (`/ping`, `/health` from a local Host) is answered, as health checks are
    exempt from the cap; anything else is refused by `FastPath.refusal` (429 on the Agent's
    routes, 503 on ours). The answer says `Connection: close`; the connection is closed when the
    client closes it, or REFUSED_LINGER_SECONDS later (what it still sends is read and dropped,
    so the close does not reset the connection and lose the answer).
    """

    def __init__(self, hub: FastPath) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.hub.over_cap.add(self)
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, self._time_up)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # read and dropped
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            self._answer(self.buffer[:end], end + 4)
        elif len(self.buffer) > MAX_HEADER_BYTES:
            self._answer(self.buffer, None)

    def eof_received(self) -> bool | None:
        if not self.answered:
            self._answer(self.buffer, None)
        return False  # the transport closes itself, after writing the answer

    def connection_lost(self, exc: BaseException | None) -> None:
        self.hub.over_cap.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _time_up(self) -> None:
        if self.transport is None:
            return
        if not self.answered:
            self._answer(self.buffer, None)  # the head did not arrive in time
        else:
            self.transport.close()

    def _answer(self, head: bytes, body_start: int | None) -> None:
        """Answer the first request: its health check if it is one, else the refusal."""
        self.answered = True
        hub = self.hub
        plan = plan_request(hub, self.buffer, head, body_start) if body_start else None
        if isinstance(plan, _Plan) and plan.read is None:
            answer = hub.response(200, plan.answer, plan.headers, b"Connection: close\r\n")
        else:
            answer = hub.refusal(head)
        self.buffer = b""
        assert self.transport is not None
        self.transport.write(answer)
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, self._time_up)


class RefusedConnection(asyncio.Protocol):
    """Answers one connection past MAX_OVER_CAP with `answer` (503) before reading it, then reads
    until the client closes.

    Closing at once would reset the connection if the request arrives after the close, and the
    client would see ECONNRESET instead of the 503; so the request is read and dropped, for at
    most REFUSED_LINGER_SECONDS.
    """

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(self.answer)
        asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not served; reading it lets the close be a clean FIN

    def eof_received(self) -> bool | None:
        return False  # the transport closes itself
