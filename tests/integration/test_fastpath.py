"""The listener's fast path: hot reads answered without aiohttp, everything else handed over.

A fast-path response carries no `Server` header; aiohttp's does. These tests pin that both paths
give the same answers, in order, on one connection.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.extension_process import ExtensionProcess
from tools.moto_server import MotoServer
from tools.net import read_until_closed, rss_kib


@pytest.fixture
def seeded(moto_server: MotoServer, unique: str) -> dict[str, str]:
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=f"{unique}/a", SecretString="value-a")
    sm.create_secret(Name=f"{unique}/b", SecretString="value-b")
    moto_server.client("ssm").put_parameter(Name=f"/{unique}/p", Value="value-p", Type="String")
    return {"a": f"{unique}/a", "b": f"{unique}/b", "p": f"/{unique}/p"}


class RawConnection:
    """One keep-alive connection; reads responses by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed before a response"
            self.pending += chunk
        head, _, rest = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed inside a body"
            rest += chunk
        self.pending = rest[length:]
        return status, headers, rest[:length]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def conn(extension: ExtensionProcess) -> Iterator[RawConnection]:
    connection = RawConnection(extension.port)
    yield connection
    connection.close()


def get(path: str, token: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", f"X-Aws-Parameters-Secrets-Token: {token}"]
    return ("\r\n".join([*lines, *extra, "", ""])).encode()


def test_hits_and_misses_are_served_without_aiohttp(
    extension: ExtensionProcess, conn: RawConnection, seeded: dict[str, str]
) -> None:
    for _ in range(3):
        conn.send(get(f"/secretsmanager/get?secretId={seeded['a']}", extension.token))
        status, headers, body = conn.response()
        assert status == 200
        assert "server" not in headers  # the fast path answered
        assert headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-store"
        assert "date" in headers
        assert json.loads(body)["SecretString"] == "value-a"
    conn.send(get(f"/systemsmanager/parameters/get/?name={seeded['p']}", extension.token))
    status, headers, body = conn.response()
    assert status == 200 and "server" not in headers
    assert json.loads(body)["Parameter"]["Value"] == "value-p"


def test_pipelined_requests_are_answered_in_order(
    extension: ExtensionProcess, conn: RawConnection, seeded: dict[str, str]
) -> None:
    token = extension.token
    conn.send(
        get(f"/secretsmanager/get?secretId={seeded['a']}", token)  # miss
        + get(f"/secretsmanager/get?secretId={seeded['b']}", token)  # miss
        + get(f"/secretsmanager/get?secretId={seeded['a']}", token)  # hit
        + get("/secretsmanager/get?secretId=does-not-exist-anywhere", token)  # 404
    )
    answers = [conn.response() for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 404]
    values = [json.loads(a[2]).get("SecretString") for a in answers[:3]]
    assert values == ["value-a", "value-b", "value-a"]
    assert json.loads(answers[3][2])["errorType"] == "ResourceNotFoundException"


def test_a_request_the_fast_path_does_not_take_hands_the_connection_to_aiohttp(
    extension: ExtensionProcess, conn: RawConnection, seeded: dict[str, str]
) -> None:
    token = extension.token
    conn.send(get(f"/secretsmanager/get?secretId={seeded['a']}", token))
    assert conn.response()[0] == 200
    conn.send(
        get("/no/such/path", token) + get(f"/secretsmanager/get?secretId={seeded['a']}", token)
    )
    status, headers, body = conn.response()
    assert status == 404 and json.loads(body)["errorType"] == "UnknownPath"
    assert "aiohttp" in headers.get("server", "")
    status, headers, body = conn.response()
    assert status == 200 and json.loads(body)["SecretString"] == "value-a"
    assert "aiohttp" in headers.get("server", "")  # the connection now belongs to aiohttp


TOKEN = "X-Aws-Parameters-Secrets-Token: {token}"


def raw(line: str, *headers: str) -> bytes:
    return "\r\n".join([line, "Host: localhost", *headers, "", ""]).encode()


@pytest.mark.parametrize(
    ("request_bytes", "status", "error_type"),
    [
        (raw("GET /secretsmanager/get?secretId=x HTTP/1.1"), 401, "MissingToken"),
        (raw("GET /secretsmanager/get?secretId=x HTTP/1.1", TOKEN + "x"), 401, "InvalidToken"),
        (
            b"GET /secretsmanager/get?secretId=x HTTP/1.1\r\nHost: evil.example\r\n"
            + TOKEN.encode()
            + b"\r\n\r\n",
            403,
            "ForbiddenHost",
        ),
        (raw("GET /secretsmanager/get HTTP/1.1", TOKEN), 400, "MissingParameter"),
        (
            raw("GET /secretsmanager/get?secretId=x&refreshNow=no-way HTTP/1.1", TOKEN),
            400,
            "BadRequest",
        ),
        (
            raw("GET /systemsmanager/parameters/get?name=x&version=a HTTP/1.1", TOKEN),
            400,
            "BadRequest",
        ),
        (raw("GET /secretsmanager/get?secretId=%FF HTTP/1.1", TOKEN), 400, "BadRequest"),
        (
            raw("POST /secretsmanager/get?secretId=x HTTP/1.1", TOKEN, "Content-Length: 0"),
            405,
            "MethodNotAllowed",
        ),
        (
            raw("GET /secretsmanager/get?secretId=x HTTP/1.1", TOKEN.replace(":", " :")),
            400,
            "BadRequest",
        ),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "foreign-host",
        "no-secretId",
        "bad-flag",
        "bad-version",
        "bad-utf8",
        "post",
        "space-before-colon",
    ],
)
def test_rejections_are_aiohttps_json_errors(
    extension: ExtensionProcess, request_bytes: bytes, status: int, error_type: str
) -> None:
    conn = RawConnection(extension.port)
    try:
        conn.send(request_bytes.replace(b"{token}", extension.token.encode()))
        got_status, headers, body = conn.response()
    finally:
        conn.close()
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["errorType"] == error_type


def test_refresh_now_and_stale_headers_go_through_the_same_cache(
    extension: ExtensionProcess,
    conn: RawConnection,
    moto_server: MotoServer,
    seeded: dict[str, str],
) -> None:
    token = extension.token
    conn.send(get(f"/secretsmanager/get?secretId={seeded['b']}", token))
    assert json.loads(conn.response()[2])["SecretString"] == "value-b"
    moto_server.client("secretsmanager").put_secret_value(
        SecretId=seeded["b"], SecretString="value-b2"
    )
    conn.send(get(f"/secretsmanager/get?secretId={seeded['b']}", token))
    assert json.loads(conn.response()[2])["SecretString"] == "value-b"
    conn.send(get(f"/secretsmanager/get?secretId={seeded['b']}&refreshNow=true", token))
    status, headers, body = conn.response()
    assert status == 200 and "server" not in headers
    assert json.loads(body)["SecretString"] == "value-b2"


def test_half_closed_connection_still_gets_its_answer(
    extension: ExtensionProcess, seeded: dict[str, str]
) -> None:
    conn = RawConnection(extension.port)
    try:
        conn.send(get(f"/secretsmanager/get?secretId={seeded['a']}", extension.token))
        conn.sock.shutdown(socket.SHUT_WR)
        status, _, body = conn.response()
        assert status == 200 and json.loads(body)["SecretString"] == "value-a"
        assert conn.sock.recv(10) == b""  # then the extension closes its side
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/health", "/secretsmanager/get?secretId=x"])
def test_absolute_form_targets_are_refused_even_with_a_local_host_header(
    extension: ExtensionProcess, path: str
) -> None:
    conn = RawConnection(extension.port)
    try:
        conn.send(
            f"GET http://evil.example{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-Aws-Parameters-Secrets-Token: {extension.token}\r\n\r\n".encode()
        )
        status, _, body = conn.response()
    finally:
        conn.close()
    assert status == 403
    assert json.loads(body)["errorType"] == "ForbiddenHost"


# Hostile and unusual clients (issue 12) -------------------------------------------------------


def test_a_client_that_does_not_read_cannot_grow_memory_without_bound(
    start_extension: Callable[..., ExtensionProcess], moto_server: MotoServer, unique: str
) -> None:
    name = f"{unique}/big"
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="x" * 65536)
    extension = start_extension()
    assert extension.get(f"/secretsmanager/get?secretId={name}").status == 200
    assert extension.process is not None
    before = rss_kib(extension.process.pid)
    sock = socket.create_connection(("127.0.0.1", extension.port))
    sock.setblocking(False)
    pending = get(f"/secretsmanager/get?secretId={name}", extension.token) * 3000
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        try:
            pending = pending[sock.send(pending) :]
        except BlockingIOError:
            time.sleep(0.05)
    time.sleep(1.0)
    grown_mib = (rss_kib(extension.process.pid) - before) / 1024
    sock.close()
    # 3000 answers of 64 KiB would be ~190 MiB if every one were buffered for a client that
    # never reads; stopping reading at the write buffer's high-water mark keeps it to a few.
    assert grown_mib < 40, grown_mib
    assert extension.get(f"/secretsmanager/get?secretId={name}").status == 200


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /secretsmanager/get?secretId=x HTTP/1.1\nHost: localhost\n\n",
        bytes.fromhex("16030100c4010000c00303") + b"\x00" * 40,
    ],
    ids=["bare-lf", "tls-client-hello"],
)
def test_garbage_is_answered_400_and_closed(extension: ExtensionProcess, garbage: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", extension.port))
    try:
        sock.sendall(garbage)
        answer = read_until_closed(sock)
    finally:
        sock.close()
    # aiohttp's parser answers what it cannot parse as HTTP/1.0 (it never learnt the version).
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), answer[:80]


