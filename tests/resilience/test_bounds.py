"""Bounds and security: head, body and query limits, the connection cap, Host, token, /health,
no CORS, no-store."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tools.net import read_until_closed

from .conftest import MARGIN, assert_json_error, secret_path, value_of

CONNECTION_CAP = 256


@pytest.fixture
def ext(start):
    return start()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def test_headers_over_8_kib_are_431(ext):
    many_small = {f"X-Pad-{i}": "p" * 100 for i in range(90)}
    assert_json_error(ext.get("/health", headers=many_small), 431)
    assert_json_error(ext.get(secret_path("x"), headers={"X-Big": "b" * 9000}), 431)
    assert_json_error(ext.get("/health", headers={f"X-{i}": "1" for i in range(130)}), 431)
    # Under the bound is fine.
    assert ext.get("/health", headers={"X-Pad": "p" * 6000}).status == 200


def test_request_line_counts_toward_the_head_bound(ext):
    # 6000 bytes of query plus 3000 bytes of headers: each under 8 KiB, together over.
    path = "/health?" + "&".join(f"k{i}=v" for i in range(800))
    assert_json_error(ext.get(path, headers={"X-Pad": "p" * 3000}), 431)
    assert_json_error(ext.get("/health?q=" + "x" * 9000), 414)


def test_bodies_over_64_kib_are_413(ext):
    big = b"x" * (64 * 1024 + 1)
    assert_json_error(ext.request("POST", "/kms/decrypt", body=big), 413)
    assert_json_error(ext.request("GET", secret_path("x"), body=big), 413)
    chunked = (
        b"POST /kms/decrypt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + f"X-Aws-Parameters-Secrets-Token: {ext.token}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (1000, b"y" * 1000) for _ in range(70))
        + b"0\r\n\r\n"
    )
    answer = raw_exchange(ext.port, chunked)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert set(json.loads(answer.split(b"\r\n\r\n", 1)[1])) == {"errorType", "message"}


def test_query_values_over_2048_characters_are_400(ext):
    body = assert_json_error(ext.get(secret_path("s" * 2049)), 400)
    assert "2048" in body["message"]
    body = assert_json_error(ext.get("/secretsmanager/get?secretId=a&" + "k" * 2049 + "=1"), 400)
    assert "2048" in body["message"]
    # Percent-encoding does not hide the length (it is the decoded value that counts).
    assert_json_error(ext.get(secret_path("%41" * 2049)), 400)
    at_limit = ext.get(secret_path("s" * 2048))
    assert "2048" not in at_limit.body.decode()


@pytest.mark.parametrize("host", ["evil.com", "127.0.0.1.evil.com", "localhost:1", "[::2]"])
def test_foreign_host_is_refused_403(ext, host):
    body = assert_json_error(ext.get(secret_path("x"), headers={"Host": host}), 403)
    assert body["errorType"] == "ForbiddenHost"
    assert_json_error(ext.get("/health", headers={"Host": host}, token=None), 403)


def test_loopback_hosts_are_allowed(ext, seed):
    name, value = seed.secret("host")
    for host in ("localhost", "127.0.0.1", "[::1]", f"localhost:{ext.port}", "LOCALHOST"):
        result = ext.get(secret_path(name), headers={"Host": host})
        assert result.status == 200 and value_of(result) == value, host


def test_missing_or_wrong_token_is_401(ext, seed):
    name, value = seed.secret("token")
    for token in (None, "", "wrong", ext.token[:-1] + "x", ext.token + "x"):
        result = ext.get(secret_path(name), token=token if token is not None else None)
        assert_json_error(result, 401)
        assert value not in result.body.decode()
    assert_json_error(ext.get("/metrics", token=None), 401)


def test_health_reveals_nothing_but_status(ext, seed):
    name, _ = seed.secret("health")
    ext.get(secret_path(name))
    for token in (None, True):
        result = ext.get("/health", token=token)
        assert result.status == 200
        assert list(result.json()) == ["status"]  # type: ignore[arg-type]
        assert name not in result.body.decode()


def test_no_cors_headers_and_no_store_anywhere(ext, seed):
    name, _ = seed.secret("cors")
    origin = {"Origin": "http://evil.com", "Access-Control-Request-Method": "GET"}
    results = [
        ext.get(secret_path(name), headers=origin),
        ext.get(secret_path(name), headers=origin),  # a hit
        ext.get(secret_path("absent-" + name), headers=origin),
        ext.request("OPTIONS", secret_path(name), headers=origin),
        ext.get("/health", headers=origin, token=None),
        ext.get("/metrics", headers=origin),
        ext.get("/nope", headers=origin),
        ext.get(secret_path(name), headers=origin, token="bad"),
    ]
    for result in results:
        assert not [h for h in result.headers if h.startswith("access-control-")], result.headers
        assert result.headers.get("cache-control") == "no-store", result.headers


def partial_decrypt(ext) -> socket.socket:
    """A connection whose POST body is still arriving: a request in progress, not idle."""
    sock = socket.create_connection(("127.0.0.1", ext.port), timeout=10)
    sock.sendall(
        b"POST /kms/decrypt HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\nX-Aws-Parameters-Secrets-Token: "
        + ext.token.encode()
        + b'\r\n\r\n{"Ciphe'
    )
    return sock


def test_at_the_cap_the_longest_idle_connection_makes_room(start, seed):
    ext = start(SECRETCACHE_MAX_CLIENT_CONNECTIONS="8")
    name, value = seed.secret("evict")
    assert value_of(ext.get(secret_path(name))) == value
    time.sleep(0.2)  # let the connection above be forgotten
    socks = []
    try:
        for _ in range(8):
            socks.append(socket.create_connection(("127.0.0.1", ext.port), timeout=5))
            time.sleep(0.05)
        # A newcomer is served, not refused: the connection idle the longest is closed for it.
        assert value_of(ext.get(secret_path(name))) == value
        assert read_until_closed(socks[0], 5) == b""
        socks[1].setblocking(False)
        with pytest.raises(BlockingIOError):
            socks[1].recv(1)  # still open
    finally:
        for sock in socks:
            sock.close()


def test_a_request_head_must_arrive_within_the_request_timeout(start):
    ext = start(SECRETCACHE_REQUEST_TIMEOUT_MILLIS="1000")
    with socket.create_connection(("127.0.0.1", ext.port), timeout=10) as sock:
        sock.sendall(b"GET /secretsmanager/get?secr")
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert time.monotonic() - started < 1 + MARGIN
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["errorType"] == "RequestTimeout"


def test_a_request_body_must_arrive_within_the_request_timeout(start):
    ext = start(SECRETCACHE_REQUEST_TIMEOUT_MILLIS="1000")
    sock = partial_decrypt(ext)
    try:
        answer = read_until_closed(sock)
    finally:
        sock.close()
    assert b" 408 " in answer.split(b"\r\n", 1)[0], answer[:80]
    assert b'"RequestTimeout"' in answer


def test_when_every_connection_is_busy_each_newcomer_gets_the_503(start):
    ext = start(SECRETCACHE_MAX_CLIENT_CONNECTIONS="2", SECRETCACHE_REQUEST_TIMEOUT_MILLIS="30000")
    busy = [partial_decrypt(ext) for _ in range(2)]
    time.sleep(0.5)
    clients = [socket.create_connection(("127.0.0.1", ext.port), timeout=10) for _ in range(40)]
    try:
        for sock in clients:
            sock.sendall(
                f"GET {secret_path('x')} HTTP/1.1\r\nHost: localhost\r\n"
                f"X-Aws-Parameters-Secrets-Token: {ext.token}\r\n\r\n".encode()
            )
        answers = [read_until_closed(sock) for sock in clients]
    finally:
        for sock in clients + busy:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["errorType"] == "TooManyConnections" and set(body) == {"errorType", "message"}
    assert ext.alive()


def test_a_client_aborting_mid_body_is_not_logged_as_an_error(start):
    ext = start()
    sock = partial_decrypt(ext)
    time.sleep(0.3)
    sock.close()
    time.sleep(0.5)
    assert ext.get("/health", token=None).status == 200
    assert '"level":"ERROR"' not in ext.logs(), ext.logs()[-2000:]
