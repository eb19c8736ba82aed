"""Cold starts of the layer on the emulator: exec -> register / listening / ready / first secret.

Each cold start is a fresh sandbox (fresh processes) on the unpacked layer, with a function that
reads one secret at import, so "first secret" is what a handler asking during INIT sees: the
extension registers, serves, loads the AWS SDK in the background and answers the miss from moto.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tools.emulator import LambdaEmulator, unpack_layer
from tools.net import free_port, http_request

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def prepare_layers(layer_zip: Path, workdir: Path) -> dict[str, Path]:
    """The layer unpacked twice: as shipped, and with every ``__pycache__`` removed."""
    with_pyc = workdir / "opt-with-pyc"
    unpack_layer(layer_zip, with_pyc)
    without = workdir / "opt-without-pyc"
    shutil.copytree(with_pyc, without, symlinks=True)
    for cache_dir in sorted(without.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache_dir)
    return {"with_pyc": with_pyc, "without_pyc": without}


LOADERS = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}
# The extension's interpreter in each start-up variant: the layer's own (the launcher's path on
# every runtime) or, through SECRETCACHE_PYTHON, a runtime's python3.13 (Lambda's python3.13
# runtime has /var/lang/bin/python3.13; here a python3.13 of this machine stands in for it).
BUNDLED: dict[str, str | None] = {"SECRETCACHE_PYTHON": None}


def bundled_command(layer_dir: Path) -> list[str]:
    """The layer's interpreter, started as the launcher starts it (minus -E -S)."""
    bundle = layer_dir / "secretcache" / "python"
    return [
        str(bundle / "lib" / LOADERS[platform.machine()]),
        "--inhibit-cache",
        "--library-path",
        str(bundle / "lib"),
        str(bundle / "bin" / "python3.13"),
    ]