def test_http_1_0_request_then_fin_is_answered_and_closed(extension: ExtensionProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", extension.port))
    try:
        sock.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
    finally:
        sock.close()
    assert answer.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 200 ")), answer[:80]


def test_pipelined_miss_and_metrics_then_fin_are_answered_and_closed(
    extension: ExtensionProcess, seeded: dict[str, str]
) -> None:
    sock = socket.create_connection(("127.0.0.1", extension.port))
    try:
        sock.sendall(
            get(f"/secretsmanager/get?secretId={seeded['a']}", extension.token)
            + get("/metrics", extension.token)
        )
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
    finally:
        sock.close()
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:200]
    assert b"value-a" in answer and b'"services"' in answer


def fast_and_slow(extension: ExtensionProcess, seeded: dict[str, str], *extra: bytes) -> list[int]:
    """The status the fast path's route and an aiohttp-only route give one set of headers."""
    statuses = []
    for target in (f"/secretsmanager/get?secretId={seeded['a']}", "/metrics"):
        head = f"GET {target} HTTP/1.1\r\nX-Aws-Parameters-Secrets-Token: {extension.token}\r\n"
        sock = socket.create_connection(("127.0.0.1", extension.port))
        try:
            sock.sendall(head.encode() + b"".join(extra) + b"\r\n")
            answer = sock.recv(65536)
        finally:
            sock.close()
        statuses.append(int(answer.split(b" ")[1]))
    return statuses


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ((), 400),
        ((b"Host: localhost\r\n", b"Content-Length: 0\r\n", b"Content-Length: 0\r\n"), 400),
        ((b"Host: localhost\r\n", *(b"X-N%d: v\r\n" % i for i in range(130))), 431),
    ],
    ids=["http-1.1-without-host", "duplicate-content-length", "over-128-headers"],
)
def test_both_stacks_apply_the_same_request_rules(
    extension: ExtensionProcess, seeded: dict[str, str], extra: tuple[bytes, ...], status: int
) -> None:
    assert fast_and_slow(extension, seeded, *extra) == [status, status]


