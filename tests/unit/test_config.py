"""Configuration: every variable, its default, and every value we refuse to guess about."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from secretcache.config import DEFAULT_UPSTREAM_TIMEOUT_SECONDS, Config, ConfigError, load_config

TOKEN = "session-token-0123456789abcdef-SECRET"
BASE = {"AWS_SESSION_TOKEN": TOKEN}


def config_with(**env: str) -> Config:
    return load_config({**BASE, **env})


def test_defaults_match_aws_extension() -> None:
    config = load_config(BASE)
    assert config.port == 2773
    assert config.cache_enabled is True
    assert config.cache_size == 1000
    assert config.cache_max_bytes == 16 * 1024 * 1024
    assert config.max_connections == 3
    assert config.log_level == "info"
    assert config.secrets_manager_ttl == 300
    assert config.ssm_ttl == 300
    assert config.kms_ttl == 300
    assert config.secrets_manager_timeout == DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    assert config.ssm_timeout == DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    assert config.kms_timeout == DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    assert config.max_stale_seconds == 3600
    assert config.not_found_ttl == 0
    assert config.token == TOKEN
    assert config.token_source == "AWS_SESSION_TOKEN"
    assert config.lambda_runtime_api is None
    assert config.in_lambda is False
    assert config.region is None


def test_config_is_frozen() -> None:
    config = load_config(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "8080", "port", 8080),
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "1", "port", 1),
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "65535", "port", 65535),
        ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "0", "cache_size", 0),
        ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "50", "cache_size", 50),
        ("SECRETCACHE_CACHE_MAX_BYTES", "1048576", "cache_max_bytes", 1048576),
        ("PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", "10", "max_connections", 10),
        ("SECRETS_MANAGER_TTL", "0", "secrets_manager_ttl", 0),
        ("SECRETS_MANAGER_TTL", "301", "secrets_manager_ttl", 301),
        ("SECRETS_MANAGER_TTL", "86400", "secrets_manager_ttl", 86400),
        ("SSM_PARAMETER_STORE_TTL", "60", "ssm_ttl", 60),
        ("SSM_PARAMETER_STORE_TTL", "86400", "ssm_ttl", 86400),
        ("SECRETCACHE_KMS_TTL", "7", "kms_ttl", 7),
        ("SECRETCACHE_MAX_STALE_SECONDS", "0", "max_stale_seconds", 0),
        ("SECRETCACHE_NOT_FOUND_TTL", "5", "not_found_ttl", 5),
        ("SECRETCACHE_MAX_CLIENT_CONNECTIONS", "16", "max_client_connections", 16),
        ("SECRETCACHE_REQUEST_TIMEOUT_MILLIS", "2500", "request_timeout", 2.5),
        ("SECRETS_MANAGER_TIMEOUT_MILLIS", "1500", "secrets_manager_timeout", 1.5),
        ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "250", "ssm_timeout", 0.25),
        ("SECRETCACHE_KMS_TIMEOUT_MILLIS", "2000", "kms_timeout", 2.0),
        # 0 means "the SDK default", not "no time at all"
        ("SECRETS_MANAGER_TIMEOUT_MILLIS", "0", "secrets_manager_timeout", 5.0),
        ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "0", "ssm_timeout", 5.0),
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001", "lambda_runtime_api", "127.0.0.1:9001"),
        ("AWS_LAMBDA_FUNCTION_NAME", "my-fn", "function_name", "my-fn"),
        ("AWS_REGION", "eu-west-1", "region", "eu-west-1"),
        ("AWS_DEFAULT_REGION", "eu-west-2", "region", "eu-west-2"),
        # surrounding whitespace is not a reason to fail
        ("SECRETS_MANAGER_TTL", " 42 ", "secrets_manager_ttl", 42),
    ],
)
def test_each_variable_sets_its_field(
    variable: str, value: str, attribute: str, expected: object
) -> None:
    assert getattr(config_with(**{variable: value}), attribute) == expected


def test_aws_region_wins_over_default_region() -> None:
    config = config_with(AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="us-west-2")
    assert config.region == "eu-west-1"


def test_runtime_api_means_lambda_mode() -> None:
    config = config_with(AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001")
    assert config.in_lambda is True
    assert config.describe()["mode"] == "lambda"
    assert load_config(BASE).describe()["mode"] == "standalone"


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_values_mean_the_default(value: str) -> None:
    config = config_with(
        SECRETS_MANAGER_TTL=value,
        PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=value,
        PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL=value,
    )
    assert config.secrets_manager_ttl == 300
    assert config.cache_enabled is True
    assert config.log_level == "info"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("tRuE", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("False", False),
        ("fAlSe", False),
        ("0", False),
    ],
)
def test_cache_enabled_accepts_booleans_in_any_case(value: str, expected: bool) -> None:
    assert config_with(PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=value).cache_enabled is expected


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", "t rue"])
def test_cache_enabled_rejects_other_words(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=value)
    assert "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED" in str(info.value)
    assert value in str(info.value)
    assert info.value.variable == "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("debug", "debug"),
        ("DEBUG", "debug"),
        ("Info", "info"),
        ("warn", "warn"),
        ("WARN", "warn"),
        ("warning", "warn"),
        ("error", "error"),
        ("ERROR", "error"),
        ("none", "none"),
        ("NONE", "none"),
    ],
)
def test_log_level_in_any_case(value: str, expected: str) -> None:
    assert config_with(PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL=value).log_level == expected


@pytest.mark.parametrize("value", ["verbose", "trace", "critical", "3"])
def test_bad_log_level_is_rejected(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL=value)
    message = str(info.value)
    assert "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL" in message
    assert value in message
    assert info.value.variable == "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL"


INTEGER_VARIABLES = [
    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
    "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE",
    "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS",
    "SECRETCACHE_CACHE_MAX_BYTES",
    "SECRETS_MANAGER_TTL",
    "SSM_PARAMETER_STORE_TTL",
    "SECRETCACHE_KMS_TTL",
    "SECRETS_MANAGER_TIMEOUT_MILLIS",
    "SSM_PARAMETER_STORE_TIMEOUT_MILLIS",
    "SECRETCACHE_KMS_TIMEOUT_MILLIS",
    "SECRETCACHE_MAX_STALE_SECONDS",
    "SECRETCACHE_NOT_FOUND_TTL",
    "SECRETCACHE_MAX_CLIENT_CONNECTIONS",
    "SECRETCACHE_REQUEST_TIMEOUT_MILLIS",
]


@pytest.mark.parametrize("variable", INTEGER_VARIABLES)
@pytest.mark.parametrize("value", ["abc", "1.5", "12s", "0x10", "five"])
def test_non_numeric_values_are_rejected_naming_variable_and_value(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(**{variable: value})
    message = str(info.value)
    assert variable in message
    assert value in message
    assert info.value.variable == variable


@pytest.mark.parametrize("variable", INTEGER_VARIABLES)
def test_negative_values_are_rejected(variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(**{variable: "-1"})
    assert variable in str(info.value)
    assert "-1" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "0"),
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "65536"),
        ("PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", "0"),
        ("SECRETS_MANAGER_TTL", "86401"),
        ("SSM_PARAMETER_STORE_TTL", "86401"),
        ("SECRETCACHE_KMS_TTL", "86401"),
        ("SECRETCACHE_NOT_FOUND_TTL", "86401"),
        ("SECRETCACHE_MAX_CLIENT_CONNECTIONS", "0"),
        ("SECRETCACHE_REQUEST_TIMEOUT_MILLIS", "0"),
        ("SECRETS_MANAGER_TIMEOUT_MILLIS", "600001"),
    ],
)
def test_out_of_range_values_are_rejected(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(**{variable: value})
    assert variable in str(info.value)
    assert value in str(info.value)
    assert info.value.variable == variable


def test_config_error_is_a_value_error_with_one_line_message() -> None:
    with pytest.raises(ValueError) as info:
        config_with(SECRETS_MANAGER_TTL="abc")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("SECRETS_MANAGER_TTL=")


def test_long_bad_value_is_shortened_in_the_message() -> None:
    value = "x" * 500
    with pytest.raises(ConfigError) as info:
        config_with(SECRETS_MANAGER_TTL=value)
    assert "SECRETS_MANAGER_TTL" in str(info.value)
    assert len(str(info.value)) < 300


# Token -------------------------------------------------------------------------------------


def test_missing_token_is_rejected_naming_every_source() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({})
    message = str(info.value)
    for name in ("AWS_SESSION_TOKEN", "SECRETCACHE_TOKEN", "SECRETCACHE_TOKEN_FILE"):
        assert name in message


def test_blank_token_counts_as_missing() -> None:
    with pytest.raises(ConfigError):
        load_config({"AWS_SESSION_TOKEN": "   "})


def test_token_precedence_session_token_first(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    env = {
        "AWS_SESSION_TOKEN": "from-session",
        "SECRETCACHE_TOKEN": "from-secretcache",
        "SECRETCACHE_TOKEN_FILE": str(token_file),
    }
    config = load_config(env)
    assert (config.token, config.token_source) == ("from-session", "AWS_SESSION_TOKEN")


def test_token_precedence_secretcache_token_before_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    env = {"SECRETCACHE_TOKEN": "from-secretcache", "SECRETCACHE_TOKEN_FILE": str(token_file)}
    config = load_config(env)
    assert (config.token, config.token_source) == ("from-secretcache", "SECRETCACHE_TOKEN")


def test_token_from_file_is_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-file-token\n\n")
    config = load_config({"SECRETCACHE_TOKEN_FILE": str(token_file)})
    assert (config.token, config.token_source) == ("from-file-token", "SECRETCACHE_TOKEN_FILE")


def test_missing_token_file_is_rejected() -> None:
    path = "/nonexistent/secretcache-token"
    with pytest.raises(ConfigError) as info:
        load_config({"SECRETCACHE_TOKEN_FILE": path})
    assert "SECRETCACHE_TOKEN_FILE" in str(info.value)
    assert path in str(info.value)
    assert info.value.variable == "SECRETCACHE_TOKEN_FILE"


def test_missing_token_file_message_names_the_whole_path(tmp_path: Path) -> None:
    path = str(tmp_path / ("deep" * 10) / "token-file-that-does-not-exist")
    assert len(path) > 64
    with pytest.raises(ConfigError) as info:
        load_config({"SECRETCACHE_TOKEN_FILE": path})
    assert path in str(info.value)


@pytest.mark.parametrize("content", ["", "\n", "   \n\t"])
def test_empty_token_file_is_rejected(tmp_path: Path, content: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config({"SECRETCACHE_TOKEN_FILE": str(token_file)})
    assert "SECRETCACHE_TOKEN_FILE" in str(info.value)
    assert "empty" in str(info.value)


def test_token_file_that_is_a_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"SECRETCACHE_TOKEN_FILE": str(tmp_path)})
    assert "SECRETCACHE_TOKEN_FILE" in str(info.value)


def test_describe_never_contains_the_token() -> None:
    config = config_with(
        AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001", PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL="debug"
    )
    described = json.dumps(config.describe())
    assert TOKEN not in described
    assert TOKEN[:16] not in described
    assert config.describe()["tokenSource"] == "AWS_SESSION_TOKEN"
    # nor its repr (which a careless log line might print)
    assert TOKEN not in repr(config)


def test_describe_reports_effective_values() -> None:
    described = config_with(
        SECRETS_MANAGER_TTL="10",
        SSM_PARAMETER_STORE_TTL="20",
        SECRETCACHE_KMS_TTL="30",
        PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED="FALSE",
    ).describe()
    assert described["ttlSeconds"] == {"secretsmanager": 10, "ssm": 20, "kms": 30}
    assert described["cacheEnabled"] is False
    json.dumps(described)  # serialisable as one log line


# SnapStart ---------------------------------------------------------------------------------


def test_snapstart_is_read_from_lambdas_initialization_type() -> None:
    assert load_config(BASE).snapstart is False
    assert load_config({**BASE, "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"}).snapstart is False
    config = load_config({**BASE, "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"})
    assert (config.snapstart, config.snapstart_prefetch, config.snapstart_jitter) == (
        True,
        False,
        1.0,
    )


def test_snapstart_prefetch_and_jitter_are_validated() -> None:
    config = load_config(
        {
            **BASE,
            "SECRETCACHE_SNAPSTART_PREFETCH": "true",
            "SECRETCACHE_SNAPSTART_JITTER_MILLIS": "250",
        }
    )
    assert (config.snapstart_prefetch, config.snapstart_jitter) == (True, 0.25)
    with pytest.raises(ConfigError, match="SECRETCACHE_SNAPSTART_JITTER_MILLIS"):
        load_config({**BASE, "SECRETCACHE_SNAPSTART_JITTER_MILLIS": "60001"})
    with pytest.raises(ConfigError, match="SECRETCACHE_SNAPSTART_PREFETCH"):
        load_config({**BASE, "SECRETCACHE_SNAPSTART_PREFETCH": "sometimes"})


def test_the_tests_only_random_seed_is_read_and_never_shown() -> None:
    assert load_config(BASE).random_seed is None
    config = load_config({**BASE, "SECRETCACHE_RANDOM_SEED": " one-snapshot "})
    assert config.random_seed == "one-snapshot"
    assert "one-snapshot" not in repr(config) and "one-snapshot" not in str(config.describe())
