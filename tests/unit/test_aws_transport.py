"""The lean client's HTTP transport and credentials, against real servers on loopback."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from secretcache.aws import transport
from secretcache.aws.credentials import (
    ADVISORY_REFRESH_SECONDS,
    ContainerCredentials,
    CredentialChain,
    CredentialRetrievalError,
)
from secretcache.aws.transport import ConnectionPool, Endpoint, HttpError

Handler = Callable[[bytes, dict[str, str]], bytes]


class LoopbackServer:
    """A small HTTP/1.1 server: answers each request with ``handler(body, headers)``'s bytes."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[dict[str, str]] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                headers["request-line"] = lines[0]
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(headers)
                writer.write(self.handler(body, headers))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(document: object, extra: str = "") -> bytes:
    body = json.dumps(document).encode()
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_a_pool_keeps_one_connection_alive_across_requests() -> None:
    async with LoopbackServer(lambda body, h: ok({"echo": body.decode()})) as server:
        pool = ConnectionPool(Endpoint(f"http://127.0.0.1:{server.port}"), max_idle=2)
        for i in range(5):
            status, _, body = await pool.request("POST", "/", {}, f"{i}".encode(), 5.0)
            assert (status, json.loads(body)) == (200, {"echo": f"{i}"})
        pool.close()
    assert server.connections == 1
    assert server.requests[0]["host"] == f"127.0.0.1:{server.port}"


async def test_a_chunked_answer_is_reassembled() -> None:
    def chunked(body: bytes, headers: dict[str, str]) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
        )

    async with LoopbackServer(chunked) as server:
        pool = ConnectionPool(Endpoint(f"http://127.0.0.1:{server.port}"), max_idle=1)
        assert (await pool.request("POST", "/", {}, b"", 5.0))[2] == b"hello world"
        pool.close()


async def test_a_body_cut_short_is_an_error_and_the_connection_is_not_reused() -> None:
    def short(body: bytes, headers: dict[str, str]) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(short(b"", {}))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(Endpoint(f"http://127.0.0.1:{port}"), max_idle=1)
    with pytest.raises(HttpError):
        await pool.request("POST", "/", {}, b"", 5.0)
    assert pool._idle == []
    server.close()


async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(Endpoint(f"http://127.0.0.1:{port}"), max_idle=1)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await pool.request("POST", "/", {}, b"", 0.3)
    assert time.monotonic() - started < 5
    server.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secretcache test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[LoopbackServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    async with LoopbackServer(lambda body, h: ok({"tls": True}), tls=context) as server:
        yield server
    transport.set_ca_bundle(None)


async def test_https_verifies_against_aws_ca_bundle(
    tls_server: LoopbackServer, certificate: tuple[Path, Path]
) -> None:
    bundle = transport.ca_bundle({"AWS_CA_BUNDLE": str(certificate[0])})
    assert bundle == str(certificate[0])
    transport.set_ca_bundle(bundle)
    pool = ConnectionPool(Endpoint(f"https://127.0.0.1:{tls_server.port}"), max_idle=1)
    for _ in range(3):
        status, _, body = await pool.request("POST", "/", {}, b"{}", 5.0)
        assert (status, json.loads(body)) == (200, {"tls": True})
    pool.close()
    assert tls_server.connections == 1


async def test_https_refuses_a_certificate_botocores_bundle_does_not_trust(
    tls_server: LoopbackServer,
) -> None:
    assert transport.ca_bundle({}) is not None  # botocore's cacert.pem, as the SDK uses
    transport.set_ca_bundle(transport.ca_bundle({}))
    pool = ConnectionPool(Endpoint(f"https://127.0.0.1:{tls_server.port}"), max_idle=1)
    with pytest.raises(ssl.SSLCertVerificationError):
        await pool.request("POST", "/", {}, b"{}", 5.0)


# --------------------------------------------------------------------------- credentials


def _credentials_server(expiration: str, seen: list[str]) -> Handler:
    def handler(body: bytes, headers: dict[str, str]) -> bytes:
        seen.append(headers.get("authorization", ""))
        if headers.get("authorization") != "container-token":
            return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
        return ok(
            {
                "AccessKeyId": f"AKID{len(seen)}",
                "SecretAccessKey": "container-secret",
                "Token": "container-session",
                "Expiration": expiration,
            }
        )

    return handler


def _in(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_container_credentials_are_fetched_with_the_token_and_cached() -> None:
    seen: list[str] = []
    async with LoopbackServer(_credentials_server(_in(6 * 3600), seen)) as server:
        chain = CredentialChain(
            {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{server.port}/creds",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-token",
            }
        )
        assert chain.source == "container"
        first = await chain.get()
        second = await chain.get()
    assert (first.access_key, first.secret_key, first.token) == (
        "AKID1",
        "container-secret",
        "container-session",
    )
    assert second is first and seen == ["container-token"]


async def test_container_credentials_refresh_before_they_expire(tmp_path: Path) -> None:
    seen: list[str] = []
    token_file = tmp_path / "token"
    token_file.write_text("container-token\n")
    async with LoopbackServer(_credentials_server(_in(3600), seen)) as server:
        now = [time.time()]
        provider = ContainerCredentials(
            f"http://127.0.0.1:{server.port}/creds",
            {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file)},
            clock=lambda: now[0],
        )
        assert (await provider.get()).access_key == "AKID1"
        now[0] += 3600 - ADVISORY_REFRESH_SECONDS + 1  # inside the refresh window
        assert (await provider.get()).access_key == "AKID2"
    assert seen == ["container-token", "container-token"]


async def test_under_snapstart_the_container_endpoint_wins_and_a_restore_reads_it_again() -> None:
    seen: list[str] = []
    async with LoopbackServer(_credentials_server(_in(6 * 3600), seen)) as server:
        chain = CredentialChain(
            {
                "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
                # keys in the environment would be the snapshot's: not used under SnapStart
                "AWS_ACCESS_KEY_ID": "AKIDSNAPSHOT",
                "AWS_SECRET_ACCESS_KEY": "s",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{server.port}/creds",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-token",
            }
        )
        assert chain.source == "container"
        assert (await chain.get()).access_key == "AKID1"
        assert (await chain.get()).access_key == "AKID1"  # held between calls
        chain.invalidate()  # a restore
        assert (await chain.get()).access_key == "AKID2"
    assert seen == ["container-token", "container-token"]


async def test_a_refused_credentials_request_says_so_without_the_token() -> None:
    async with LoopbackServer(_credentials_server(_in(3600), [])) as server:
        chain = CredentialChain(
            {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{server.port}/",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "wrong-token-value",
            }
        )
        with pytest.raises(CredentialRetrievalError) as info:
            await chain.get()
    assert "403" in str(info.value) and "wrong-token-value" not in str(info.value)


async def test_plain_http_to_a_host_that_is_not_loopback_or_the_container_agent_is_refused() -> (
    None
):
    chain = CredentialChain({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://192.0.2.1/creds"})
    with pytest.raises(CredentialRetrievalError):
        await chain.get()


async def test_environment_credentials_win_and_a_profile_goes_through_botocore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    chain = CredentialChain(env)
    assert chain.source == "environment" and (await chain.get()).token == "t"
    shared = tmp_path / "credentials"
    shared.write_text("[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = f\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fallback = CredentialChain({})
    assert fallback.source == "botocore"
    assert (await fallback.get()).access_key == "AKIDFILE"