@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive"])
def test_connection_keep_alive_stays_on_the_fast_path(
    extension: ExtensionProcess, conn: RawConnection, seeded: dict[str, str], value: str
) -> None:
    for _ in range(2):
        conn.send(
            get(
                f"/secretsmanager/get?secretId={seeded['a']}",
                extension.token,
                f"Connection: {value}",
            )
        )
        status, headers, _ = conn.response()
        assert status == 200 and "server" not in headers


def test_connection_close_is_served_on_the_fast_path_and_closed(
    extension: ExtensionProcess, seeded: dict[str, str]
) -> None:
    sock = socket.create_connection(("127.0.0.1", extension.port))
    try:
        sock.sendall(
            get(f"/secretsmanager/get?secretId={seeded['a']}", extension.token, "Connection: close")
        )
        answer = read_until_closed(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nServer:" not in answer
    assert b"value-a" in answer


@pytest.mark.parametrize(
    "target",
    ["/secretsmanager/get?secretId=caf\u00e9", "/v1/caf\u00e9"],
    ids=["query", "agent-path"],
)
def test_raw_utf8_in_the_request_line_is_refused_400_as_the_readme_says(
    extension: ExtensionProcess, target: str
) -> None:
    sock = socket.create_connection(("127.0.0.1", extension.port))
    try:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
            f"X-Aws-Parameters-Secrets-Token: {extension.token}\r\n\r\n".encode()
        )
        answer = read_until_closed(sock)
    finally:
        sock.close()
    assert answer.split(b" ", 2)[1] == b"400", answer[:80]


