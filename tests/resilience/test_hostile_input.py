"""Hostile input: random methods, paths, queries, headers and bodies, huge and malformed
requests, invalid UTF-8 and percent-escapes, raw garbage. Never a 5xx, a crash, a hang or a stack
trace; every rejection is a 4xx JSON error; nothing without the token reads a value."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.fault_proxy import Fault, FaultProxy

from .conftest import ObservedExtension, finish_extension, new_extension

#: Long enough that a slow CI box never trips it, short enough that a hang fails the example.
SOCKET_TIMEOUT = 10.0
OPEN_PATHS = ("/health", "/ping")
SETTINGS = settings(
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def target(moto_server, hygiene) -> Iterator[ObservedExtension]:
    """One extension for the module; AWS always answers not-found, so any 5xx is ours."""
    proxy = FaultProxy(moto_server.port).start()
    proxy.set_fault(Fault.aws_error(400, "ResourceNotFoundException"))
    ext = new_extension(moto_server, hygiene, proxy, PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL="info")
    ext.start()
    yield ext
    finish_extension(ext, hygiene, "hostile input")
    proxy.stop()
    assert not hygiene.leaks(), hygiene.leaks()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, data: bytes, *, half_close: bool, head: bool = False) -> Answer | None:
    """Send bytes, read one HTTP response (or None if the server closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: read the answer
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except ConnectionResetError:
            pass
        if b"\r\n\r\n" not in buf:
            assert buf == b"", f"partial response: {buf[:200]!r}"
            return None
        raw_head, body = buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        try:
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except ConnectionResetError:
            pass
        assert len(body) >= length, "truncated response body"
        return Answer(status, headers, body[:length])


def check(ext: ObservedExtension, answer: Answer | None, *, authorized: bool, path: str) -> None:
    assert ext.alive(), "the extension died"
    if answer is None:
        return
    ext.hygiene.record(f"fuzz {answer.status}", answer.body)
    assert answer.status < 500, (answer.status, answer.body[:300])
    assert not [h for h in answer.headers if h.startswith("access-control-")]
    assert b"Traceback" not in answer.body
    if answer.status >= 400 and answer.body:
        assert answer.headers.get("content-type", "").startswith("application/json")
        body = json.loads(answer.body)
        # The Agent's routes answer in its error shape; a decoded path may turn into one.
        shapes = [{"errorType", "message"}]
        if unquote(path).startswith(("/v1", "/ping")):
            shapes.append({"__type", "message"})
        assert set(body) in shapes, body
        assert all(isinstance(v, str) and v for v in body.values())
    if 200 <= answer.status < 300 and not path.startswith(OPEN_PATHS):
        assert authorized, f"{path!r} answered {answer.status} without the token"


# Strategies --------------------------------------------------------------------------------

ROUTES = [
    "/secretsmanager/get",
    "/secretsmanager/get/",
    "/secretsmanager/batchget",
    "/systemsmanager/parameters/get",
    "/systemsmanager/parameters/getbatch",
    "/systemsmanager/parameters/getbypath",
    "/kms/decrypt",
    "/v1/",
    "/health",
    "/metrics",
    "/ping",
    "/",
    "",
    "*",
    "//",
    "/../../etc/passwd",
]
ESCAPES = ["%", "%2", "%zz", "%ff", "%fe%ff", "%c3%28", "%e2%82", "%00", "%0d%0a", "%25", "%2F"]
PARAMS = ["secretId", "name", "path", "versionId", "versionStage", "version", "label"]
PARAMS += ["withDecryption", "recursive", "refreshNow", ""]

URLISH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/:@!$'()*+,;=%"
urlish = st.text(alphabet=URLISH, max_size=30)


def mostly(tame: st.SearchStrategy, wild: st.SearchStrategy) -> st.SearchStrategy:
    """Tame five times in six, so most requests get past the parser to routing and handlers."""
    return st.integers(0, 5).flatmap(lambda i: wild if i == 0 else tame)


text_piece = mostly(
    urlish | st.sampled_from(ESCAPES),
    st.one_of(
        st.text(max_size=30),
        st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
        st.sampled_from(["a" * 2048, "b" * 2049, "%41" * 700, "x" * 9000]),
    ),
)
query_value = st.lists(text_piece, max_size=4).map("".join)
query = st.lists(
    st.tuples(mostly(st.sampled_from(PARAMS), st.text(max_size=8)), query_value), max_size=5
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
path = mostly(
    st.sampled_from(ROUTES[:11]),
    st.tuples(st.sampled_from(ROUTES), st.lists(text_piece, max_size=3).map("".join)).map("".join),
)
READS = [
    ("/secretsmanager/get?secretId=", ""),
    ("/systemsmanager/parameters/get?name=", "&withDecryption=true"),
    ("/systemsmanager/parameters/getbypath?path=/", "&recursive=true"),
    ("/secretsmanager/batchget?secretId=", "&secretId=b"),
    ("/systemsmanager/parameters/getbatch?name=", "&name=b"),
    ("/v1/", ""),
]
#: A read with its required parameter, so the request reaches the cache and upstream.
well_formed_read = st.tuples(st.sampled_from(READS), query_value, st.none() | query).map(
    lambda t: t[0][0] + (t[1] or "x") + t[0][1] + ("&" + t[2] if t[2] else "")
)
VERBS = ["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "get"]
method = mostly(
    st.sampled_from(VERBS),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~@ \x00\xff", min_size=1, max_size=12
    ),
)
header_name = mostly(
    st.sampled_from(
        [
            "Accept",
            "User-Agent",
            "X-Request-Id",
            "Content-Type",
            "Origin",
            "Cookie",
            "Authorization",
            "X-Forwarded-For",
            "Transfer-Encoding",
            "Content-Encoding",
            "Upgrade",
            "Range",
            "X-Vault-Token",
            "X-Aws-Parameters-Secrets-Token",
        ]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789:@ \t\xe9", min_size=1, max_size=20),
)
header_value = mostly(
    urlish,
    st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
        st.sampled_from(["chunked", "gzip", "websocket", "bytes=0-1", "a" * 9000, "\x00", "é"]),
    ),
)
body = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.sampled_from(
        [
            b'{"CiphertextBlob": "AAAA"}',
            b'{"CiphertextBlob": "!!"}',
            b'{"CiphertextBlob": "AAAA", "EncryptionContext": {"a": 1}}',
            b'{"x": ' * 500,
            b"[]",
            b"null",
            b"\xff\xfe\x00",
            b"z" * (70 * 1024),
        ]
    ),
)


@st.composite
def requests(draw: st.DrawFn, port: int, token: str) -> tuple[bytes, bool, bool, str, bool]:
    """(bytes, authorized, incomplete, path, head)."""
    m = draw(method)
    if draw(st.booleans()):
        target = draw(well_formed_read)
    else:
        target = draw(path)
        q = draw(st.none() | query)
        if q is not None:
            target += "?" + q
    token_choice = draw(
        st.sampled_from(["right", "right", "right", "wrong", "none", "empty", "vault"])
    )
    host = draw(
        st.sampled_from(
            [f"127.0.0.1:{port}"] * 4
            + ["localhost", "evil.com", "", None, f"[::1]:{port}", "a" * 300]
        )
    )
    lines = [f"{m} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if token_choice == "right":
        lines.append(f"X-Aws-Parameters-Secrets-Token: {token}")
    elif token_choice == "vault":
        lines.append(f"X-Vault-Token: {token}")
    elif token_choice == "wrong":
        lines.append("X-Aws-Parameters-Secrets-Token: " + draw(st.text(max_size=60)))
    elif token_choice == "empty":
        lines.append("X-Aws-Parameters-Secrets-Token: ")
    for name, value in draw(st.lists(st.tuples(header_name, header_value), max_size=4)):
        if name.strip().lower() not in ("expect", "content-length", "connection"):
            lines.append(f"{name}: {value}")
    payload = draw(body)
    incomplete = False
    length = draw(st.sampled_from(["exact", "exact", "none", "none", "short", "long", "garbage"]))
    if length == "exact" or (payload and length == "none"):
        lines.append(f"Content-Length: {len(payload)}")
    elif length == "short":
        lines.append(f"Content-Length: {max(0, len(payload) - 1)}")
    elif length == "long":
        lines.append(f"Content-Length: {len(payload) + 10}")
        incomplete = True
    elif length == "garbage":
        lines.append("Content-Length: " + draw(st.sampled_from(["-1", "abc", "1e3", " 5", "0x10"])))
    lines.append("Connection: close")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    authorized = token_choice in ("right", "vault")
    return head + payload, authorized, incomplete, target, m == "HEAD"


@pytest.mark.slow
@given(data=st.data())
@SETTINGS
def test_random_http_requests_get_4xx_json_never_5xx(target, data):
    raw, authorized, incomplete, req_path, head = data.draw(
        requests(target.port, target.token), label="request"
    )
    answer = exchange(target.port, raw, half_close=incomplete, head=head)
    if not incomplete:
        assert answer is not None, "no answer to a complete request"
    event(f"status {answer.status if answer else None}")
    check(target, answer, authorized=authorized, path=req_path)


GARBAGE_PREFIXES = [
    b"",
    b"GET ",
    b"GET / HTTP/1.1\r\n",
    b"POST /kms/decrypt HTTP/1.1\r\n",
    b"\x16\x03",
]


@pytest.mark.slow
@given(prefix=st.sampled_from(GARBAGE_PREFIXES), noise=st.binary(min_size=1, max_size=3000))
@settings(SETTINGS, max_examples=400)
def test_raw_garbage_over_a_socket_never_breaks_the_extension(target, prefix, noise):
    answer = exchange(target.port, prefix + noise, half_close=True)
    check(target, answer, authorized=False, path="garbage")


def test_extension_still_serves_after_the_fuzzing(target):
    result = target.get("/health", token=None)
    assert result.status == 200 and result.json() == {"status": "ok"}
    assert target.get("/secretsmanager/get?secretId=after-fuzz").status == 404
