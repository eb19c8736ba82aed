"""`./build.sh demo` as a new user runs it: the example function on AWS's RIE (or, where RIE
cannot run, on our emulator), with figures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools import demo
from tools.rie import unavailable_reason

from .conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("emulator", ["rie", "ours"])
def test_demo_reads_masked_values_and_prints_figures(layer_zip, emulator):
    if emulator == "rie" and unavailable_reason() is not None:
        pytest.skip(f"RIE tier skipped: {unavailable_reason()}")
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--emulator", emulator],
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
    assert " n/a " not in out, out  # every figure was measured
    source = "AWS's Runtime Interface Emulator" if emulator == "rie" else "our emulator"
    assert f"moto as AWS; {source})" in out, out
    assert out.count("********") == 3, out
    for value in (demo.SECRET_VALUE, demo.PARAMETER_VALUE, demo.KMS_PLAINTEXT.decode()):
        assert value not in out + done.stderr
    assert "(exit 0" in out
