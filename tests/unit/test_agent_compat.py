"""The Secrets Manager Agent's shapes and rules: token sources, the switch, bodies, errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from secretcache.config import TOKEN_SOURCES, ConfigError, load_config
from secretcache.errors import (
    AccessDenied,
    BadRequest,
    Forbidden,
    NotFound,
    SecretcacheError,
    Throttled,
    TooManyConnections,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    agent_error,
)
from secretcache.read_requests import SecretRead
from secretcache.reads import cache_key
from secretcache.responses import agent_secret_value_body, agent_time

SECRET_TOKEN = "tok-0123456789abcdef-NEVER-SHOWN"


# Token sources -----------------------------------------------------------------------------


def test_token_sources_keep_aws_first_then_ours_then_the_agents_in_its_order() -> None:
    assert TOKEN_SOURCES == (
        "AWS_SESSION_TOKEN",
        "SECRETCACHE_TOKEN",
        "SECRETCACHE_TOKEN_FILE",
        "AWS_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    )


@pytest.mark.parametrize(
    ("env", "source"),
    [
        ({"AWS_TOKEN": "a", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"}, "AWS_TOKEN"),
        ({"AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"}, "AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ({"AWS_SESSION_TOKEN": "s", "AWS_TOKEN": "a"}, "AWS_SESSION_TOKEN"),
        ({"SECRETCACHE_TOKEN": "o", "AWS_TOKEN": "a"}, "SECRETCACHE_TOKEN"),
    ],
)
def test_the_first_set_token_source_wins(env: dict[str, str], source: str) -> None:
    config = load_config(env)
    assert (config.token, config.token_source) == (env[source], source)


@pytest.mark.parametrize(
    "variable", ["AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"]
)
def test_a_file_url_token_is_read_from_the_file_and_trimmed(tmp_path: Path, variable: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {SECRET_TOKEN}\n")
    config = load_config({variable: f"file://{token_file}"})
    assert (config.token, config.token_source) == (SECRET_TOKEN, variable)
    assert SECRET_TOKEN not in json.dumps(config.describe())
    assert SECRET_TOKEN not in repr(config)


def test_an_unreadable_file_url_token_stops_start_up_naming_the_variable_and_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"AWS_CONTAINER_AUTHORIZATION_TOKEN": "file:///nonexistent/token"})
    assert info.value.variable == "AWS_CONTAINER_AUTHORIZATION_TOKEN"
    assert "/nonexistent/token" in str(info.value)


def test_an_empty_file_url_token_stops_start_up(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config({"AWS_TOKEN": f"file://{empty}"})


def test_a_token_value_never_appears_in_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"AWS_TOKEN": SECRET_TOKEN, "SECRETCACHE_COMPAT": "nope"})
    assert SECRET_TOKEN not in str(info.value)


# The switch --------------------------------------------------------------------------------


def test_compat_defaults_to_aws_and_takes_agent_in_any_case() -> None:
    assert load_config({"AWS_SESSION_TOKEN": "t"}).compat == "aws"
    assert (
        load_config({"AWS_SESSION_TOKEN": "t", "SECRETCACHE_COMPAT": " Agent "}).compat == "agent"
    )
    assert load_config({"AWS_SESSION_TOKEN": "t", "SECRETCACHE_COMPAT": "aws"}).compat == "aws"


@pytest.mark.parametrize("value", ["sma", "agents", "AWS-extension", "1"])
def test_an_invalid_compat_value_stops_start_up_with_a_clear_message(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"AWS_SESSION_TOKEN": "t", "SECRETCACHE_COMPAT": value})
    assert info.value.variable == "SECRETCACHE_COMPAT"
    assert "aws" in str(info.value) and "agent" in str(info.value)


def test_agent_and_aws_shapes_never_share_a_cache_entry() -> None:
    aws = SecretRead("app/db", None, "AWSCURRENT")
    assert cache_key(aws) != cache_key(aws._replace(agent=True))
    assert cache_key(aws._replace(refresh=True)) == cache_key(aws)


# Bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(2019, 9, 26, 21, 53, 9, 46000, tzinfo=timezone.utc), "1569534789.046"),
        (datetime(2019, 9, 26, 21, 53, 9, tzinfo=timezone.utc), "1569534789"),
        (datetime(2019, 9, 26, 21, 53, 9, 500000, tzinfo=timezone.utc), "1569534789.5"),
        (
            datetime(2019, 9, 26, 23, 53, 9, 1000, tzinfo=timezone(timedelta(hours=2))),
            "1569534789.001",
        ),
        (None, None),
    ],
)
def test_created_date_is_epoch_seconds_as_the_agent_writes_them(
    when: datetime | None, text: str | None
) -> None:
    assert agent_time(when) == text


def test_agent_body_keeps_its_field_order_and_omits_absent_optional_fields() -> None:
    result = {
        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-abcdef",
        "Name": "MyTest",
        "VersionId": "v1",
        "SecretString": "hunter2",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": datetime(2019, 9, 26, 21, 53, 9, 46000, tzinfo=timezone.utc),
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }
    body = agent_secret_value_body(result)
    assert body == (
        b'{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-abcdef",'
        b'"Name":"MyTest","VersionId":"v1","SecretString":"hunter2",'
        b'"VersionStages":["AWSCURRENT"],"CreatedDate":"1569534789.046"}'
    )


def test_agent_body_of_a_binary_secret_has_no_secret_string() -> None:
    body = json.loads(agent_secret_value_body({"Name": "b", "SecretBinary": b"\x00\xff"}))
    assert list(body) == ["ARN", "Name", "VersionId", "SecretBinary", "CreatedDate"]
    assert body["SecretBinary"] == "AP8=" and body["ARN"] is None and body["CreatedDate"] is None


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (AccessDenied("m", error_type="AccessDeniedException"), 400, "AccessDeniedException"),
        (NotFound("m", error_type="ResourceNotFoundException"), 400, "ResourceNotFoundException"),
        (Throttled("m", error_type="ThrottlingException"), 400, "ThrottlingException"),
        (UpstreamClientError("m", error_type="DecryptionFailure"), 400, "DecryptionFailure"),
        (BadRequest("m", error_type="InvalidRequestException"), 400, "InvalidRequestException"),
        (UpstreamTimeout("m"), 504, "TimeoutError"),
        (UpstreamError("m", error_type="UpstreamUnavailable"), 502, "ConnectionError"),
        (UpstreamError("m", error_type="InternalServiceError"), 500, "InternalServiceError"),
        (SecretcacheError("m"), 500, "InternalFailure"),
        (Forbidden("Bad Token", error_type="BadToken"), 403, "BadToken"),
        (TooManyConnections("m"), 429, "TooManyConnections"),
    ],
)
def test_agent_errors_carry_the_agents_status_and_type(
    error: SecretcacheError, status: int, type_: str
) -> None:
    got_status, body = agent_error(error)
    assert got_status == status
    assert (
        body
        == json.dumps(
            {"__type": type_, "message": "m" if type_ != "BadToken" else "Bad Token"},
            separators=(",", ":"),
        ).encode()
    )
