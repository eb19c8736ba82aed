"""The Powertools adapter: a BaseProvider that reads through the extension."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("aws_lambda_powertools")

from aws_lambda_powertools.utilities.parameters import BaseProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from secretcache_client import Client
from secretcache_client.powertools import SecretcacheProvider

from tests.unit.test_client_fakes import (
    SECRET,
    TOKEN,
    FakeExtension,
    error_reply,
    parameter_reply,
    secret_reply,
)


@pytest.fixture
def fake() -> Iterator[FakeExtension]:
    with FakeExtension() as server:
        yield server


@pytest.fixture
def client(fake: FakeExtension) -> Iterator[Client]:
    with Client(port=fake.port, token=TOKEN) as c:
        yield c


def test_is_a_powertools_provider(client: Client) -> None:
    assert isinstance(SecretcacheProvider(client=client), BaseProvider)


def test_ssm_get_with_transform_and_powertools_cache(fake: FakeExtension, client: Client) -> None:
    fake.always(parameter_reply('{"a": 1}', name="/app/config.json"))
    provider = SecretcacheProvider(client=client)
    assert provider.get("/app/config.json", transform="auto") == {"a": 1}
    assert provider.get("/app/config.json", transform="auto") == {"a": 1}
    assert len(fake.requests) == 1  # the second came from Powertools' max_age cache
    assert fake.requests[0].query == {"name": "/app/config.json", "withDecryption": "true"}


def test_force_fetch_bypasses_both_caches(fake: FakeExtension, client: Client) -> None:
    fake.always(parameter_reply("v"))
    provider = SecretcacheProvider(client=client)
    provider.get("/p")
    provider.get("/p", force_fetch=True)
    assert [r.query.get("refreshNow") for r in fake.requests] == [None, "true"]


def test_ssm_options_use_aws_names(fake: FakeExtension, client: Client) -> None:
    fake.always(parameter_reply("v"))
    provider = SecretcacheProvider(client=client)
    provider.get("/p", max_age=0, WithDecryption=False, Version=4)
    assert fake.requests[0].query == {"name": "/p", "version": "4", "withDecryption": "false"}
    with pytest.raises(GetParameterError, match="unsupported option"):
        provider.get("/p", max_age=0, Bogus=1)


def test_secrets_manager_service(fake: FakeExtension, client: Client) -> None:
    fake.always(secret_reply(string='{"user": "u"}'))
    provider = SecretcacheProvider("secretsmanager", client=client)
    assert provider.get("db", transform="json", VersionStage="AWSPREVIOUS") == {"user": "u"}
    assert fake.requests[0].path == "/secretsmanager/get"
    assert fake.requests[0].query == {"secretId": "db", "versionStage": "AWSPREVIOUS"}


def test_errors_become_get_parameter_error_without_secrets(
    fake: FakeExtension, client: Client
) -> None:
    fake.always(error_reply(404, "ResourceNotFoundException", "no such secret"))
    provider = SecretcacheProvider("secretsmanager", client=client)
    with pytest.raises(GetParameterError, match="no such secret") as caught:
        provider.get("db")
    assert SECRET not in str(caught.value) and TOKEN not in str(caught.value)


def test_unknown_service_is_rejected() -> None:
    with pytest.raises(ValueError, match="service"):
        SecretcacheProvider("dynamodb")  # type: ignore[arg-type]
