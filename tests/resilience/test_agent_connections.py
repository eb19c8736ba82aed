"""The Secrets Manager Agent's connection rows (shared/agent-http.md 24-26) on a real extension
process, AWS being moto behind the fault proxy, or a server that never answers.

24: over the cap, an Agent route answers 429 `Connection limit exceeded` (our routes keep 503);
    unlike the Agent, idle keep-alive connections are closed to make room first.
25: `/ping` and `/health` answer while the cap is full.
26: AWS never answering: the Agent drops the connection after its server timeout; we answer 504
    `TimeoutError` after the upstream timeout, and keep neither connection open.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.fault_proxy import Fault
from tools.net import HttpResult, free_port, read_until_closed

from .conftest import MARGIN, TIMEOUT, assert_json_error, secret_path, value_of

#: Long enough to hold a request in flight while the test knocks; far under the timeout below.
SLOW_SECONDS = 2.5


def agent_error(result: HttpResult, status: int) -> dict[str, str]:
    """The Agent-route error shape: `{"__type", "message"}`, compact, keys sorted."""
    assert result.status == status, (result.status, result.body[:300])
    body = json.loads(result.body)
    assert list(body) == ["__type", "message"], body
    assert result.body == json.dumps(body, separators=(",", ":")).encode()
    return body


def raw_get(port: int, target: str, token: str | None) -> tuple[bytes, float]:
    """One GET on its own connection, read until the server closes it; and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
        if token is not None:
            head += f"X-Aws-Parameters-Secrets-Token: {token}\r\n"
        sock.sendall(head.encode() + b"\r\n")
        return read_until_closed(sock), time.monotonic() - started


def in_flight(proxy, name: str, timeout: float = 10.0) -> None:
    """Until the proxy holds the (slow) upstream call for `name`."""
    deadline = time.monotonic() + timeout
    while proxy.count("GetSecretValue", name) == 0:
        assert time.monotonic() < deadline, "the slow read never reached AWS"
        time.sleep(0.02)


def test_row24_row25_over_the_cap_agent_routes_get_429_ours_503_health_checks_answer(
    start, proxy, seed
):
    ext = start(
        SECRETCACHE_MAX_CLIENT_CONNECTIONS="1",
        SECRETS_MANAGER_TIMEOUT_MILLIS="10000",
    )
    slow, slow_value = seed.secret("slow")
    other, other_value = seed.secret("other")
    proxy.set_fault(Fault.latency(SLOW_SECONDS), target="GetSecretValue", identifier=slow)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(ext.get, f"/v1/{slow}")
        in_flight(proxy, slow)
        # The one connection the cap allows is serving a request: nothing idle to close.
        body = agent_error(ext.get(f"/v1/{other}"), 429)
        assert body["__type"] == "TooManyConnections"
        assert body["message"].startswith("Connection limit exceeded")
        answer, _ = raw_get(ext.port, f"/v1/{other}", ext.token)
        assert answer.startswith(b"HTTP/1.1 429 ") and b"\r\nConnection: close\r\n" in answer
        # Our own routes keep their 503.
        body = assert_json_error(ext.get(secret_path(other)), 503)
        assert body["errorType"] == "TooManyConnections"
        assert body["message"].startswith("Connection limit exceeded")
        # Row 25: health checks are exempt from the cap, with or without a token.
        for token in (True, None):
            ping = ext.get("/ping", token=token)
            assert (ping.status, ping.body) == (200, b"healthy")
            health = ext.get("/health", token=token)
            assert (health.status, health.json()) == (200, {"status": "ok"})
        assert not first.done(), "the slow read ended before the knocks: the test proved nothing"
        assert value_of(first.result()) == slow_value
    # The slow request answered, its connection closed: a newcomer is served again.
    assert value_of(ext.get(f"/v1/{other}")) == other_value


def test_row24_under_the_agent_switch_its_secretsmanager_get_is_429_too(start, seed):
    ext = start(SECRETCACHE_MAX_CLIENT_CONNECTIONS="2", SECRETCACHE_COMPAT="agent")
    name, _ = seed.secret("switch")
    busy = [partial_decrypt(ext) for _ in range(2)]
    try:
        time.sleep(0.3)
        body = agent_error(ext.get(secret_path(name)), 429)
        assert body["message"].startswith("Connection limit exceeded")
        # %-escapes are decoded before the route is known, as aiohttp decodes them.
        agent_error(ext.get(f"/%761/{name}"), 429)
        # Every other route keeps ours under the switch.
        assert_json_error(ext.get("/metrics"), 503)
        assert_json_error(ext.get(f"/systemsmanager/parameters/get?name=/{name}"), 503)
    finally:
        for sock in busy:
            sock.close()


