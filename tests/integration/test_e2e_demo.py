"""`./build.sh demo` as a new user runs it: the example function on the emulator, with figures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools import demo

from .conftest import REPO


@pytest.mark.slow
def test_demo_reads_masked_values_and_prints_figures(layer_zip):
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--layer", str(layer_zip)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for figure in (
        "exec -> register",
        "exec -> ready",
        "cold invoke",
        "warm invoke",
        "cache miss",
        "cache hit",
        "SHUTDOWN",
    ):
        assert figure in out, out
    assert out.count("********") == 3, out
    for value in (demo.SECRET_VALUE, demo.PARAMETER_VALUE, demo.KMS_PLAINTEXT.decode()):
        assert value not in out + done.stderr
    assert "(exit 0)" in out
