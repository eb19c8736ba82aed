"""The extension as a real process, moto server as AWS: every row of the HTTP contract."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.extension_process import ExtensionProcess
from tests.support.shapes import PARAMETER_KEYS, SECRET_KEYS
from tools.moto_server import MotoServer
from tools.net import HttpResult

GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$")
HEADER = "X-Aws-Parameters-Secrets-Token"


@dataclass
class Seeded:
    prefix: str
    secret: str
    secret_value: str
    secret_arn: str
    binary_secret: str
    binary_value: bytes
    versioned: str
    versioned_first_id: str
    versioned_old: str
    versioned_new: str
    plus_secret: str
    string_param: str
    secure_param: str
    secure_value: str
    list_param: str
    multi_param: str
    key_id: str
    ciphertext: str
    ciphertext_ctx: str
    kms_plaintext: bytes


@pytest.fixture(scope="module")
def aws(moto_server: MotoServer) -> Seeded:
    prefix = "m" + uuid.uuid4().hex[:8]
    sm = moto_server.client("secretsmanager")
    ssm = moto_server.client("ssm")
    kms = moto_server.client("kms")

    secret = f"{prefix}/db"
    secret_value = '{"user":"admin","password":"' + prefix + '-pw"}'
    secret_arn = sm.create_secret(Name=secret, SecretString=secret_value)["ARN"]
    binary_secret = f"{prefix}/bin"
    binary_value = b"\x00\x01\xfe\xff binary " + prefix.encode()
    sm.create_secret(Name=binary_secret, SecretBinary=binary_value)
    versioned = f"{prefix}/rotated"
    first_id = sm.create_secret(Name=versioned, SecretString="old-" + prefix)["VersionId"]
    sm.put_secret_value(SecretId=versioned, SecretString="new-" + prefix)
    plus_secret = f"{prefix}/with+plus@x"
    sm.create_secret(Name=plus_secret, SecretString="plus-" + prefix)

    ssm.put_parameter(Name=f"/{prefix}/string", Value="plain-" + prefix, Type="String")
    ssm.put_parameter(Name=f"/{prefix}/secure", Value="secure-" + prefix, Type="SecureString")
    ssm.put_parameter(Name=f"/{prefix}/list", Value="a,b,c", Type="StringList")
    ssm.put_parameter(Name=f"/{prefix}/multi", Value="v1-" + prefix, Type="String")
    ssm.put_parameter(Name=f"/{prefix}/multi", Value="v2-" + prefix, Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=f"/{prefix}/multi", ParameterVersion=1, Labels=["stable"])

    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms_plaintext = b"kms-plaintext-" + prefix.encode()
    blob = kms.encrypt(KeyId=key_id, Plaintext=kms_plaintext)["CiphertextBlob"]
    blob_ctx = kms.encrypt(
        KeyId=key_id, Plaintext=kms_plaintext, EncryptionContext={"purpose": "test"}
    )["CiphertextBlob"]
    return Seeded(
        prefix=prefix,
        secret=secret,
        secret_value=secret_value,
        secret_arn=secret_arn,
        binary_secret=binary_secret,
        binary_value=binary_value,
        versioned=versioned,
        versioned_first_id=first_id,
        versioned_old="old-" + prefix,
        versioned_new="new-" + prefix,
        plus_secret=plus_secret,
        string_param=f"/{prefix}/string",
        secure_param=f"/{prefix}/secure",
        secure_value="secure-" + prefix,
        list_param=f"/{prefix}/list",
        multi_param=f"/{prefix}/multi",
        key_id=key_id,
        ciphertext=base64.b64encode(blob).decode(),
        ciphertext_ctx=base64.b64encode(blob_ctx).decode(),
        kms_plaintext=kms_plaintext,
    )


@pytest.fixture(scope="module")
def ext(moto_server: MotoServer) -> Iterator[ExtensionProcess]:
    """One extension with default settings, shared by the tests that need nothing special."""
    process = ExtensionProcess(moto_server.env()).start()
    yield process
    process.stop()


def ok_json(result: HttpResult) -> dict[str, Any]:
    assert result.status == 200, result.body[:500]
    assert result.headers["content-type"].startswith("application/json")
    assert result.headers["cache-control"] == "no-store"
    body = json.loads(result.body)
    assert isinstance(body, dict)
    return body


def error_json(result: HttpResult, status: int) -> dict[str, Any]:
    assert result.status == status, result.body[:500]
    assert result.headers["content-type"].startswith("application/json")
    assert result.headers["cache-control"] == "no-store"
    body = json.loads(result.body)
    assert list(body) == ["errorType", "message"]
    return body


def secret(ext: ExtensionProcess, query: str) -> dict[str, Any]:
    return ok_json(ext.get(f"/secretsmanager/get?{query}"))


def parameter(ext: ExtensionProcess, query: str) -> dict[str, Any]:
    body = ok_json(ext.get(f"/systemsmanager/parameters/get?{query}"))
    assert list(body) == ["Parameter", "ResultMetadata"]
    assert body["ResultMetadata"] == {}
    assert list(body["Parameter"]) == PARAMETER_KEYS
    return body["Parameter"]


def q(value: str) -> str:
    return quote(value, safe="")


# Secrets Manager ---------------------------------------------------------------------------


def test_secret_string_body_is_exactly_aws_shaped(ext: ExtensionProcess, aws: Seeded) -> None:
    body = secret(ext, f"secretId={q(aws.secret)}")
    assert list(body) == SECRET_KEYS
    assert body["ARN"] == aws.secret_arn
    assert body["Name"] == aws.secret
    assert body["SecretString"] == aws.secret_value
    assert body["SecretBinary"] is None
    assert body["VersionStages"] == ["AWSCURRENT"]
    assert isinstance(body["VersionId"], str) and body["VersionId"]
    assert GO_TIME.match(body["CreatedDate"]), body["CreatedDate"]
    assert body["ResultMetadata"] == {}


def test_secret_binary_is_base64(ext: ExtensionProcess, aws: Seeded) -> None:
    body = secret(ext, f"secretId={q(aws.binary_secret)}")
    assert list(body) == SECRET_KEYS
    assert base64.b64decode(body["SecretBinary"]) == aws.binary_value
    assert body["SecretString"] is None


def test_secret_by_version_id(ext: ExtensionProcess, aws: Seeded) -> None:
    body = secret(ext, f"secretId={q(aws.versioned)}&versionId={aws.versioned_first_id}")
    assert body["SecretString"] == aws.versioned_old
    assert body["VersionId"] == aws.versioned_first_id


@pytest.mark.parametrize(
    ("stage", "expected"), [("AWSPREVIOUS", "versioned_old"), ("AWSCURRENT", "versioned_new")]
)
def test_secret_by_version_stage(
    ext: ExtensionProcess, aws: Seeded, stage: str, expected: str
) -> None:
    body = secret(ext, f"secretId={q(aws.versioned)}&versionStage={stage}")
    assert body["SecretString"] == getattr(aws, expected)
    assert stage in body["VersionStages"]


def test_secret_without_selector_is_current(ext: ExtensionProcess, aws: Seeded) -> None:
    assert secret(ext, f"secretId={q(aws.versioned)}")["SecretString"] == aws.versioned_new


def test_version_id_and_stage_disagreeing_is_400(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(
        f"/secretsmanager/get?secretId={q(aws.versioned)}"
        f"&versionId={aws.versioned_first_id}&versionStage=AWSCURRENT"
    )
    assert error_json(result, 400)["errorType"] == "InvalidRequestException"


def test_secret_by_arn_raw_and_encoded(ext: ExtensionProcess, aws: Seeded) -> None:
    raw = secret(ext, f"secretId={aws.secret_arn}")  # ':' and '/' unencoded
    encoded = secret(ext, f"secretId={q(aws.secret_arn)}")
    assert raw["SecretString"] == encoded["SecretString"] == aws.secret_value
    assert raw["ARN"] == aws.secret_arn


def test_secret_name_raw_slashes(ext: ExtensionProcess, aws: Seeded) -> None:
    assert secret(ext, f"secretId={aws.secret}")["SecretString"] == aws.secret_value


def test_secret_name_with_plus_needs_encoding(ext: ExtensionProcess, aws: Seeded) -> None:
    assert secret(ext, f"secretId={q(aws.plus_secret)}")["SecretString"] == "plus-" + aws.prefix
    # a raw '+' is a space, as in form encoding: that secret does not exist
    raw = ext.get(f"/secretsmanager/get?secretId={aws.plus_secret}")
    assert error_json(raw, 404)["errorType"] == "ResourceNotFoundException"


def test_secret_trailing_slash(ext: ExtensionProcess, aws: Seeded) -> None:
    body = ok_json(ext.get(f"/secretsmanager/get/?secretId={q(aws.secret)}"))
    assert body["SecretString"] == aws.secret_value


def test_missing_secret_is_404_with_error_type(ext: ExtensionProcess, aws: Seeded) -> None:
    body = error_json(ext.get(f"/secretsmanager/get?secretId={aws.prefix}/nope"), 404)
    assert body["errorType"] == "ResourceNotFoundException"
    assert body["message"]


def test_missing_secret_id_is_400(ext: ExtensionProcess) -> None:
    assert error_json(ext.get("/secretsmanager/get"), 400)["errorType"] == "MissingParameter"


# SSM ---------------------------------------------------------------------------------------


def test_string_parameter_body(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.string_param)}")
    assert p["Name"] == aws.string_param
    assert p["Value"] == "plain-" + aws.prefix
    assert p["Type"] == "String"
    assert p["Version"] == 1
    assert p["DataType"] == "text"
    assert p["Selector"] is None
    assert p["SourceResult"] is None
    assert p["ARN"].startswith("arn:aws:ssm:us-east-1:")
    assert p["ARN"].endswith(f":parameter{aws.string_param}")
    assert GO_TIME.match(p["LastModifiedDate"]), p["LastModifiedDate"]


def test_parameter_name_raw_and_encoded(ext: ExtensionProcess, aws: Seeded) -> None:
    raw = parameter(ext, f"name={aws.string_param}")
    encoded = parameter(ext, f"name={q(aws.string_param)}")
    assert raw == encoded


def test_parameter_trailing_slash(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/systemsmanager/parameters/get/?name={q(aws.string_param)}")
    assert ok_json(result)["Parameter"]["Value"] == "plain-" + aws.prefix


def test_secure_string_with_decryption(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.secure_param)}&withDecryption=true")
    assert p["Value"] == aws.secure_value
    assert p["Type"] == "SecureString"


@pytest.mark.moto_gap
def test_secure_string_without_decryption_is_not_the_plaintext(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    # AWS returns base64 ciphertext; moto returns "kms:alias/aws/ssm:<value>". Either way it must
    # not be the plaintext, and must not share a cache entry with the decrypted read.
    parameter(ext, f"name={q(aws.secure_param)}&withDecryption=true")
    p = parameter(ext, f"name={q(aws.secure_param)}&withDecryption=false")
    assert p["Value"] != aws.secure_value
    assert p["Type"] == "SecureString"
    assert parameter(ext, f"name={q(aws.secure_param)}")["Value"] == p["Value"]


def test_string_list(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.list_param)}")
    assert (p["Type"], p["Value"]) == ("StringList", "a,b,c")


def test_parameter_latest_version(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.multi_param)}")
    assert (p["Value"], p["Version"], p["Selector"]) == ("v2-" + aws.prefix, 2, None)


def test_parameter_by_version(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.multi_param)}&version=1")
    assert (p["Value"], p["Version"], p["Selector"]) == ("v1-" + aws.prefix, 1, ":1")


def test_parameter_by_label(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.multi_param)}&label=stable")
    assert (p["Value"], p["Version"], p["Selector"]) == ("v1-" + aws.prefix, 1, ":stable")


def test_first_of_version_and_label_wins(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name={q(aws.multi_param)}&version=2&label=stable")
    assert (p["Value"], p["Selector"]) == ("v2-" + aws.prefix, ":2")
    p = parameter(ext, f"name={q(aws.multi_param)}&label=stable&version=2")
    assert (p["Value"], p["Selector"]) == ("v1-" + aws.prefix, ":stable")


def test_missing_parameter_version_is_404(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/systemsmanager/parameters/get?name={q(aws.multi_param)}&version=9")
    assert error_json(result, 404)["errorType"] == "ParameterVersionNotFound"


def test_parameter_by_arn(ext: ExtensionProcess, aws: Seeded) -> None:
    arn = parameter(ext, f"name={q(aws.string_param)}")["ARN"]
    assert parameter(ext, f"name={arn}")["Value"] == "plain-" + aws.prefix
    assert parameter(ext, f"name={q(arn)}")["Value"] == "plain-" + aws.prefix


def test_secret_through_ssm_reference(ext: ExtensionProcess, aws: Seeded) -> None:
    p = parameter(ext, f"name=/aws/reference/secretsmanager/{aws.secret}&withDecryption=true")
    assert p["Value"] == aws.secret_value
    assert p["Type"] == "SecureString"
    assert p["SourceResult"]  # the GetSecretValue result as a JSON string


def test_missing_parameter_is_404_with_error_type(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/systemsmanager/parameters/get?name=/{aws.prefix}/nope")
    body = error_json(result, 404)
    assert body["errorType"] == "ParameterNotFound"


# KMS ---------------------------------------------------------------------------------------


def decrypt(ext: ExtensionProcess, body: dict[str, Any], query: str = "") -> HttpResult:
    return ext.request("POST", "/kms/decrypt" + query, body=json.dumps(body).encode())


def test_kms_decrypt(ext: ExtensionProcess, aws: Seeded) -> None:
    body = ok_json(decrypt(ext, {"CiphertextBlob": aws.ciphertext}))
    assert list(body) == ["KeyId", "Plaintext", "EncryptionAlgorithm", "ResultMetadata"]
    assert base64.b64decode(body["Plaintext"]) == aws.kms_plaintext
    assert aws.key_id in body["KeyId"]
    assert body["ResultMetadata"] == {}


def test_kms_decrypt_with_key_id(ext: ExtensionProcess, aws: Seeded) -> None:
    body = ok_json(decrypt(ext, {"CiphertextBlob": aws.ciphertext, "KeyId": aws.key_id}))
    assert base64.b64decode(body["Plaintext"]) == aws.kms_plaintext


def test_kms_decrypt_with_encryption_context(ext: ExtensionProcess, aws: Seeded) -> None:
    body = ok_json(
        decrypt(
            ext, {"CiphertextBlob": aws.ciphertext_ctx, "EncryptionContext": {"purpose": "test"}}
        )
    )
    assert base64.b64decode(body["Plaintext"]) == aws.kms_plaintext


@pytest.mark.parametrize("context", [{"purpose": "other"}, None])
def test_kms_decrypt_wrong_context_is_400(
    ext: ExtensionProcess, aws: Seeded, context: dict[str, str] | None
) -> None:
    request: dict[str, Any] = {"CiphertextBlob": aws.ciphertext_ctx}
    if context is not None:
        request["EncryptionContext"] = context
    body = error_json(decrypt(ext, request), 400)
    assert body["errorType"] == "InvalidCiphertextException"
    assert base64.b64encode(aws.kms_plaintext).decode() not in body["message"]


def test_kms_decrypt_success_does_not_vouch_for_a_different_context(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    ok_json(
        decrypt(
            ext, {"CiphertextBlob": aws.ciphertext_ctx, "EncryptionContext": {"purpose": "test"}}
        )
    )
    wrong = decrypt(
        ext, {"CiphertextBlob": aws.ciphertext_ctx, "EncryptionContext": {"purpose": "x"}}
    )
    assert wrong.status == 400


def test_kms_decrypt_garbage_ciphertext_is_400(ext: ExtensionProcess) -> None:
    garbage = base64.b64encode(b"not a real ciphertext blob at all").decode()
    assert decrypt(ext, {"CiphertextBlob": garbage}).status == 400


def test_kms_decrypt_bad_body_is_400(ext: ExtensionProcess) -> None:
    result = ext.request("POST", "/kms/decrypt", body=b"{not json")
    error_json(result, 400)


# Caching -----------------------------------------------------------------------------------


def test_cached_value_until_refresh_now(
    ext: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=unique, SecretString="first")
    assert secret(ext, f"secretId={unique}")["SecretString"] == "first"
    sm.put_secret_value(SecretId=unique, SecretString="second")
    assert secret(ext, f"secretId={unique}")["SecretString"] == "first"
    assert secret(ext, f"secretId={unique}&refreshNow=true")["SecretString"] == "second"
    # the refresh stored the new value
    assert secret(ext, f"secretId={unique}")["SecretString"] == "second"


def test_parameter_cached_until_refresh_now(
    ext: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    ssm = moto_server.client("ssm")
    name = f"/{unique}/p"
    ssm.put_parameter(Name=name, Value="first", Type="String")
    assert parameter(ext, f"name={name}")["Value"] == "first"
    ssm.put_parameter(Name=name, Value="second", Type="String", Overwrite=True)
    assert parameter(ext, f"name={name}")["Value"] == "first"
    assert parameter(ext, f"name={name}&refreshNow=true")["Value"] == "second"
    assert parameter(ext, f"name={name}")["Value"] == "second"


def test_not_found_is_not_cached(
    ext: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    assert ext.get(f"/secretsmanager/get?secretId={unique}").status == 404
    moto_server.client("secretsmanager").create_secret(Name=unique, SecretString="now")
    assert secret(ext, f"secretId={unique}")["SecretString"] == "now"


def test_concurrent_misses_make_one_upstream_call(
    ext: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    moto_server.client("secretsmanager").create_secret(Name=unique, SecretString="shared")

    def calls() -> int:
        body = ok_json(ext.get("/metrics"))
        return int(body["services"]["secretsmanager"]["upstreamCalls"])

    before = calls()
    with ThreadPoolExecutor(20) as pool:
        results = list(
            pool.map(lambda _: ext.get(f"/secretsmanager/get?secretId={unique}"), range(20))
        )
    assert {r.status for r in results} == {200}
    assert len({r.body for r in results}) == 1
    assert calls() - before == 1


@pytest.fixture(scope="module")
def short_ttl_ext(moto_server: MotoServer) -> Iterator[ExtensionProcess]:
    process = ExtensionProcess(
        {**moto_server.env(), "SECRETS_MANAGER_TTL": "1", "SSM_PARAMETER_STORE_TTL": "0"}
    ).start()
    yield process
    process.stop()


def test_ttl_expiry_fetches_the_new_value(
    short_ttl_ext: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=unique, SecretString="first")
    assert secret(short_ttl_ext, f"secretId={unique}")["SecretString"] == "first"
    sm.put_secret_value(SecretId=unique, SecretString="second")
    time.sleep(1.2)
    assert secret(short_ttl_ext, f"secretId={unique}")["SecretString"] == "second"


def test_ttl_zero_is_pass_through_for_that_service(
    short_ttl_ext: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    ssm = moto_server.client("ssm")
    name = f"/{unique}/p"
    ssm.put_parameter(Name=name, Value="first", Type="String")
    assert parameter(short_ttl_ext, f"name={name}")["Value"] == "first"
    ssm.put_parameter(Name=name, Value="second", Type="String", Overwrite=True)
    assert parameter(short_ttl_ext, f"name={name}")["Value"] == "second"


def test_cache_disabled_passes_through(
    start_extension: Callable[..., ExtensionProcess], moto_server: MotoServer, unique: str
) -> None:
    ext = start_extension(PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED="FALSE")
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=unique, SecretString="first")
    assert secret(ext, f"secretId={unique}")["SecretString"] == "first"
    sm.put_secret_value(SecretId=unique, SecretString="second")
    assert secret(ext, f"secretId={unique}")["SecretString"] == "second"
    ssm = moto_server.client("ssm")
    ssm.put_parameter(Name=f"/{unique}/p", Value="p1", Type="String")
    assert parameter(ext, f"name=/{unique}/p")["Value"] == "p1"
    ssm.put_parameter(Name=f"/{unique}/p", Value="p2", Type="String", Overwrite=True)
    assert parameter(ext, f"name=/{unique}/p")["Value"] == "p2"


# Token, paths, methods ---------------------------------------------------------------------


def test_missing_token_is_401(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/secretsmanager/get?secretId={q(aws.secret)}", token=None)
    body = error_json(result, 401)
    assert aws.secret_value not in result.body.decode()
    assert body["errorType"] == "MissingToken"


def test_wrong_token_is_401(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/secretsmanager/get?secretId={q(aws.secret)}", token=ext.token + "x")
    assert error_json(result, 401)["errorType"] == "InvalidToken"
    assert ext.token not in result.body.decode()


@pytest.mark.parametrize("name", [HEADER.lower(), HEADER.upper(), "x-vault-token"])
def test_token_header_name_in_any_case(ext: ExtensionProcess, aws: Seeded, name: str) -> None:
    result = ext.get(
        f"/systemsmanager/parameters/get?name={q(aws.string_param)}",
        token=None,
        headers={name: ext.token},
    )
    assert ok_json(result)["Parameter"]["Value"] == "plain-" + aws.prefix


def test_unknown_path_is_404_json(ext: ExtensionProcess) -> None:
    assert error_json(ext.get("/secretsmanager/list"), 404)["errorType"] == "UnknownPath"


def test_wrong_method_is_405_json(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.request("POST", f"/secretsmanager/get?secretId={q(aws.secret)}", body=b"")
    assert error_json(result, 405)["errorType"] == "MethodNotAllowed"


def test_health_is_open_and_says_nothing(ext: ExtensionProcess) -> None:
    result = ext.get("/health", token=None)
    assert result.status == 200
    assert json.loads(result.body) == {"status": "ok"}