def post_decrypt(document: object, token: str, *extra: str, raw_body: bytes | None = None) -> bytes:
    body = raw_body if raw_body is not None else json.dumps(document).encode()
    lines = [
        "POST /kms/decrypt HTTP/1.1",
        "Host: localhost",
        f"X-Aws-Parameters-Secrets-Token: {token}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join([*lines, "", ""])).encode() + body


def test_kms_decrypt_is_served_without_aiohttp_even_when_its_body_arrives_in_pieces(
    extension: ExtensionProcess, conn: RawConnection, moto_server: MotoServer
) -> None:
    import base64
    import time

    kms = moto_server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"kms-value", EncryptionContext={"app": "fast"})
    document = {
        "CiphertextBlob": base64.b64encode(blob["CiphertextBlob"]).decode(),
        "EncryptionContext": {"app": "fast"},
    }
    request = post_decrypt(document, extension.token)
    for cut in (len(request) - 5, 40):  # inside the body, then inside the head
        conn.send(request[:cut])
        time.sleep(0.05)
        conn.send(request[cut:])
        status, headers, body = conn.response()
        assert status == 200 and "server" not in headers, body
        assert base64.b64decode(json.loads(body)["Plaintext"]) == b"kms-value"
    # The same request through aiohttp (after a hand-off) answers the same bytes from the cache.
    conn.send(get("/no/such/path", extension.token))
    assert conn.response()[0] == 404
    conn.send(request)
    status, headers, body_via_aiohttp = conn.response()
    assert status == 200 and "aiohttp" in headers.get("server", "")
    assert body_via_aiohttp == body


@pytest.mark.parametrize(
    ("raw_body", "status", "error_type"),
    [
        (b"not json", 400, "BadRequest"),
        (b'{"CiphertextBlob": ""}', 400, "MissingParameter"),
        (b'{"CiphertextBlob": "AAAA", "Extra": 1}', 400, "BadRequest"),
        (b"x" * (64 * 1024 + 1), 413, "PayloadTooLarge"),
    ],
    ids=["not-json", "empty-blob", "unknown-field", "too-large"],
)
def test_a_decrypt_the_fast_path_refuses_gets_aiohttps_error(
    extension: ExtensionProcess, conn: RawConnection, raw_body: bytes, status: int, error_type: str
) -> None:
    conn.send(post_decrypt(None, extension.token, raw_body=raw_body))
    got, headers, body = conn.response()
    assert (got, json.loads(body)["errorType"]) == (status, error_type)
    assert "aiohttp" in headers.get("server", "")


