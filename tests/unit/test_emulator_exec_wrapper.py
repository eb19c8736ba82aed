"""The emulator runs AWS_LAMBDA_EXEC_WRAPPER as Lambda's managed runtimes do, and other runtimes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.emulator import LambdaEmulator, default_python
from tools.emulator.emulator import BOOTSTRAP

WRAPPER = """#!/bin/sh
printf '%s\\n' "$@" > "$WRAPPER_RECORD"
export WRAPPED=yes
exec "$@"
"""
HANDLER = """import os

def handler(event, context):
    return {"wrapped": os.environ.get("WRAPPED")}
"""


@pytest.fixture
def layer_and_code(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    opt = tmp_path / "opt"
    (opt / "bin").mkdir(parents=True)
    wrapper = opt / "bin" / "wrap"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(HANDLER)
    yield opt, code


def test_the_wrapper_gets_the_runtime_command_line_and_the_runtime_its_environment(
    layer_and_code: tuple[Path, Path], tmp_path: Path
) -> None:
    opt, code = layer_and_code
    record = tmp_path / "argv"
    env = {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/bin/wrap", "WRAPPER_RECORD": str(record)}
    with LambdaEmulator(opt, code, "app.handler", env, init_timeout=20) as emu:
        emu.init()
        assert emu.invoke({}).payload == {"wrapped": "yes"}
        assert emu.environment["AWS_LAMBDA_EXEC_WRAPPER"] == str(opt / "bin" / "wrap")
    argv = record.read_text().splitlines()
    assert argv[-1].endswith("runtime_bootstrap.py")  # the Python runtime's own command line
    assert "-S" in argv


def test_an_os_only_runtime_runs_its_bootstrap_and_no_wrapper(
    layer_and_code: tuple[Path, Path], tmp_path: Path
) -> None:
    opt, code = layer_and_code
    record = tmp_path / "argv"
    env = {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/bin/wrap", "WRAPPER_RECORD": str(record)}
    with LambdaEmulator(
        opt,
        code,
        "app.handler",
        env,
        init_timeout=20,
        runtime_command=[default_python(), "-S", str(BOOTSTRAP)],
        honour_exec_wrapper=False,
    ) as emu:
        emu.init()
        assert emu.invoke({}).payload == {"wrapped": None}
    assert not record.exists()
