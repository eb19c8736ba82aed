"""Loopback ports and a tiny blocking HTTP helper for tests."""

from __future__ import annotations

import http.client
import random
import socket
import time
from dataclasses import dataclass, field


def _ports_outside_the_ephemeral_range() -> range:
    """Ports the kernel never picks for an outgoing connection or a bind to port 0."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(10_000, low) if low > 11_000 else range(high + 1, 65_536)


_CANDIDATES = _ports_outside_the_ephemeral_range()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago, for a server a test is about to start.

    Drawn at random from outside the ephemeral range and never the same twice in one process:
    a port the kernel picked by binding to 0 can be taken, before the server binds it, by any
    process's next outgoing connection (seen as a server's "Address already in use" under load).
    """
    for _ in range(200):
        port = random.choice(_CANDIDATES)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port on 127.0.0.1 outside the ephemeral range")


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> object:
        import json

        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 15.0,
) -> HttpResult:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return HttpResult(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def wait_for_http(port: int, path: str, timeout: float = 15.0) -> None:
    """Poll until something answers HTTP on the port (any status)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            http_request(port, "GET", path, timeout=2.0)
            return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s: {last}")


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the peer sends until it closes the connection (fails on a hang)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def rss_kib(pid: int) -> int:
    """A process's resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
