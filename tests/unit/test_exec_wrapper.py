"""The exec wrapper process: its options, and the environment it passes on to the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from secretcache.exec_wrapper import SettingsError, initial_environment, load_settings


def test_settings_defaults_and_refusals() -> None:
    settings = load_settings({"AWS_SESSION_TOKEN": "t"})
    assert (settings.port, settings.leave_unresolved, settings.timeout) == (2773, False, 8.0)
    leave = load_settings(
        {"SECRETCACHE_ENV_ON_ERROR": "Leave", "SECRETCACHE_ENV_TIMEOUT_MILLIS": "250"}
    )
    assert leave.leave_unresolved and leave.timeout == 0.25
    for env in (
        {"SECRETCACHE_ENV_ON_ERROR": "ignore"},
        {"SECRETCACHE_ENV_TIMEOUT_MILLIS": "0"},
        {"SECRETCACHE_ENV_TIMEOUT_MILLIS": "fast"},
        {"PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": "70000"},
    ):
        with pytest.raises(SettingsError) as refused:
            load_settings(env)
        assert next(iter(env)) in str(refused.value)


def test_initial_environment_reads_the_block_as_started_first_duplicate_winning(
    tmp_path: Path,
) -> None:
    block = tmp_path / "environ"
    block.write_bytes(b"A=1\0B=x=y\0A=2\0NOEQUALS\0E=\0RAW=\xff\xfe\0")
    assert initial_environment(str(block)) == {
        b"A": b"1",
        b"B": b"x=y",
        b"E": b"",
        b"RAW": b"\xff\xfe",
    }