def partial_decrypt(ext) -> socket.socket:
    """A connection whose POST body is still arriving: a request in progress, never idle."""
    sock = socket.create_connection(("127.0.0.1", ext.port), timeout=10)
    sock.sendall(
        b"POST /kms/decrypt HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\nX-Aws-Parameters-Secrets-Token: "
        + ext.token.encode()
        + b'\r\n\r\n{"Ciphe'
    )
    return sock


def test_row24_idle_keep_alive_connections_make_room_before_any_429(start, seed):
    """Where we differ from the Agent on purpose: its cap counts open connections, so a
    function's idle pooled connections alone can make it answer 429; ours closes the one idle
    the longest and serves the newcomer."""
    ext = start(SECRETCACHE_MAX_CLIENT_CONNECTIONS="2")
    name, value = seed.secret("idle")
    idle = [socket.create_connection(("127.0.0.1", ext.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.3)
        assert value_of(ext.get(f"/v1/{name}")) == value
        assert read_until_closed(idle[0], 5) == b""  # the longest idle was closed for it
    finally:
        for sock in idle:
            sock.close()


def test_row25_a_probe_over_the_cap_is_answered_then_closed(start):
    ext = start(SECRETCACHE_MAX_CLIENT_CONNECTIONS="1")
    busy = partial_decrypt(ext)
    try:
        time.sleep(0.3)
        for target in ("/ping", "/ping/", "/health"):
            answer, took = raw_get(ext.port, target, None)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), answer[:100]
            assert b"\r\nConnection: close" in head
            assert body in (b"healthy", b'{"status":"ok"}')
            assert took < 1.0 + MARGIN  # closed within the linger, not left open
        # Only the probes are exempt: an Agent read over the cap is refused.
        answer, _ = raw_get(ext.port, "/v1/x", ext.token)
        assert answer.startswith(b"HTTP/1.1 429 "), answer[:100]
    finally:
        busy.close()


def test_row25_ping_answers_the_same_on_the_fast_path_and_through_aiohttp(start):
    ext = start()
    with socket.create_connection(("127.0.0.1", ext.port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def exchange(request: bytes) -> tuple[bytes, dict[str, str], bytes]:
            sock.sendall(request)
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            return status, headers, reader.read(int(headers["content-length"]))

        ping = b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n"
        fast = exchange(ping)
        assert "server" not in fast[1]  # the fast path answered
        exchange(b"GET /no/such/path HTTP/1.1\r\nHost: localhost\r\n\r\n")  # hands off
        slow = exchange(ping)
        assert "aiohttp" in slow[1]["server"]
    assert fast[0] == slow[0] == b"HTTP/1.1 200 OK\r\n"
    assert fast[2] == slow[2] == b"healthy"
    for header in ("content-type", "cache-control", "content-length"):
        assert fast[1][header] == slow[1][header], header


class SilentAws:
    """A TCP server that accepts and reads but never answers: AWS that never responds.

    Records each accepted connection and whether the extension has closed it.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.accepted = 0
        self.open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
        with self.lock:
            self.open -= 1

    def wait_all_closed(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.open

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def silent_aws() -> Iterator[SilentAws]:
    server = SilentAws()
    yield server
    server.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_row26_aws_never_answering_is_a_504_timeout_error_and_nothing_leaks(start, silent_aws):
    ext = start(AWS_ENDPOINT_URL=silent_aws.url, SECRETCACHE_MAX_CLIENT_CONNECTIONS="4")
    assert ext.process is not None
    fds_before = open_fds(ext.process.pid)
    with socket.create_connection(("127.0.0.1", ext.port), timeout=TIMEOUT + 10) as sock:
        reader = sock.makefile("rb")
        for attempt in range(3):
            started = time.monotonic()
            sock.sendall(
                f"GET /v1/never-{attempt} HTTP/1.1\r\nHost: localhost\r\n"
                f"X-Aws-Parameters-Secrets-Token: {ext.token}\r\n\r\n".encode()
            )
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            body = json.loads(reader.read(int(headers["content-length"])))
            took = time.monotonic() - started
            # A clean answer, on time, on a connection that stays usable (asked again above).
            assert status.startswith(b"HTTP/1.1 504 "), status
            assert list(body) == ["__type", "message"] and body["__type"] == "TimeoutError"
            assert TIMEOUT - 0.1 <= took <= TIMEOUT + MARGIN, took
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert reader.readline().startswith(b"HTTP/1.1 200 ")
    assert silent_aws.accepted >= 3
    # Every connection to the silent AWS was closed by the extension, none left to pile up.
    assert silent_aws.wait_all_closed(TIMEOUT + MARGIN) == 0, silent_aws.open
    time.sleep(0.3)
    assert open_fds(ext.process.pid) <= fds_before + 1  # aiohttp may have opened its loop fd
    # Ours on the same failure: 504 UpstreamTimeout.
    result = ext.get(secret_path("never-ours"))
    assert assert_json_error(result, 504)["errorType"] == "UpstreamTimeout"