def test_health_is_answered_without_aiohttp_and_a_foreign_host_still_goes_to_it(
    extension: ExtensionProcess, conn: RawConnection
) -> None:
    conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status, headers, body = conn.response()
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert "server" not in headers
    conn.send(b"GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    status, headers, body = conn.response()
    assert (status, json.loads(body)["errorType"]) == (403, "ForbiddenHost")
    assert "aiohttp" in headers.get("server", "")


def exchange_both_ways(
    conn: RawConnection, token: str, target: str
) -> tuple[list[tuple[int, dict[str, str], bytes]], tuple[int, dict[str, str], bytes]]:
    """`target` twice on the fast path (a miss, then what the cache holds), then once through
    aiohttp after a hand-off."""
    fast = []
    for _ in range(2):
        conn.send(get(target, token))
        fast.append(conn.response())
    conn.send(get("/no/such/path", token))
    assert conn.response()[0] == 404
    conn.send(get(target, token))
    return fast, conn.response()


@pytest.mark.parametrize(
    "target",
    [
        "/secretsmanager/batchget?secretId={a}&secretId={b}&secretId={a}&secretId={unique}-absent",
        "/secretsmanager/batchget/?secretId={b}",
        "/systemsmanager/parameters/getbatch?name={p}&name=/{unique}/absent&withDecryption=true",
        "/systemsmanager/parameters/getbatch/?name={p}",
    ],
    ids=["batchget", "batchget-slash", "getbatch", "getbatch-slash"],
)
def test_batch_reads_are_served_without_aiohttp_with_the_same_bytes_as_aiohttp(
    extension: ExtensionProcess,
    conn: RawConnection,
    seeded: dict[str, str],
    unique: str,
    target: str,
) -> None:
    """The exec wrapper's reads at start: no aiohttp to wait for, and not one byte different."""
    fast, slow = exchange_both_ways(conn, extension.token, target.format(unique=unique, **seeded))
    for status, headers, body in fast:
        assert status == 200 and "server" not in headers, body
    assert "aiohttp" in slow[1].get("server", "")
    assert fast[0][2] == fast[1][2] == slow[2]
    assert fast[1][0] == slow[0]
    for header in ("content-type", "cache-control", "content-length"):
        assert fast[1][1][header] == slow[1][header], header
    assert b"value-" in slow[2]


@pytest.mark.parametrize(
    ("target", "status", "error_type"),
    [
        ("/secretsmanager/batchget", 400, "MissingParameter"),
        ("/secretsmanager/batchget?secretId=", 400, "MissingParameter"),
        ("/secretsmanager/batchget?" + "&".join(["secretId=x"] * 101), 400, "BadRequest"),
        ("/systemsmanager/parameters/getbatch?withDecryption=maybe&name=/x", 400, "BadRequest"),
    ],
    ids=["no-id", "empty-id", "101-ids", "bad-flag"],
)
def test_a_batch_read_the_fast_path_refuses_gets_aiohttps_error(
    extension: ExtensionProcess, conn: RawConnection, target: str, status: int, error_type: str
) -> None:
    conn.send(get(target, extension.token))
    got, headers, body = conn.response()
    assert (got, json.loads(body)["errorType"]) == (status, error_type)
    assert "aiohttp" in headers.get("server", "")


def aiohttp_mapped(pid: int) -> bool:
    """Whether aiohttp's compiled modules are mapped into the process (it was imported)."""
    with open(f"/proc/{pid}/maps") as maps:
        return "/aiohttp/" in maps.read()


def test_the_exec_wrappers_requests_never_load_aiohttp(
    start_extension: Callable[..., ExtensionProcess],
    seeded: dict[str, str],
    moto_server: MotoServer,
) -> None:
    """Every kind of request the exec wrapper makes (envresolve.py), a miss then a hit each; then
    a route only aiohttp serves loads it, so the check can tell."""
    import base64

    kms = moto_server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = base64.b64encode(kms.encrypt(KeyId=key, Plaintext=b"k")["CiphertextBlob"]).decode()
    extension = start_extension()
    assert extension.process is not None
    pid, token = extension.process.pid, extension.token
    conn = RawConnection(extension.port)
    try:
        requests = [
            get(f"/secretsmanager/batchget?secretId={seeded['a']}&secretId={seeded['b']}", token),
            get(
                f"/systemsmanager/parameters/getbatch?name={seeded['p']}&withDecryption=false",
                token,
            ),
            get(f"/secretsmanager/get?secretId={seeded['a']}&versionStage=AWSCURRENT", token),
            get(f"/systemsmanager/parameters/get?name={seeded['p']}&withDecryption=true", token),
            post_decrypt({"CiphertextBlob": blob}, token),
        ]
        for request in requests * 2:
            conn.send(request)
            status, headers, body = conn.response()
            assert status == 200 and "server" not in headers, body
        assert not aiohttp_mapped(pid)
        conn.send(get("/metrics", token))
        assert conn.response()[0] == 200
        assert aiohttp_mapped(pid)
    finally:
        conn.close()
