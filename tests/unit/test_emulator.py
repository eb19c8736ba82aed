"""The local Lambda emulator itself, driven by tiny fake extensions and handlers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tools.emulator import (
    EmulatorError,
    InitError,
    LambdaEmulator,
    default_python,
    path_without_python,
)

FAKE_EXTENSION = """#!{python} -S
import http.client, json, os, sys, time
MODE = {mode!r}
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))

def call(method, path, body=None, headers=None):
    conn.request(method, "/2020-01-01/extension" + path, body=body, headers=headers or {{}})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Lambda-Extension-Identifier"), resp.read()

name = "impostor" if MODE == "wrong_name" else os.path.basename(sys.argv[0])
status, ext_id, body = call("POST", "/register", json.dumps({{"events": ["INVOKE", "SHUTDOWN"]}}),
                            {{"Lambda-Extension-Name": name}})
print("registered", status, body.decode(), flush=True)
print("env", json.dumps({{k: v for k, v in os.environ.items()}}), flush=True)
if status != 200:
    sys.exit(1)
if MODE == "init_error":
    call("POST", "/init/error",
         json.dumps({{"errorMessage": "FOO_TTL must be a number, got 'abc'", "errorType": "x"}}),
         {{"Lambda-Extension-Identifier": ext_id,
           "Lambda-Extension-Function-Error-Type": "Extension.ConfigInvalid"}})
    sys.exit(3)
if MODE == "never_next":
    time.sleep(60)
while True:
    status, _, body = call("GET", "/event/next", headers={{"Lambda-Extension-Identifier": ext_id}})
    event = json.loads(body)
    print("event", json.dumps(event), flush=True)
    if event["eventType"] == "SHUTDOWN":
        if MODE == "ignore_shutdown":
            time.sleep(60)
        sys.exit(0)
    if MODE == "slow_invoke":
        time.sleep(0.3)
    if MODE == "exit_error":
        call("POST", "/exit/error", json.dumps({{"errorMessage": "lost the upstream"}}),
             {{"Lambda-Extension-Identifier": ext_id,
               "Lambda-Extension-Function-Error-Type": "Extension.UpstreamGone"}})
        sys.exit(5)
"""

HANDLER = """
import os, time
LOADED_AT = time.monotonic()
if os.environ.get("FAIL_AT_IMPORT"):
    raise ImportError("no module named 'missing_dependency'")

