"""HTTP/1.1 over asyncio streams: a keep-alive pool per endpoint, TLS with botocore's CA bundle.

Just what AWS's JSON APIs and the container credentials endpoint need: one request at a time per
connection, Content-Length or chunked bodies. A connection goes back to the pool only after a
complete response; any failure or cancellation closes it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Idle connections older than this are closed rather than reused (aiohttp's default).
KEEPALIVE_SECONDS = 15.0


class HttpError(Exception):
    """The peer broke the HTTP exchange (closed early, malformed head, oversized body)."""


_ssl_context: ssl.SSLContext | None = None


def ca_bundle(env: dict[str, str] | None = None) -> str | None:
    """AWS_CA_BUNDLE, else botocore's cacert.pem (what the SDK verifies with), else None."""
    configured = ((env if env is not None else os.environ).get("AWS_CA_BUNDLE") or "").strip()
    if configured:
        return configured
    for entry in sys.path:
        candidate = os.path.join(entry, "botocore", "cacert.pem")
        if os.path.isfile(candidate):
            return candidate
    return None


def set_ca_bundle(path: str | None) -> None:
    """Build the TLS context now (the first https request would otherwise)."""
    global _ssl_context
    _ssl_context = ssl.create_default_context(cafile=path) if path else None


def _tls_context() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context(cafile=ca_bundle())
    return _ssl_context


class Endpoint:
    """Where to connect for a URL: scheme, host, port and the Host header to send."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the endpoint URL must be http(s)://host[:port][/path]")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.tls else 80
        self.port = parts.port or default_port
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = shown if self.port == default_port else f"{shown}:{self.port}"
        self.path = parts.path or "/"
        self.query = parts.query


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < KEEPALIVE_SECONDS
        )

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """Keep-alive connections to one endpoint, at most ``max_idle`` kept between requests."""

    def __init__(self, endpoint: Endpoint, max_idle: int) -> None:
        self.endpoint = endpoint
        self._max_idle = max_idle
        self._idle: list[_Connection] = []

    async def _connect(self, timeout: float) -> _Connection:
        ep = self.endpoint
        opening = asyncio.open_connection(
            ep.host,
            ep.port,
            ssl=_tls_context() if ep.tls else None,
            server_hostname=ep.host if ep.tls else None,
            limit=MAX_HEAD_BYTES,
        )
        reader, writer = await asyncio.wait_for(opening, timeout)
        return _Connection(reader, writer)

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; returns status, headers (lower-case names) and body."""
        connection = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.usable():
                connection = candidate
                break
            candidate.close()
        if connection is None:
            connection = await self._connect(timeout)
        done = False
        try:
            head = _request_head(method, target, self.endpoint.host_header, headers, len(body))
            connection.writer.write(head + body)
            status, response_headers, response_body, keep = await asyncio.wait_for(
                _read_response(connection.reader, method), timeout
            )
            done = keep
            return status, response_headers, response_body
        finally:
            if done and len(self._idle) < self._max_idle:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _request_head(
    method: str, target: str, host: str, headers: dict[str, str], length: int
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {length}", "", ""]
    return "\r\n".join(lines).encode("utf-8")


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, dict[str, str], bytes, bool]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise HttpError("the connection closed before a response") from None
    except asyncio.LimitOverrunError:
        raise HttpError("the response head is too large") from None
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError("malformed status line")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    try:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                raise HttpError("bad Content-Length")
            body = await reader.readexactly(int(length))
        else:
            body = await reader.read(MAX_BODY_BYTES)
            keep = False
    except asyncio.IncompleteReadError:
        raise HttpError("the connection closed in the middle of the body") from None
    return status, headers, body, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError("malformed chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise HttpError("the response body is too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def fetch(
    method: str, url: str, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own (for the credentials endpoint)."""
    endpoint = Endpoint(url)
    target = endpoint.path + (f"?{endpoint.query}" if endpoint.query else "")
    pool = ConnectionPool(endpoint, max_idle=0)
    return await pool.request(method, target, {**headers, "Connection": "close"}, body, timeout)
