"""The built layer zip on the local Lambda emulator, with moto server as AWS."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tools.emulator import InitError, LambdaEmulator

from .conftest import SeededAws, rotate


@pytest.mark.parametrize("module", ["client_handler", "urllib_handler"])
def test_handler_reads_every_kind_during_init_and_invoke(
    lambda_sandbox, seeded_aws: SeededAws, module: str
):
    emu: LambdaEmulator = lambda_sandbox(module)
    report = emu.init()  # the handler module reads everything at import: INIT must succeed

    cold = emu.invoke({})
    assert cold.ok, cold.error
    assert cold.payload["init"] == seeded_aws.expected()
    assert cold.payload["invoke"] == seeded_aws.expected()
    warm = emu.invoke({})
    assert warm.ok and warm.payload["invoke"] == seeded_aws.expected()

    record = report.extensions["secretcache"]
    assert record.registered_name == "secretcache"
    assert record.events == ("INVOKE", "SHUTDOWN")
    assert record.exec_at < record.registered_at < record.ready_at
    # served during INIT: the handler's reads finished before INIT ended
    assert record.exec_at < cold.payload["init_read_at"] < emu.phases.first("init.end").t
    if module == "client_handler":
        assert cold.payload["client_file"].startswith(str(emu.opt / "python"))


def test_rotated_secret_is_served_after_its_ttl_and_at_once_with_refresh_now(
    lambda_sandbox, moto_server, rotating_secret: str
):
    emu = lambda_sandbox(
        "urllib_handler", env={"SECRET_ID": rotating_secret, "SECRETS_MANAGER_TTL": "2"}
    )
    emu.init()
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v1"}
    rotate(moto_server, rotating_secret, "v2")
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v1"}  # cached, within TTL
    assert emu.invoke({"action": "secret", "refresh": True}).payload == {"secret": "v2"}

    rotate(moto_server, rotating_secret, "v3")
    read_at = time.monotonic()
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v2"}  # refreshed entry
    time.sleep(max(0.0, read_at + 2.3 - time.monotonic()))
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v3"}  # TTL has passed


def test_entry_that_expired_while_frozen_is_not_served_after_thaw(
    lambda_sandbox, moto_server, rotating_secret: str
):
    emu = lambda_sandbox(
        "client_handler", env={"SECRET_ID": rotating_secret, "SECRETS_MANAGER_TTL": "1"}
    )
    emu.init()
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v1"}
    rotate(moto_server, rotating_secret, "v2")
    emu.freeze()
    time.sleep(1.5)
    emu.thaw()
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v2"}
    assert [p.name for p in emu.phases.all() if p.name in ("freeze", "thaw")] == [
        "freeze",
        "thaw",
    ]


def test_shutdown_ends_the_extension_inside_the_deadline_with_exit_0(lambda_sandbox):
    emu = lambda_sandbox("urllib_handler")
    emu.init()
    assert emu.invoke({}).ok
    report = emu.shutdown()
    ext = report.extensions["secretcache"]
    assert ext.exit_code == 0
    assert not ext.killed
    assert ext.after_ms is not None and ext.after_ms < report.deadline_ms
    assert report.killed == []


def test_invalid_configuration_is_an_init_error_naming_the_variable(lambda_sandbox):
    emu = lambda_sandbox("urllib_handler", env={"SECRETS_MANAGER_TTL": "abc"})
    with pytest.raises(InitError) as err:
        emu.init()
    assert err.value.source == "secretcache"
    assert err.value.error_type.startswith("Extension.")
    assert "SECRETS_MANAGER_TTL" in err.value.message
    assert emu.extensions["secretcache"].exit_code not in (None, 0)


def test_layer_serves_when_no_python_is_on_the_path(lambda_sandbox, seeded_aws: SeededAws):
    """The extension runs on the layer's bundled interpreter: the runtime's Python is not used."""
    emu = lambda_sandbox("urllib_handler", python=None)
    emu.init()
    result = emu.invoke({})
    assert result.ok, result.error
    assert result.payload["invoke"] == seeded_aws.expected()
    assert emu.shutdown().extensions["secretcache"].exit_code == 0


def test_secretcache_python_still_picks_another_python_313(lambda_sandbox, seeded_aws: SeededAws):
    """The override (e.g. the runtime's /var/lang/bin/python3.13) takes the cp313 folders."""
    pythons = [p for p in _lambda_pythons() if p.endswith("python3.13")]
    if not pythons:
        pytest.skip("no python3.13 installed under /root/.pyenv")
    emu = lambda_sandbox("urllib_handler", env={"SECRETCACHE_PYTHON": pythons[0]})
    emu.init()
    assert emu.invoke({}).payload["invoke"] == seeded_aws.expected()
    assert emu.shutdown().extensions["secretcache"].exit_code == 0


def test_layer_unpacks_with_the_launcher_executable(lambda_sandbox):
    emu = lambda_sandbox("urllib_handler")
    launcher = Path(emu.opt) / "extensions" / "secretcache"
    assert os.access(launcher, os.X_OK)
    assert (Path(emu.opt) / "python" / "secretcache_client" / "__init__.py").is_file()


def test_extension_logs_are_json_lines_without_the_token(lambda_sandbox, seeded_aws):
    emu = lambda_sandbox("client_handler")
    emu.init()
    assert emu.invoke({}).ok
    emu.shutdown()
    lines = emu.logs.lines("secretcache", "stdout")
    assert lines, "the extension logged nothing"
    for line in lines:
        json.loads(line.text)
    everything = emu.logs.text("secretcache")
    assert emu.session_token not in everything
    for value in seeded_aws.expected().values():
        assert value not in everything


def _lambda_pythons() -> list[str]:
    """Real interpreters for each Python runtime the layer supports, where installed here."""
    found = []
    for minor in (10, 11, 12, 13):
        for root in sorted(Path("/root/.pyenv/versions").glob(f"3.{minor}.*"), reverse=True):
            exe = root / "bin" / f"python3.{minor}"
            if os.access(exe, os.X_OK):
                found.append(str(exe))
                break
    return found


@pytest.mark.parametrize(
    "python", _lambda_pythons() or ["none"], ids=lambda p: p.rsplit("/", 1)[-1]
)
def test_layer_serves_on_every_supported_python_runtime(lambda_sandbox, seeded_aws, python):
    if python == "none":
        pytest.skip("no python3.10-3.13 interpreters installed under /root/.pyenv")
    emu = lambda_sandbox("client_handler", python=python, runtime_python=python)
    emu.init()
    result = emu.invoke({})
    assert result.ok, result.error
    assert result.payload["init"] == result.payload["invoke"] == seeded_aws.expected()
    assert emu.shutdown().extensions["secretcache"].exit_code == 0
