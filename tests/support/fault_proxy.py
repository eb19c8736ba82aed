"""A fault-injecting HTTP proxy in front of moto server, on loopback.

The extension's `AWS_ENDPOINT_URL` points here; every request is forwarded to moto unless a
fault is switched on. Faults are switched from the test thread while the proxy runs on its own
event loop in a daemon thread:

    proxy.set_fault(Fault.latency(3.0))                       # every request waits 3 s first
    proxy.set_fault(Fault.throttle(), count=3)                # the next 3 requests are throttled
    proxy.set_fault(Fault.aws_error(400, "AccessDeniedException"), target="GetSecretValue")
    proxy.set_fault(Fault.down())                             # refuse connections (moto stopped)
    proxy.set_rate_limit(8.0, target_prefix="AmazonSSM.")     # AWS's TPS limit: a token bucket
    proxy.set_rewrite("DescribeSecret", shift_dates)          # edit moto's successful answers
    proxy.sever()                                             # open connections lead nowhere
    proxy.clear()

A rewrite takes the JSON object of a successful answer and returns the one to send: how tests
give moto's answer a value moto cannot produce (a NextRotationDate seconds away, where moto only
computes whole days from now).

A rate limit is a token bucket of `tps` tokens a second holding at most `burst` seconds' worth,
shared by every request whose X-Amz-Target starts with `target_prefix` (Parameter Store's limit
is shared by GetParameter, GetParameters and GetParametersByPath); a request that finds it empty
is answered as AWS answers over its limit (400 ThrottlingException, "Rate exceeded") and counted
with fault "rate". Faults set with `set_fault` are applied first.

Requests are counted per operation (`X-Amz-Target`, e.g. `secretsmanager.GetSecretValue`) and
per (operation, identifier) where the identifier is the request's SecretId / Name, with the
start time and the number in flight at once, so tests can prove single-flight and backoff.

Client connections are kept alive (as AWS's endpoints do) and counted (`accepted`). `sever()`
stands in for a SnapStart restore: every connection open at that moment becomes a black hole
(requests on it are counted in `requests_into_severed`, never forwarded, never answered) while
new connections are served as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.net import free_port

_AWS_JSON = "application/x-amz-json-1.1"
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Fault:
    """What to do with a request instead of (or before) forwarding it."""

    kind: str  # pass | latency | error | reset | truncate | down | rate (over a rate limit)
    delay: float = 0.0
    status: int = 0
    error_type: str = ""

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Forward after `seconds` (a slow AWS); past the timeout this is a timeout."""
        return cls("latency", delay=seconds)

    @classmethod
    def aws_error(cls, status: int, error_type: str) -> Fault:
        """Answer as AWS's JSON 1.1 protocol does: `{"__type": ..., "message": ...}`."""
        return cls("error", status=status, error_type=error_type)

    @classmethod
    def throttle(cls, error_type: str = "ThrottlingException") -> Fault:
        """400 with `__type` ThrottlingException, as Secrets Manager, SSM and KMS answer."""
        return cls.aws_error(400, error_type)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls.aws_error(status, "InternalServiceError")

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then close with RST and no answer."""
        return cls("reset")

    @classmethod
    def truncate(cls) -> Fault:
        """Forward, then send the head and half the body (Content-Length says more) and close."""
        return cls("truncate")

    @classmethod
    def down(cls) -> Fault:
        """Stop listening: new connections are refused, open ones are reset."""
        return cls("down")


PASS = Fault("pass")


@dataclass
class Call:
    """One request seen by the proxy."""

    target: str
    identifier: str
    started: float
    fault: str
    concurrent: int  # requests for the same (target, identifier) in flight when this one began


@dataclass
class _Rule:
    fault: Fault
    remaining: int | None  # None: until cleared
    target: str | None  # suffix of X-Amz-Target, e.g. "GetSecretValue"; None: every request
    identifier: str | None = None


@dataclass
class _RateLimit:
    target_prefix: str
    tps: float
    capacity: float
    tokens: float
    refilled: float

    def admit(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.refilled) * self.tps)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


RATE_EXCEEDED = Fault("rate", status=400, error_type="ThrottlingException")


@dataclass
class _State:
    rules: list[_Rule] = field(default_factory=list)
    #: X-Amz-Target suffix -> the edit applied to successful JSON answers.
    rewrites: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    limits: list[_RateLimit] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    inflight: Counter[tuple[str, str]] = field(default_factory=Counter)


class FaultProxy:
    """Start with `start()`, stop with `stop()`; `url` goes into AWS_ENDPOINT_URL."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._state = _State()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._down = False
        self._generation = 0
        #: Client connections accepted so far.
        self.accepted = 0
        #: Requests that arrived on a severed connection (and got no answer).
        self.requests_into_severed = 0

    # Control (from the test thread) --------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._run(self._unlisten(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def set_fault(
        self,
        fault: Fault,
        *,
        count: int | None = None,
        target: str | None = None,
        identifier: str | None = None,
    ) -> None:
        """Apply `fault` to the next `count` matching requests (all of them when None).

        `down` applies to the whole proxy and ignores `count`, `target` and `identifier`.
        """
        if fault.kind == "down":
            self._run(self._unlisten())
            return
        if self._down:
            self._run(self._listen())
        with self._lock:
            self._state.rules.append(_Rule(fault, count, target, identifier))

    def set_rate_limit(self, tps: float, *, burst: float = 1.0, target_prefix: str = "") -> None:
        """Throttle requests whose X-Amz-Target starts with `target_prefix` above `tps` a second.

        The bucket starts full and holds `burst` seconds of the rate (at least one token).
        """
        capacity = max(1.0, tps * burst)
        with self._lock:
            self._state.limits.append(
                _RateLimit(target_prefix, tps, capacity, capacity, time.monotonic())
            )

    def set_rewrite(
        self, target: str, rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None
    ) -> None:
        """Edit every successful answer to requests whose X-Amz-Target ends with `target`
        (None: stop editing them)."""
        with self._lock:
            if rewrite is None:
                self._state.rewrites.pop(target, None)
            else:
                self._state.rewrites[target] = rewrite

    def sever(self) -> None:
        """Every connection open now leads nowhere (a restored snapshot's connections)."""
        with self._lock:
            self._generation += 1

    def clear(self) -> None:
        """Back to forwarding everything (no faults, rate limits or rewrites); listen again if
        down."""
        with self._lock:
            self._state.rules.clear()
            self._state.limits.clear()
            self._state.rewrites.clear()
        if self._down:
            self._run(self._listen())

    def reset_counts(self) -> None:
        with self._lock:
            self._state.calls.clear()

    def calls(self, target: str | None = None, identifier: str | None = None) -> list[Call]:
        """Requests seen so far; `target` matches the end of X-Amz-Target."""
        with self._lock:
            return [
                c
                for c in self._state.calls
                if (target is None or c.target.endswith(target))
                and (identifier is None or c.identifier == identifier)
            ]

    def count(self, target: str | None = None, identifier: str | None = None) -> int:
        return len(self.calls(target, identifier))

    def counts(self) -> dict[str, int]:
        """Requests per X-Amz-Target."""
        return dict(Counter(c.target for c in self.calls()))

    def _run(self, coro: object, timeout: float = 10.0) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    # The proxy (on its own loop) -----------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, backlog=256
        )
        self._down = False

    async def _unlisten(self) -> None:
        self._down = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def _pick(self, target: str, identifier: str) -> Fault:
        with self._lock:
            for rule in self._state.rules:
                if rule.target is not None and not target.endswith(rule.target):
                    continue
                if rule.identifier is not None and rule.identifier != identifier:
                    continue
                if rule.remaining is not None:
                    if rule.remaining <= 0:
                        continue
                    rule.remaining -= 1
                return rule.fault
            now = time.monotonic()
            for limit in self._state.limits:
                if target.startswith(limit.target_prefix) and not limit.admit(now):
                    return RATE_EXCEEDED
        return PASS

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with self._lock:
            self.accepted += 1
            generation = self._generation
        try:
            while not self._down:
                request = await _read_request(reader)
                if request is None:
                    return
                head, headers, body = request
                with self._lock:
                    severed = self._generation != generation
                    self.requests_into_severed += severed
                if severed:
                    continue
                if not await self._answer(head, headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _answer(
        self, head: bytes, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must end."""
        target = headers.get("x-amz-target", "")
        identifier = _identifier(body)
        fault = self._pick(target, identifier)
        key = (target, identifier)
        with self._lock:
            self._state.calls.append(
                Call(target, identifier, time.monotonic(), fault.kind, self._state.inflight[key])
            )
            self._state.inflight[key] += 1
        try:
            if fault.kind == "reset":
                _reset(writer)
                return False
            if fault.kind in ("error", "rate"):
                message = (
                    "Rate exceeded" if fault.kind == "rate" else f"injected {fault.error_type}"
                )
                payload = json.dumps({"__type": fault.error_type, "message": message}).encode()
                writer.write(_response_head(fault.status, _AWS_JSON, len(payload)) + payload)
                await writer.drain()
                return True
            if fault.kind == "latency":
                await asyncio.sleep(fault.delay)
                if writer.is_closing():
                    return False
            status_line, out_headers, out_body = await self._forward(head, headers, body)
            out_body = self._rewritten(target, status_line, out_body)
            if fault.kind == "truncate":
                writer.write(
                    _rebuild(status_line, out_headers, len(out_body))
                    + out_body[: max(1, len(out_body) // 2)]
                )
                await writer.drain()
                writer.close()
                return False
            writer.write(_rebuild(status_line, out_headers, len(out_body)) + out_body)
            await writer.drain()
            return True
        finally:
            with self._lock:
                self._state.inflight[key] -= 1

    def _rewritten(self, target: str, status_line: bytes, body: bytes) -> bytes:
        with self._lock:
            rewrites = [f for suffix, f in self._state.rewrites.items() if target.endswith(suffix)]
        if not rewrites or b" 200 " not in status_line + b" ":
            return body
        document = json.loads(body)
        for rewrite in rewrites:
            document = rewrite(document)
        return json.dumps(document).encode()

    async def _forward(
        self, head: bytes, headers: dict[str, str], body: bytes
    ) -> tuple[bytes, list[tuple[str, str]], bytes]:
        """Send the request to moto on a fresh connection and read the whole answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            lines = head.split(b"\r\n")
            kept = [
                line
                for line in lines[1:]
                if line
                and line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
            ]
            writer.write(b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + body)
            await writer.drain()
            raw_head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = raw_head[:-4].split(b"\r\n")
            out_headers: list[tuple[str, str]] = []
            for line in header_lines:
                name, _, value = line.decode("latin-1").partition(":")
                out_headers.append((name.strip(), value.strip()))
            lower = {k.lower(): v for k, v in out_headers}
            if lower.get("transfer-encoding", "").lower() == "chunked":
                out_body = await _read_chunked(reader)
            elif "content-length" in lower:
                out_body = await reader.readexactly(int(lower["content-length"]))
            else:
                out_body = await reader.read()
            dropped = ("connection", "keep-alive", "transfer-encoding", "content-length")
            out_headers = [(k, v) for k, v in out_headers if k.lower() not in dropped]
            return status_line, out_headers, out_body
        finally:
            writer.close()


def _identifier(body: bytes) -> str:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    for name in ("SecretId", "Name", "Path"):
        if isinstance(data.get(name), str):
            return str(data[name])
    return ""


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[bytes, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > _MAX_HEAD:
        raise ConnectionError("request head too large")
    headers: dict[str, str] = {}
    for line in head[:-4].split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
        head = (
            b"\r\n".join(
                line
                for line in head[:-4].split(b"\r\n")
                if not line.lower().startswith(b"transfer-encoding")
            )
            + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    return head[:-4], headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _response_head(status: int, content_type: str, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status} Injected\r\nContent-Type: {content_type}\r\n"
        f"x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _rebuild(status_line: bytes, headers: list[tuple[str, str]], length: int) -> bytes:
    lines = [status_line.decode("latin-1")] + [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    transport.abort()


__all__ = ["PASS", "Call", "Fault", "FaultProxy"]