def handler(event, context):
    if event.get("raise"):
        raise ValueError("boom")
    if event.get("exit"):
        os._exit(event["exit"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {
        "event": event,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "loaded_at": LOADED_AT,
    }
"""


def build_layer(path: Path, extensions: dict[str, str]) -> Path:
    """A layer zip with one fake extension per (file name -> mode), mode 0755 like a real one."""
    python = default_python()
    with zipfile.ZipFile(path, "w") as zf:
        for name, mode in extensions.items():
            info = zipfile.ZipInfo(f"extensions/{name}")
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            zf.writestr(info, FAKE_EXTENSION.format(python=python, mode=mode))
        zf.writestr("python/helper_module.py", "VALUE = 42\n")
    return path


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(HANDLER)
    return code


@pytest.fixture
def sandbox(tmp_path: Path, code_dir: Path) -> Iterator[Callable[..., LambdaEmulator]]:
    """Factory: sandbox({"ext-a": "ok"}, **emulator options) -> an emulator, closed at the end."""
    made: list[LambdaEmulator] = []

    def make(extensions: dict[str, str], **options: object) -> LambdaEmulator:
        layer = build_layer(tmp_path / f"layer{len(made)}.zip", extensions)
        options.setdefault("init_timeout", 5.0)
        options.setdefault("shutdown_timeout", 1.0)
        emu = LambdaEmulator(layer, code_dir, "app.handler", **options)  # type: ignore[arg-type]
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


def printed(emu: LambdaEmulator, name: str, prefix: str) -> str:
    """The first stdout line of a fake extension starting with ``prefix`` (waits briefly)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for line in emu.logs.lines(name, "stdout"):
            if line.text.startswith(prefix):
                return line.text
        time.sleep(0.01)
    raise AssertionError(f"{name} never printed {prefix!r}: {emu.logs.text(name)}")


def events_seen(emu: LambdaEmulator, name: str, count: int = 1) -> list[dict[str, object]]:
    """The events a fake extension printed; waits (briefly) for ``count`` of them, since its
    stdout is read by another thread and may trail the lifecycle by a moment."""
    deadline = time.monotonic() + 3
    while True:
        events = [
            json.loads(line.text.split(" ", 1)[1])
            for line in emu.logs.lines(name, "stdout")
            if line.text.startswith("event ")
        ]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.01)


def test_cold_start_phases_are_recorded_in_lifecycle_order(sandbox):
    emu = sandbox({"ext-a": "ok", "ext-b": "ok"})
    report = emu.init()
    for name in ("ext-a", "ext-b"):
        record = report.extensions[name]
        assert record.exec_at < record.registered_at < record.ready_at
        assert 0 < record.exec_to_register_ms < record.exec_to_ready_ms < 5000
        assert record.events == ("INVOKE", "SHUTDOWN")
    runtime_exec = emu.phases.first("runtime.exec").t
    assert runtime_exec > max(r.registered_at for r in report.extensions.values())
    assert emu.phases.first("runtime.init_end").t > runtime_exec
    assert report.runtime_init_ms > 0
    assert emu.phases.first("init.end") is not None


def test_register_answers_function_identity_and_extensions_get_lambda_environment(sandbox):
    emu = sandbox({"ext-a": "ok"}, env={"MY_SETTING": "7"}, endpoint_url="http://127.0.0.1:9")
    emu.init()
    registered = printed(emu, "ext-a", "registered ").split(" ", 2)
    assert registered[1] == "200"
    assert json.loads(registered[2]) == {
        "functionName": emu.function_name,
        "functionVersion": "$LATEST",
        "handler": "app.handler",
    }
    env = json.loads(printed(emu, "ext-a", "env ")[4:])
    assert env["AWS_LAMBDA_RUNTIME_API"] == emu.runtime_api
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert env["AWS_SESSION_TOKEN"] == emu.session_token
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["MY_SETTING"] == "7"
    assert "SECRETCACHE_PYTHON" not in env  # the layer runs its own interpreter
    first = env["PATH"].split(":")[0]  # the stand-in for /var/lang/bin, first on PATH
    assert first == os.path.dirname(default_python()) and "/shims/" not in first


def test_invoke_reaches_runtime_and_every_extension(sandbox, code_dir):
    emu = sandbox({"ext-a": "ok", "ext-b": "ok"})
    emu.init()
    result = emu.invoke({"hello": "world"})
    assert result.ok, result.error
    assert result.payload["event"] == {"hello": "world"}
    assert result.payload["request_id"] == result.request_id
    assert result.payload["function_name"] == emu.function_name
    assert result.payload["remaining_ms"] > 0
    assert result.payload["pythonpath"].split(":")[0] == str(code_dir)
    assert result.payload["pythonpath"].endswith(str(emu.opt / "python"))
    for name in ("ext-a", "ext-b"):
        (invoke,) = events_seen(emu, name)
        assert invoke["eventType"] == "INVOKE"
        assert invoke["requestId"] == result.request_id
        assert invoke["invokedFunctionArn"] == emu.function_arn
        assert invoke["deadlineMs"] > time.time() * 1000
        assert invoke["tracing"]["type"] == "X-Amzn-Trace-Id"
    second = emu.invoke({"n": 2})
    assert second.ok and second.payload["event"] == {"n": 2}


def test_invoke_ends_only_when_extensions_call_next_again(sandbox):
    emu = sandbox({"slow": "slow_invoke"})
    emu.init()
    result = emu.invoke({})
    assert result.ok
    assert result.total_ms >= 290
    assert result.duration_ms < result.total_ms


def test_shutdown_delivers_event_and_extensions_exit_cleanly(sandbox):
    emu = sandbox({"ext-a": "ok"})
    emu.init()
    emu.invoke({})
    report = emu.shutdown()
    assert report.reason == "spindown"
    assert report.extensions["ext-a"].exit_code == 0
    assert not report.extensions["ext-a"].killed
    assert report.killed == []
    shutdown = events_seen(emu, "ext-a", 2)[-1]
    assert shutdown["eventType"] == "SHUTDOWN"
    assert shutdown["shutdownReason"] == "spindown"
    assert shutdown["deadlineMs"] > time.time() * 1000 - 5000
    assert emu.state == "shutdown"


def test_extension_ignoring_shutdown_is_sigkilled_at_the_deadline(sandbox):
    emu = sandbox({"stubborn": "ignore_shutdown"}, shutdown_timeout=0.5)
    emu.init()
    report = emu.shutdown()
    assert report.killed == ["stubborn"]
    assert report.extensions["stubborn"].exit_code == -9
    assert 450 <= report.duration_ms < 2000
    assert emu.phases.first("shutdown.killed", "stubborn") is not None


def test_registering_under_another_name_fails_init(sandbox):
    emu = sandbox({"ext-a": "wrong_name"})
    with pytest.raises(InitError) as err:
        emu.init()
    assert err.value.error_type == "Extension.InvalidExtensionName"
    assert "impostor" in err.value.message
    assert emu.state == "shutdown"


def test_extension_that_never_calls_next_times_out_init(sandbox):
    emu = sandbox({"sleepy": "never_next"}, init_timeout=1.0, shutdown_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(InitError) as err:
        emu.init()
    assert err.value.error_type == "Sandbox.Timedout"
    assert "sleepy" in err.value.message
    assert time.monotonic() - started < 3.0


def test_extension_init_error_fails_init_with_its_type_and_message(sandbox):
    emu = sandbox({"picky": "init_error"})
    with pytest.raises(InitError) as err:
        emu.init()
    assert err.value.error_type == "Extension.ConfigInvalid"
    assert "FOO_TTL" in err.value.message
    assert emu.extensions["picky"].init_error == (
        "Extension.ConfigInvalid",
        "FOO_TTL must be a number, got 'abc'",
    )


def test_handler_import_failure_is_a_runtime_init_error(sandbox):
    emu = sandbox({"ext-a": "ok"}, env={"FAIL_AT_IMPORT": "1"})
    with pytest.raises(InitError) as err:
        emu.init()
    assert err.value.error_type == "Runtime.ImportModuleError"
    assert "missing_dependency" in err.value.message
    assert err.value.source == "runtime"


def test_handler_exception_is_an_invoke_error_and_the_sandbox_lives_on(sandbox):
    emu = sandbox({"ext-a": "ok"})
    emu.init()
    result = emu.invoke({"raise": True})
    assert not result.ok
    assert result.error_type == "Unhandled"
    assert result.error["errorType"] == "ValueError"
    assert result.error["errorMessage"] == "boom"
    assert emu.invoke({}).ok


def test_invoke_past_the_function_timeout_shuts_the_sandbox_down(sandbox):
    emu = sandbox({"ext-a": "ok"}, function_timeout=0.5)
    emu.init()
    result = emu.invoke({"sleep": 5})
    assert not result.ok
    assert result.error_type == "Sandbox.Timedout"
    assert events_seen(emu, "ext-a", 2)[-1]["shutdownReason"] == "timeout"
    assert emu.state == "shutdown"


def process_state(pid: int) -> str:
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return stat_line.rsplit(")", 1)[1].split()[0]


def test_freeze_stops_every_process_and_thaw_resumes_them(sandbox):
    emu = sandbox({"ext-a": "ok"})
    emu.init()
    pids = [emu.pid("ext-a"), emu.pid("runtime")]
    emu.freeze()
    deadline = time.monotonic() + 2
    while any(process_state(p) != "T" for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [process_state(p) for p in pids] == ["T", "T"]
    emu.thaw()
    time.sleep(0.05)
    assert all(process_state(p) != "T" for p in pids)
    emu.freeze()
    assert emu.invoke({}).ok  # an invoke thaws first, as Lambda does
    assert [p.name for p in emu.phases.all() if p.name in ("freeze", "thaw")] == [
        "freeze",
        "thaw",
        "freeze",
        "thaw",
    ]


def test_layer_files_keep_their_exec_bit_and_python_dir(sandbox):
    emu = sandbox({"ext-a": "ok"})
    assert os.access(emu.opt / "extensions" / "ext-a", os.X_OK)
    assert (emu.opt / "python" / "helper_module.py").read_text() == "VALUE = 42\n"
    # read-only like Lambda's /opt (mode bits: root would bypass them, hence the env too)
    assert stat.S_IMODE((emu.opt / "python" / "helper_module.py").stat().st_mode) & 0o222 == 0
    assert stat.S_IMODE((emu.opt / "extensions").stat().st_mode) & 0o222 == 0
    assert emu.environment["PYTHONDONTWRITEBYTECODE"] == "1"


def test_extension_that_crashes_before_registering_is_reported(tmp_path, code_dir):
    opt = tmp_path / "opt"
    (opt / "extensions").mkdir(parents=True)
    crash = opt / "extensions" / "crasher"
    crash.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 4\n")
    crash.chmod(0o755)
    with LambdaEmulator(opt, code_dir, init_timeout=5) as emu:
        with pytest.raises(InitError) as err:
            emu.init()
        assert err.value.error_type == "Extension.Crash"
        assert "code 4" in err.value.message
        assert emu.logs.text("crasher", "stderr") == "cannot start"


def test_path_without_python_has_no_python_but_has_the_usual_tools(tmp_path):
    path = path_without_python(tmp_path / "bin")
    assert shutil.which("python3", path=path) is None
    assert shutil.which("python", path=path) is None
    assert shutil.which("sh", path=path) is not None
    assert shutil.which("dirname", path=path) is not None


def test_runtime_that_dies_mid_invoke_is_a_runtime_exit_error(sandbox):
    emu = sandbox({"ext-a": "ok"})
    emu.init()
    result = emu.invoke({"exit": 3})
    assert not result.ok
    assert result.error_type == "Runtime.ExitError"
    assert "code 3" in result.error
    assert emu.state == "shutdown"
    assert events_seen(emu, "ext-a", 2)[-1]["shutdownReason"] == "failure"


def test_extension_exit_error_fails_the_invoke_with_its_type(sandbox):
    emu = sandbox({"quitter": "exit_error"})
    emu.init()
    result = emu.invoke({})
    assert not result.ok
    assert result.error_type == "Extension.UpstreamGone"
    assert result.error == "lost the upstream"
    assert emu.extensions["quitter"].exit_error == ("Extension.UpstreamGone", "lost the upstream")
    with pytest.raises(EmulatorError):
        emu.invoke({})
