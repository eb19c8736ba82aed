"""Full ARNs of another region are read from that region, on both upstreams, against moto server.

moto keeps each region's data apart by the region of the request's SigV4 credential scope, so a
secret created in us-west-2 is found by a function in us-east-1 only when the extension signs
for us-west-2: by its full ARN, never by its bare name.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from tests.support.extension_process import ExtensionProcess
from tools.moto_server import REGION, MotoServer

OTHER = "us-west-2"


def client_in(moto: MotoServer, service: str, region: str = OTHER) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def body_of(result: Any, status: int = 200) -> dict[str, Any]:
    assert result.status == status, result.body[:400]
    parsed: dict[str, Any] = json.loads(result.body)
    return parsed


@pytest.fixture(params=["lean", "sdk"])
def ext(
    request: pytest.FixtureRequest, start_extension: Callable[..., ExtensionProcess]
) -> ExtensionProcess:
    assert REGION != OTHER
    return start_extension(SECRETCACHE_UPSTREAM=str(request.param))


def test_a_secret_of_another_region_is_read_by_its_full_arn(
    moto_server: MotoServer, ext: ExtensionProcess, unique: str
) -> None:
    name = f"{unique}/west"
    arn = client_in(moto_server, "secretsmanager").create_secret(
        Name=name, SecretString="from-west"
    )["ARN"]
    assert f":{OTHER}:" in arn
    body = body_of(ext.get(f"/secretsmanager/get?secretId={quote(arn)}"))
    assert body["SecretString"] == "from-west" and body["ARN"] == arn
    assert body_of(ext.get(f"/v1/{arn}"))["SecretString"] == "from-west"
    # The bare name is looked up in the function's region, where it does not exist.
    assert ext.get(f"/secretsmanager/get?secretId={name}").status == 404


def test_a_batch_of_secrets_from_two_regions_is_grouped_per_region(
    moto_server: MotoServer, ext: ExtensionProcess, unique: str
) -> None:
    west = client_in(moto_server, "secretsmanager").create_secret(
        Name=f"{unique}/w", SecretString="w"
    )["ARN"]
    moto_server.client("secretsmanager").create_secret(Name=f"{unique}/e", SecretString="e")
    path = f"/secretsmanager/batchget?secretId={unique}/e&secretId={quote(west)}"
    body = body_of(ext.get(path))
    assert sorted(v["SecretString"] for v in body["SecretValues"]) == ["e", "w"]
    assert body["Errors"] == []
    # Each value warmed its single read's entry: the ARN's read is a hit with the same value.
    assert body_of(ext.get(f"/secretsmanager/get?secretId={quote(west)}"))["SecretString"] == "w"


def test_parameters_of_another_region_are_read_by_arn_single_and_batch(
    moto_server: MotoServer, ext: ExtensionProcess, unique: str
) -> None:
    name = f"/{unique}/west"
    client_in(moto_server, "ssm").put_parameter(Name=name, Value="pw", Type="String")
    moto_server.client("ssm").put_parameter(Name=f"/{unique}/east", Value="pe", Type="String")
    arn = f"arn:aws:ssm:{OTHER}:123456789012:parameter{name}"
    single = body_of(ext.get(f"/systemsmanager/parameters/get?name={quote(arn)}"))
    assert single["Parameter"]["Value"] == "pw"
    assert ext.get(f"/systemsmanager/parameters/get?name={name}").status == 404
    batch = body_of(
        ext.get(f"/systemsmanager/parameters/getbatch?name=/{unique}/east&name={quote(arn)}")
    )
    assert sorted(p["Value"] for p in batch["Parameters"]) == ["pe", "pw"]
    assert batch["InvalidParameters"] == []


def test_kms_decrypt_with_a_key_arn_of_another_region(
    moto_server: MotoServer, ext: ExtensionProcess
) -> None:
    kms = client_in(moto_server, "kms")
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key_arn, Plaintext=b"west-plain")["CiphertextBlob"]
    request = {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": key_arn}
    result = ext.request("POST", "/kms/decrypt", body=json.dumps(request).encode())
    assert base64.b64decode(body_of(result)["Plaintext"]) == b"west-plain"
    # Without the key's ARN the function's region is asked, which does not hold the key.
    bare = ext.request(
        "POST",
        "/kms/decrypt",
        body=json.dumps({"CiphertextBlob": request["CiphertextBlob"]}).encode(),
    )
    assert bare.status >= 400


@pytest.mark.parametrize(
    ("arn", "problem"),
    [
        ("arn:aws:secretsmanager:evil.example.com:123456789012:secret:x", "not an AWS region"),
        ("arn:aws:secretsmanager:us-west-2.evil:123456789012:secret:x", "not an AWS region"),
        ("arn:aws:secretsmanager:US-WEST-2:123456789012:secret:x", "not an AWS region"),
        ("arn:aws-cn:secretsmanager:us-west-2:123456789012:secret:x", "partition aws-cn"),
        ("arn:aws:secretsmanager:cn-north-1:123456789012:secret:x", "partition aws-cn"),
        ("arn:evil:secretsmanager:us-west-2:123456789012:secret:x", "unknown partition"),
    ],
)
def test_a_crafted_arn_region_is_400_and_never_called(
    ext: ExtensionProcess, arn: str, problem: str
) -> None:
    body = body_of(ext.get(f"/secretsmanager/get?secretId={quote(arn)}"), 400)
    assert body["errorType"] == "InvalidArn"
    assert problem in body["message"]
    batch = body_of(ext.get(f"/secretsmanager/batchget?secretId=a&secretId={quote(arn)}"), 400)
    assert batch["errorType"] == "InvalidArn"
    ssm_arn = arn.replace(":secretsmanager:", ":ssm:").replace(":secret:x", ":parameter/x")
    parameter = ext.get(f"/systemsmanager/parameters/get?name={quote(ssm_arn)}")
    assert body_of(parameter, 400)["errorType"] == "InvalidArn"
