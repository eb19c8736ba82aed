"""secretcache_client against the real extension process, with moto server as AWS."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import pytest
from secretcache_client import (
    Client,
    ExtensionUnavailable,
    SecretNotFound,
    Unauthorized,
)
from secretcache_client.aio import AsyncClient

from tests.support.extension_process import ExtensionProcess
from tools.moto_server import MotoServer

StartExtension = Callable[..., ExtensionProcess]


@pytest.fixture
def seeded(moto_server: MotoServer, unique: str) -> dict[str, str]:
    """One secret (two versions), a SecureString, a StringList and a KMS ciphertext."""
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=f"{unique}/db", SecretString=json.dumps({"user": "u", "pw": "p1"}))
    sm.put_secret_value(SecretId=f"{unique}/db", SecretString=json.dumps({"user": "u", "pw": "p2"}))
    sm.create_secret(Name=f"{unique}/blob", SecretBinary=b"\x00\x01\xfe")
    ssm = moto_server.client("ssm")
    ssm.put_parameter(Name=f"/{unique}/url", Value="https://example.test", Type="String")
    ssm.put_parameter(Name=f"/{unique}/key", Value="s3cure", Type="SecureString")
    ssm.put_parameter(Name=f"/{unique}/hosts", Value="a,b,c", Type="StringList")
    ssm.put_parameter(Name=f"/{unique}/cfg.json", Value='{"n": 1}', Type="String")
    kms = moto_server.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"plain", EncryptionContext={"app": unique})
    return {"prefix": unique, "ciphertext": base64.b64encode(blob["CiphertextBlob"]).decode()}


def test_sync_client_reads_everything(extension: ExtensionProcess, seeded: dict[str, str]) -> None:
    p = seeded["prefix"]
    with Client(port=extension.port, token=extension.token, timeout=15.0) as client:
        assert client.get_secret(f"{p}/db", transform="json") == {"user": "u", "pw": "p2"}
        previous = client.get_secret(f"{p}/db", version_stage="AWSPREVIOUS", transform="json")
        assert previous == {"user": "u", "pw": "p1"}
        assert client.get_secret(f"{p}/blob") == b"\x00\x01\xfe"
        document = client.get_secret_value(f"{p}/db")
        assert document["Name"] == f"{p}/db" and "AWSCURRENT" in document["VersionStages"]
        assert client.get_parameter(f"/{p}/url") == "https://example.test"
        assert client.get_parameter(f"/{p}/key") == "s3cure"
        assert client.get_parameter(f"/{p}/hosts", transform="list") == ["a", "b", "c"]
        assert client.get_parameter(f"/{p}/cfg.json", transform="auto") == {"n": 1}
        plaintext = client.kms_decrypt(
            base64.b64decode(seeded["ciphertext"]), encryption_context={"app": p}
        )
        assert plaintext == b"plain"


def test_refresh_rereads_from_aws(
    extension: ExtensionProcess, seeded: dict[str, str], moto_server: MotoServer
) -> None:
    p = seeded["prefix"]
    with Client(port=extension.port, token=extension.token, timeout=15.0) as client:
        assert client.get_parameter(f"/{p}/url") == "https://example.test"
        moto_server.client("ssm").put_parameter(
            Name=f"/{p}/url", Value="https://new.test", Type="String", Overwrite=True
        )
        assert client.get_parameter(f"/{p}/url") == "https://example.test"  # cached
        assert client.get_parameter(f"/{p}/url", refresh=True) == "https://new.test"


def test_errors_are_typed(extension: ExtensionProcess, seeded: dict[str, str]) -> None:
    p = seeded["prefix"]
    with Client(port=extension.port, token=extension.token, timeout=15.0) as client:
        with pytest.raises(SecretNotFound) as missing:
            client.get_secret(f"{p}/nope")
        assert missing.value.status == 404
        with pytest.raises(SecretNotFound):
            client.get_parameter(f"/{p}/nope")
    with Client(port=extension.port, token="wrong", timeout=15.0) as client:
        with pytest.raises(Unauthorized) as denied:
            client.get_secret(f"{p}/db")
        assert denied.value.status == 401
        assert extension.token not in str(denied.value) + repr(denied.value)


def test_client_waits_for_a_starting_extension(
    start_extension: StartExtension, seeded: dict[str, str]
) -> None:
    extension = start_extension(wait=False)
    with Client(port=extension.port, token=extension.token, timeout=20.0) as client:
        assert client.get_parameter(f"/{seeded['prefix']}/key") == "s3cure"


def test_stopped_extension_is_unavailable(
    start_extension: StartExtension, seeded: dict[str, str]
) -> None:
    extension = start_extension()
    client = Client(port=extension.port, token=extension.token, timeout=1.0)
    assert client.get_parameter(f"/{seeded['prefix']}/url") == "https://example.test"
    extension.stop()
    with pytest.raises(ExtensionUnavailable):
        client.get_parameter(f"/{seeded['prefix']}/url")


def test_async_client_reads_everything(extension: ExtensionProcess, seeded: dict[str, str]) -> None:
    p = seeded["prefix"]

    async def main() -> None:
        async with AsyncClient(port=extension.port, token=extension.token, timeout=15.0) as c:
            secret, key, hosts = await asyncio.gather(
                c.get_secret(f"{p}/db", transform="json"),
                c.get_parameter(f"/{p}/key"),
                c.get_parameter(f"/{p}/hosts", transform="list"),
            )
            assert secret == {"user": "u", "pw": "p2"}
            assert (key, hosts) == ("s3cure", ["a", "b", "c"])
            assert await c.kms_decrypt(seeded["ciphertext"], encryption_context={"app": p}) == (
                b"plain"
            )
            with pytest.raises(SecretNotFound):
                await c.get_secret(f"{p}/nope")

    asyncio.run(main())


def test_powertools_provider(extension: ExtensionProcess, seeded: dict[str, str]) -> None:
    pytest.importorskip("aws_lambda_powertools")
    from secretcache_client.powertools import SecretcacheProvider

    p = seeded["prefix"]
    client = Client(port=extension.port, token=extension.token, timeout=15.0)
    ssm = SecretcacheProvider(client=client)
    secrets = SecretcacheProvider("secretsmanager", client=client)
    assert ssm.get(f"/{p}/cfg.json", transform="auto") == {"n": 1}
    assert ssm.get(f"/{p}/key") == "s3cure"
    assert secrets.get(f"{p}/db", transform="json") == {"user": "u", "pw": "p2"}


def test_parameters_by_path_sync_async_and_powertools(
    extension: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
    from secretcache_client.powertools import SecretcacheProvider

    ssm = moto_server.client("ssm")
    ssm.put_parameter(Name=f"/{unique}/svc/url", Value="https://svc.test", Type="String")
    ssm.put_parameter(Name=f"/{unique}/svc/key", Value="k3y", Type="SecureString")
    ssm.put_parameter(Name=f"/{unique}/svc/deep/x", Value="x-value", Type="String")
    path = f"/{unique}/svc"
    with Client(port=extension.port, token=extension.token, timeout=15.0) as client:
        assert client.get_parameters_by_path(path) == {
            f"{path}/url": "https://svc.test",
            f"{path}/key": "k3y",
        }
        recursive = client.get_parameters_by_path(path, recursive=True)
        assert recursive[f"{path}/deep/x"] == "x-value"
        provider = SecretcacheProvider(client=client)
        assert provider.get_multiple(path) == {"url": "https://svc.test", "key": "k3y"}
        assert provider.get_multiple(path, Recursive=True, force_fetch=True)["deep/x"] == "x-value"
        with pytest.raises(GetParameterError, match="no read by path"):
            SecretcacheProvider(service="secretsmanager", client=client).get_multiple(path)

    async def read() -> dict[str, str]:
        async with AsyncClient(port=extension.port, token=extension.token, timeout=15.0) as aio:
            return await aio.get_parameters_by_path(path, decrypt=False)

    without_decryption = asyncio.run(read())
    assert without_decryption[f"{path}/url"] == "https://svc.test"
    # moto gap: without decryption moto returns no real ciphertext, but not the plaintext either
    assert without_decryption[f"{path}/key"] != "k3y"
