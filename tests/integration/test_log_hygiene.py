"""Every log line of a debug-level run with known secrets: no value, plaintext or token in any."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from tests.support.extension_process import TOKEN_HEADER, ExtensionProcess
from tools.moto_server import MotoServer
from tools.net import free_port


@dataclass
class Run:
    process: ExtensionProcess
    sensitive: dict[str, str]
    statuses: dict[str, int]
    stdout: list[str]
    stderr: list[str]


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        chunks = []
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            pass
    return b"".join(chunks)


@pytest.fixture(scope="module")
def run(moto_server: MotoServer) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:8]
    secret_value = "SV-" + secrets.token_hex(20)
    binary_value = b"BIN-" + secrets.token_hex(20).encode() + b"\x00\xff"
    secure_value = "SS-" + secrets.token_hex(20)
    kms_plaintext = b"KP-" + secrets.token_hex(20).encode()
    token = "tok-" + secrets.token_hex(48)
    near_token = token[:-1] + ("0" if token[-1] != "0" else "1")

    sm = moto_server.client("secretsmanager")
    ssm = moto_server.client("ssm")
    kms = moto_server.client("kms")
    sm.create_secret(Name=f"{tag}/s", SecretString=secret_value)
    sm.create_secret(Name=f"{tag}/b", SecretBinary=binary_value)
    ssm.put_parameter(Name=f"/{tag}/secure", Value=secure_value, Type="SecureString")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=kms_plaintext, EncryptionContext={"app": tag})[
        "CiphertextBlob"
    ]
    blob_b64 = base64.b64encode(blob).decode()

    process = ExtensionProcess(
        {
            **moto_server.env(),
            "AWS_SESSION_TOKEN": token,
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "debug",
            "SECRETCACHE_NOT_FOUND_TTL": "0",
        }
    ).start()
    statuses: dict[str, int] = {}

    def get(label: str, path: str, **kwargs: object) -> None:
        statuses[label] = process.get(path, **kwargs).status  # type: ignore[arg-type]

    def post(label: str, body: bytes, **kwargs: object) -> None:
        statuses[label] = process.request("POST", "/kms/decrypt", body=body, **kwargs).status  # type: ignore[arg-type]

    try:
        # successes, hits and refreshes
        for suffix in ("", "", "&refreshNow=true"):
            get(f"secret{suffix}", f"/secretsmanager/get?secretId={tag}/s{suffix}")
        get("binary", f"/secretsmanager/get?secretId={tag}/b")
        get("secure", f"/systemsmanager/parameters/get?name=/{tag}/secure&withDecryption=true")
        get("secure-hit", f"/systemsmanager/parameters/get?name=/{tag}/secure&withDecryption=true")
        get("secure-raw", f"/systemsmanager/parameters/get?name=/{tag}/secure")
        get(
            "reference",
            f"/systemsmanager/parameters/get?name=/aws/reference/secretsmanager/{tag}/s"
            "&withDecryption=true",
        )
        decrypt = json.dumps({"CiphertextBlob": blob_b64, "EncryptionContext": {"app": tag}})
        post("kms", decrypt.encode())
        post("kms-hit", decrypt.encode())
        # errors
        get("not-found-secret", f"/secretsmanager/get?secretId={tag}/missing")
        get("not-found-param", f"/systemsmanager/parameters/get?name=/{tag}/missing")
        get("missing-param", "/secretsmanager/get")
        get("bad-version", f"/systemsmanager/parameters/get?name=/{tag}/secure&version=x")
        get("bad-utf8", "/secretsmanager/get?secretId=%FF")
        get("too-long", "/secretsmanager/get?secretId=" + "a" * 3000)
        get("unknown-path", "/nothing/here")
        get("no-token", f"/secretsmanager/get?secretId={tag}/s", token=None)
        get("near-token", f"/secretsmanager/get?secretId={tag}/s", token=near_token)
        get("token-prefix", f"/secretsmanager/get?secretId={tag}/s", token=token[:40])
        get(
            "near-token-vault",
            f"/secretsmanager/get?secretId={tag}/s",
            token=None,
            headers={"X-Vault-Token": near_token},
        )
        post(
            "kms-wrong-context",
            json.dumps({"CiphertextBlob": blob_b64, "EncryptionContext": {"app": "x"}}).encode(),
        )
        post("kms-no-context", json.dumps({"CiphertextBlob": blob_b64}).encode())
        post(
            "kms-garbage",
            json.dumps({"CiphertextBlob": base64.b64encode(b"garbage" * 10).decode()}).encode(),
        )
        post("kms-not-json", b"{" + blob_b64.encode())
        post(
            "kms-bad-context",
            json.dumps({"CiphertextBlob": blob_b64, "EncryptionContext": 5}).encode(),
        )
        post("kms-too-big", json.dumps({"CiphertextBlob": blob_b64 * 2000}).encode())
        # malformed HTTP carrying the token and a value: nothing may echo it to a log
        raw_request(
            process.port,
            (
                f"GET /secretsmanager/get?secretId={quote(secret_value)} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\n{TOKEN_HEADER}: {token}\r\nBroken header line\r\n\r\n"
            ).encode(),
        )
        raw_request(process.port, f"GARBAGE {token} HTTP/9.9\r\n\r\n".encode())
    finally:
        process.stop()

    # a second run whose KMS endpoint is dead: retries (debug) and a 502 (warn) get logged
    dead = ExtensionProcess(
        {
            **moto_server.env(),
            "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{free_port()}",
            "SECRETCACHE_KMS_TIMEOUT_MILLIS": "400",
            "AWS_SESSION_TOKEN": token,
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "debug",
        }
    ).start()
    try:
        statuses["kms-unreachable"] = dead.request(
            "POST", "/kms/decrypt", body=decrypt.encode()
        ).status
    finally:
        dead.stop()

    sensitive = {
        "secret string": secret_value,
        "binary (base64)": base64.b64encode(binary_value).decode(),
        "binary (raw text part)": binary_value[:-2].decode(),
        "SecureString": secure_value,
        "KMS plaintext": kms_plaintext.decode(),
        "KMS plaintext (base64)": base64.b64encode(kms_plaintext).decode(),
        "token": token,
        "near-copy of the token": near_token,
    }
    yield Run(
        process,
        sensitive,
        statuses,
        process.lines + dead.lines,
        process.stderr_lines + dead.stderr_lines,
    )


def test_the_run_exercised_what_it_claims(run: Run) -> None:
    s = run.statuses
    assert s["secret"] == s["secret&refreshNow=true"] == s["binary"] == 200
    assert s["secure"] == s["secure-raw"] == s["reference"] == s["kms"] == 200
    assert s["not-found-secret"] == s["not-found-param"] == 404
    assert s["no-token"] == s["near-token"] == s["token-prefix"] == s["near-token-vault"] == 401
    assert s["kms-wrong-context"] == s["kms-no-context"] == 400
    assert s["kms-too-big"] == 413
    assert s["bad-utf8"] == s["too-long"] == s["bad-version"] == s["missing-param"] == 400
    assert s["kms-unreachable"] in (502, 504)
    assert any('"level":"WARN"' in line for line in run.stdout)
    assert run.process.returncode == 0
    # debug really was on: rejected requests are logged at debug
    assert any('"level":"DEBUG"' in line for line in run.stdout)


def test_every_stdout_line_is_json(run: Run) -> None:
    assert run.stdout
    for line in run.stdout:
        assert isinstance(json.loads(line), dict), line


@pytest.mark.parametrize(
    "what",
    [
        "secret string",
        "binary (base64)",
        "binary (raw text part)",
        "SecureString",
        "KMS plaintext",
        "KMS plaintext (base64)",
        "token",
        "near-copy of the token",
    ],
)
def test_no_line_contains_a_sensitive_value(run: Run, what: str) -> None:
    value = run.sensitive[what]
    for stream, lines in (("stdout", run.stdout), ("stderr", run.stderr)):
        for line in lines:
            assert value not in line, f"{what} found on {stream}: {line[:300]}"


def test_no_line_contains_a_long_piece_of_the_token(run: Run) -> None:
    token = run.sensitive["token"]
    text = "\n".join(run.stdout + run.stderr)
    pieces = {token[i : i + 16] for i in range(0, len(token) - 16)}
    leaked = [p for p in pieces if p in text]
    assert not leaked