def runtime_python() -> str | None:
    """A real python3.13 of this machine (never a pyenv shim), or None."""
    override = os.environ.get("SECRETCACHE_BENCH_RUNTIME_PYTHON")
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [override] if override else []
    candidates += sorted(glob.glob(f"{pyenv}/versions/3.13.*/bin/python3.13"), reverse=True)
    candidates += ["/var/lang/bin/python3.13", "/usr/local/bin/python3.13", "/usr/bin/python3.13"]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def bare_interpreter_ms(python: list[str]) -> float:
    """Spawn -> exit of ``python -S -c pass``, spawned the way the emulator spawns extensions."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*python, "-S", "-c", "pass"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    proc.communicate()
    return (time.monotonic() - start) * 1000.0


def _json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def cold_start(
    layer_dir: Path,
    moto_url: str,
    secret_id: str,
    *,
    extra_env: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """One INIT; every figure in ms from the extension's exec (the emulator's spawn call)."""
    env: dict[str, str | None] = {
        "BENCH_SECRET_ID": secret_id,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
        # The layer (and the function's code) are read-only on Lambda: nothing is cached.
        "PYTHONDONTWRITEBYTECODE": "1",
        **(extra_env or {}),
    }
    with LambdaEmulator(
        layer_dir, FIXTURES, "init_reader.handler", env, endpoint_url=moto_url, init_timeout=30.0
    ) as emu:
        report = emu.init()
        ext = report.extensions["secretcache"]
        assert ext.exec_at is not None and ext.registered_at is not None
        logs = _json_lines(emu.logs.text("secretcache", "stdout"))
        started = next((r for r in logs if r.get("event") == "extension.started"), {})
        sdk = next((r for r in logs if r.get("event") == "sdk.loaded"), {})
        bench = None
        # The runtime printed the line before INIT ended, but the emulator's log reader may
        # not have taken it off the pipe yet.
        deadline = time.monotonic() + 5.0
        while bench is None and time.monotonic() < deadline:
            for line in emu.logs.lines("runtime", "stdout"):
                if line.text.startswith("BENCH "):
                    bench = json.loads(line.text[6:])
            if bench is None:
                time.sleep(0.01)
        runtime_exec = emu.phases.first("runtime.exec")
        stderr = emu.logs.text("secretcache", "stderr")
    # The extension's own clock starts in main(); it logs register and listen relative to that.
    # Its start, on the emulator's clock, is when the register request arrived minus msToRegister.
    ms_to_register = started.get("msToRegister")
    main_at_ms = None
    if ms_to_register is not None:
        main_at_ms = ext.exec_to_register_ms - float(ms_to_register)

    def since_main(field: str, record: dict[str, Any]) -> float | None:
        value = record.get(field)
        return None if value is None or main_at_ms is None else main_at_ms + float(value)

    def since_exec(t: float | None) -> float | None:
        return None if t is None else (t - ext.exec_at) * 1000.0

    result = {
        "exec_to_main_ms": main_at_ms,
        "exec_to_register_ms": ext.exec_to_register_ms,
        "exec_to_listening_ms": since_main("msToListen", started),
        "exec_to_ready_ms": ext.exec_to_ready_ms,
        "exec_to_sdk_loaded_ms": since_main("msSinceStart", sdk),
        "exec_to_runtime_exec_ms": since_exec(runtime_exec.t if runtime_exec else None),
        "exec_to_first_secret_ms": since_exec(bench["served"] if bench else None),
        "handler_wait_for_first_secret_ms": (
            (bench["served"] - bench["asked"]) * 1000.0 if bench else None
        ),
        "init_duration_ms": report.duration_ms,
        "cpu_ms_to_first_secret": (
            bench["extension_cpu_s"] * 1000.0
            if bench and bench.get("extension_cpu_s") is not None
            else None
        ),
        "rss_mib_at_first_secret": (
            bench["extension_rss_kib"] / 1024.0
            if bench and bench.get("extension_rss_kib") is not None
            else None
        ),
    }
    if not bench:
        raise RuntimeError(
            "the INIT-time read did not report; extension stderr:\n" + stderr[-2000:]
        )
    return result


def import_profile(
    layer_dir: Path, moto_url: str, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One cold start under ``-X importtime`` (bundled interpreter): the top-level imports.

    Each row says whether its line was printed before the extension called event/next (on the
    critical path) or after (the SDK loader thread). ``-X importtime`` itself adds some cost.
    """
    port = free_port()
    # The launcher starts Python with -E, so PYTHONPROFILEIMPORTTIME cannot reach it: the bundled
    # interpreter goes in as SECRETCACHE_PYTHON, wrapped to add -X importtime.
    wrapper = layer_dir.parent / "python3.13-importtime"
    command = " ".join(f"'{part}'" for part in bundled_command(layer_dir))
    wrapper.write_text(f'#!/bin/sh\nexec {command} -X importtime "$@"\n')
    wrapper.chmod(0o755)
    env: dict[str, str | None] = {
        "SECRETCACHE_PYTHON": str(wrapper),
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
        "PYTHONDONTWRITEBYTECODE": "1",
        **(extra_env or {}),
    }
    with LambdaEmulator(
        layer_dir, FIXTURES, "noop.handler", env, endpoint_url=moto_url, init_timeout=30.0
    ) as emu:
        report = emu.init()
        ext = report.extensions["secretcache"]
        wait_healthy(port)
        lines = emu.logs.lines("secretcache", "stderr")
    assert ext.ready_at is not None and ext.exec_at is not None
    rows = []
    for line in lines:
        for row in parse_importtime(line.text):
            row["before_ready"] = line.t <= ext.ready_at
            rows.append(row)
    return {"exec_to_ready_ms": ext.exec_to_ready_ms, "imports": rows}


def wait_healthy(port: int, timeout: float = 30.0) -> float:
    """Poll ``GET /health`` until it says ok (the SDK has loaded); returns when, monotonic."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = http_request(port, "GET", "/health", timeout=5.0)
            if result.status == 200 and result.json() == {"status": "ok"}:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError("the extension's /health did not say ok")


def parse_importtime(text: str) -> list[dict[str, Any]]:
    """Top-level rows of ``-X importtime`` output: module, self and cumulative ms."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|", 2)
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name_field = parts[2][1:] if parts[2].startswith(" ") else parts[2]
        if name_field.startswith(" "):
            continue  # nested: counted in its top-level importer's cumulative time
        rows.append(
            {
                "module": name_field.strip(),
                "self_ms": int(parts[0]) / 1000.0,
                "cumulative_ms": int(parts[1]) / 1000.0,
            }
        )
    return rows
