"""The lean upstream answers every request exactly as the SDK upstream does.

Two extensions side by side on the same moto, through the same fault proxy: one with
SECRETCACHE_UPSTREAM=lean (the default), one with =sdk (aiobotocore). Successes and AWS errors
must give the same status and the same body bytes; faults the same status and errorType (the
message may name a different transport exception class); errors that are not retried after
exactly one AWS call.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.fault_proxy import Fault, FaultProxy
from tools.moto_server import MotoServer

from .conftest import Seeder

Request = tuple[str, str, dict[str, Any] | None]


@pytest.fixture
def pair(start: Callable[..., Any]) -> dict[str, Any]:
    return {"lean": start(SECRETCACHE_UPSTREAM="lean"), "sdk": start(SECRETCACHE_UPSTREAM="sdk")}


def _ask(extension: Any, request: Request) -> tuple[int, bytes]:
    method, path, document = request
    if document is None:
        result = extension.request(method, path)
    else:
        result = extension.request(
            method,
            path,
            body=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
        )
    return result.status, result.body


def _requests(seed: Seeder, moto: MotoServer) -> dict[str, Request]:
    secret, _ = seed.secret("parity")
    binary = f"{seed.prefix}-binary"
    seed.sm.create_secret(Name=binary, SecretBinary=b"\x00\x01\xfe\xff")
    parameter, _ = seed.parameter("parity")
    seed.ssm.put_parameter(Name=f"/{seed.prefix}/tree/a", Value="a", Type="String")
    seed.ssm.put_parameter(Name=f"/{seed.prefix}/tree/b/c", Value="c", Type="SecureString")
    kms = moto.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"kms-plain", EncryptionContext={"app": "x"})
    ciphertext = base64.b64encode(blob["CiphertextBlob"]).decode()
    return {
        "secret": ("GET", f"/secretsmanager/get?secretId={secret}", None),
        "secret_by_stage": (
            "GET",
            f"/secretsmanager/get?secretId={secret}&versionStage=AWSCURRENT",
            None,
        ),
        "binary_secret": ("GET", f"/secretsmanager/get?secretId={binary}", None),
        "secret_missing": ("GET", f"/secretsmanager/get?secretId={seed.prefix}-nope", None),
        "secret_short_version_id": (
            "GET",
            f"/secretsmanager/get?secretId={secret}&versionId=short",
            None,
        ),
        "secret_unknown_stage": (
            "GET",
            f"/secretsmanager/get?secretId={secret}&versionStage=NOPE",
            None,
        ),
        "parameter": (
            "GET",
            f"/systemsmanager/parameters/get?name={parameter}&withDecryption=true",
            None,
        ),
        "parameter_missing": (
            "GET",
            f"/systemsmanager/parameters/get?name=/{seed.prefix}/nope",
            None,
        ),
        "parameter_bad_version": (
            "GET",
            f"/systemsmanager/parameters/get?name={parameter}&version=99",
            None,
        ),
        "batch": (
            "GET",
            f"/secretsmanager/batchget?secretId={secret}&secretId={binary}"
            f"&secretId={seed.prefix}-nope",
            None,
        ),
        "by_path": (
            "GET",
            f"/systemsmanager/parameters/getbypath?path=/{seed.prefix}/tree&recursive=true"
            "&withDecryption=true",
            None,
        ),
        "kms": (
            "POST",
            "/kms/decrypt",
            {"CiphertextBlob": ciphertext, "EncryptionContext": {"app": "x"}},
        ),
        "kms_wrong_context": (
            "POST",
            "/kms/decrypt",
            {"CiphertextBlob": ciphertext, "EncryptionContext": {"app": "y"}},
        ),
        "kms_not_a_ciphertext": (
            "POST",
            "/kms/decrypt",
            {"CiphertextBlob": base64.b64encode(b"garbage" * 8).decode()},
        ),
    }


def test_every_read_and_aws_error_answers_byte_for_byte_the_same(
    pair: dict[str, Any], seed: Seeder, moto_server: MotoServer
) -> None:
    differences = []
    for name, request in _requests(seed, moto_server).items():
        lean, sdk = _ask(pair["lean"], request), _ask(pair["sdk"], request)
        if lean != sdk:
            differences.append((name, lean[0], sdk[0], lean[1][:200], sdk[1][:200]))
    assert differences == []


FAULTS = {
    "throttled": Fault.throttle(),
    "server_error": Fault.server_error(500),
    "unavailable": Fault.server_error(503),
    "access_denied": Fault.aws_error(400, "AccessDeniedException"),
    "expired_token": Fault.aws_error(400, "ExpiredTokenException"),
    "connection_reset": Fault.reset(),
    "truncated": Fault.truncate(),
    "down": Fault.down(),
    "slow": Fault.latency(2.5),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_fault_gives_the_same_status_error_type_and_aws_calls(
    fault: str, pair: dict[str, Any], seed: Seeder, proxy: FaultProxy
) -> None:
    answers = {}
    for upstream in ("lean", "sdk"):
        secret, _ = seed.secret(f"fault-{upstream}")
        proxy.set_fault(FAULTS[fault])
        try:
            before = proxy.count("GetSecretValue")
            status, body = _ask(
                pair[upstream], ("GET", f"/secretsmanager/get?secretId={secret}", None)
            )
            calls = proxy.count("GetSecretValue") - before
        finally:
            proxy.clear()
        error = json.loads(body)
        # Retried faults make a jitter-dependent number of calls; the others exactly one.
        retried = fault not in ("access_denied", "expired_token")
        answers[upstream] = (status, error["errorType"], None if retried else calls)
        if fault not in ("connection_reset", "truncated", "down"):
            answers[upstream + "_message"] = error["message"]
    assert answers["lean"] == answers["sdk"]
    if "lean_message" in answers:
        assert answers["lean_message"] == answers["sdk_message"]
