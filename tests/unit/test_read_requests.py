"""Typed read requests: one parser for the query, the Agent's path and SECRETCACHE_PREFETCH."""

from __future__ import annotations

import base64

import pytest
from secretcache.config import ConfigError, load_config
from secretcache.errors import BadRequest
from secretcache.query import parse_query_string
from secretcache.read_requests import (
    DecryptRead,
    ParameterRead,
    ParametersRead,
    PathRead,
    SecretRead,
    SecretsRead,
)
from secretcache.reads import cache_key
from secretcache.service import Service

BASE = {"AWS_SESSION_TOKEN": "unit-test-token-0123456789abcdef"}


def prefetched(value: str, **env: str) -> object:
    config = load_config({**BASE, "SECRETCACHE_PREFETCH": value, **env})
    assert len(config.prefetch) == 1
    return config.prefetch[0].read


def test_a_secret_read_from_the_query_and_from_the_agent_path_differ_only_in_shape() -> None:
    query = parse_query_string("secretId=app%2Fdb&versionStage=AWSPREVIOUS")
    from_query = SecretRead.from_query(query)
    from_path = SecretRead.from_agent_path("app/db", parse_query_string("versionStage=AWSPREVIOUS"))
    assert from_query == SecretRead("app/db", None, "AWSPREVIOUS", False, agent=False)
    assert from_path == from_query._replace(agent=True)
    assert SecretRead.from_agent_query(query) == from_path
    assert from_query.service is Service.SECRETS_MANAGER


@pytest.mark.parametrize("name", ["abc", "secretid", "VersionId", "withDecryption"])
def test_the_agent_forms_refuse_a_parameter_they_do_not_know(name: str) -> None:
    pairs = parse_query_string(f"secretId=x&{name}=1")
    with pytest.raises(BadRequest, match=f"unknown parameter: {name}"):
        SecretRead.from_agent_query(pairs)
    with pytest.raises(BadRequest, match=f"unknown parameter: {name}"):
        SecretRead.from_agent_path("x", parse_query_string(f"{name}=1"))
    assert SecretRead.from_query(pairs).secret_id == "x"  # AWS's form ignores it, as before


def test_the_agent_forms_take_role_arn_and_refuse_a_malformed_one() -> None:
    good = "arn:aws:iam::123456789012:role/r"
    assert SecretRead.from_agent_path("x", parse_query_string(f"roleArn={good}")).role_arn == good
    with pytest.raises(BadRequest, match="invalid roleArn format"):
        SecretRead.from_agent_path("x", parse_query_string("roleArn=arn:aws:iam::1:role/r"))


@pytest.mark.parametrize("value", ["123", "yes", "maybe"])
def test_the_agent_forms_refuse_a_bad_refresh_now(value: str) -> None:
    with pytest.raises(BadRequest, match="refreshNow"):
        SecretRead.from_agent_path("x", parse_query_string(f"refreshNow={value}"))


@pytest.mark.parametrize(("value", "refresh"), [("TRUE", True), ("1", True), ("FALSE", False)])
def test_the_agent_refresh_now_values_in_any_case(value: str, refresh: bool) -> None:
    assert (
        SecretRead.from_agent_path("x", parse_query_string(f"refreshNow={value}")).refresh
        is refresh
    )


def test_compat_agent_prefetch_warms_the_agent_shaped_entry() -> None:
    read = prefetched("sm:app/db", SECRETCACHE_COMPAT="agent")
    assert read == SecretRead("app/db", agent=True)
    assert prefetched("sm:app/db") == SecretRead("app/db")


@pytest.mark.parametrize(
    ("query", "selector"),
    [("version=7", ":7"), ("version=007", ":7"), ("label=live", ":live"), ("", "")],
)
def test_prefetch_items_are_parsed_into_the_read_the_request_makes(
    query: str, selector: str
) -> None:
    request = ParameterRead.from_query(parse_query_string(f"name=/app/db&{query}"))
    item = prefetched(f"ssm:/app/db?{query}" if query else "ssm:/app/db")
    assert item == request
    assert request.selector == selector
    assert cache_key(item) == cache_key(request)  # a prefetched entry is the one requests hit


@pytest.mark.parametrize("query", ["version=0", "version=-1", "version=a", "withDecryption=maybe"])
def test_prefetch_refuses_what_the_api_refuses(query: str) -> None:
    with pytest.raises(BadRequest):
        ParameterRead.from_query(parse_query_string(f"name=/app/db&{query}"))
    with pytest.raises(ConfigError) as info:
        prefetched(f"ssm:/app/db?{query}")
    assert "SECRETCACHE_PREFETCH" in str(info.value)


def test_prefetch_of_every_kind() -> None:
    blob = base64.b64encode(b"ciphertext").decode()
    config = load_config(
        {
            **BASE,
            "SECRETCACHE_PREFETCH": "sm:app/db?versionStage=AWSCURRENT,ssmpath:/app?recursive=true,"
            "kms:MY_BLOB",
            "MY_BLOB": blob,
        }
    )
    reads = [item.read for item in config.prefetch]
    assert reads == [
        SecretRead("app/db", None, "AWSCURRENT"),
        PathRead("/app", True, False),
        DecryptRead(b"ciphertext"),
    ]
    assert [item.label for item in config.prefetch] == ["sm:app/db", "ssmpath:/app", "kms:MY_BLOB"]


def test_a_prefetched_path_must_start_with_a_slash_as_the_request_must() -> None:
    with pytest.raises(ConfigError):
        prefetched("ssmpath:app")
    with pytest.raises(BadRequest):
        PathRead.from_query(parse_query_string("path=app"))


def test_batch_reads_are_hashable_values_identical_requests_share() -> None:
    one = ParametersRead.from_query(parse_query_string("name=/a&name=/b&withDecryption=true"))
    two = ParametersRead.from_query(parse_query_string("name=/a&name=/b&withDecryption=1"))
    assert one == two and hash(one) == hash(two)
    assert SecretsRead.from_query(parse_query_string("secretId=a&secretId=b")).secret_ids == (
        "a",
        "b",
    )


def test_decrypt_reads_digest_everything_that_changes_the_answer() -> None:
    blob = base64.b64encode(b"ct").decode()
    plain = DecryptRead.from_body(f'{{"CiphertextBlob": "{blob}"}}'.encode(), [])
    with_context = DecryptRead.from_body(
        f'{{"CiphertextBlob": "{blob}", "EncryptionContext": {{"a": "b"}}}}'.encode(), []
    )
    assert plain.digest() != with_context.digest()
    assert with_context.encryption_context == {"a": "b"}
    assert DecryptRead(b"ct").digest() == plain.digest()


def test_deeply_nested_decrypt_body_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        DecryptRead.from_body(b"[" * 30000 + b"]" * 30000, [])
