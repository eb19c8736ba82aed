"""Lifecycle against an in-test fake Lambda Extensions API (a threaded http.server on loopback)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.extension_process import REPO, ExtensionProcess
from tools.moto_server import MotoServer
from tools.net import free_port

BASE = "/2020-01-01/extension"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class FakeExtensionsApi:
    """Register, event/next (fed from a queue), init/error and exit/error; records everything."""

    def __init__(self, extension_port: int, *, register_status: int = 200) -> None:
        self.extension_port = extension_port
        self.register_status = register_status
        self.identifier = "ext-" + uuid.uuid4().hex
        self.requests: list[Recorded] = []
        self.port_bound_at_register: bool | None = None
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_waiting = threading.Semaphore(0)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = Recorded(self.command, self.path, dict(self.headers.items()), body)
                api.requests.append(record)
                return record

            def _reply(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self._record()
                if self.path == f"{BASE}/register":
                    try:
                        with socket.create_connection(("127.0.0.1", api.extension_port), 1):
                            api.port_bound_at_register = True
                    except OSError:
                        api.port_bound_at_register = False
                    self._reply(
                        api.register_status,
                        json.dumps(
                            {"functionName": "fn", "functionVersion": "$LATEST", "handler": "h"}
                        ).encode(),
                        {"Lambda-Extension-Identifier": api.identifier},
                    )
                elif self.path in (f"{BASE}/init/error", f"{BASE}/exit/error"):
                    self._reply(202, b'{"status":"OK"}')
                else:
                    self._reply(404, b"{}")

            def do_GET(self) -> None:
                self._record()
                if self.path != f"{BASE}/event/next":
                    self._reply(404, b"{}")
                    return
                api.next_waiting.release()
                try:
                    event = api.events.get(timeout=60)
                except queue.Empty:
                    self._reply(500, b"{}")
                    return
                self._reply(
                    200, json.dumps(event).encode(), {"Lambda-Extension-Event-Identifier": "e"}
                )

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakeExtensionsApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in range(3):  # unblock any event/next still waiting
            self.events.put(
                {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 0}
            )
        self.server.shutdown()
        self.server.server_close()

    def wait_for_next(self, timeout: float = 20.0) -> None:
        assert self.next_waiting.acquire(timeout=timeout), "the extension never called event/next"

    def calls(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == BASE + suffix]


def header(record: Recorded, name: str) -> str | None:
    for key, value in record.headers.items():
        if key.lower() == name.lower():
            return value
    return None


# One full Lambda lifecycle, observed once, asserted by several tests -----------------------


@dataclass
class LifecycleRun:
    api: FakeExtensionsApi
    process: ExtensionProcess
    secret_value: str
    init_status: int
    init_body: bytes
    invoke_status: int
    invoke_body: bytes
    next_calls_before_first_event: int
    shutdown_seconds: float
    returncode: int | None


@pytest.fixture(scope="module")
def lifecycle_run(moto_server: MotoServer) -> Iterator[LifecycleRun]:
    name = "secretcache-under-test"
    secret_name = "lc" + uuid.uuid4().hex[:10]
    secret_value = "lifecycle-value-" + secret_name
    moto_server.client("secretsmanager").create_secret(Name=secret_name, SecretString=secret_value)
    port = free_port()
    with FakeExtensionsApi(port) as api:
        process = ExtensionProcess(
            {
                **moto_server.env(),
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
            },
            name=name,
        )
        process.start(wait=False)
        try:
            # INIT: the extension is waiting on its first event/next; nobody answered it yet
            api.wait_for_next()
            next_calls = len(api.calls("/event/next"))
            init = process.get(f"/secretsmanager/get?secretId={secret_name}")
            api.events.put(
                {
                    "eventType": "INVOKE",
                    "deadlineMs": int(time.time() * 1000) + 3000,
                    "requestId": str(uuid.uuid4()),
                    "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
                    "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-0-0"},
                }
            )
            api.wait_for_next()  # back on event/next after the INVOKE
            invoke = process.get(f"/secretsmanager/get?secretId={secret_name}")
            assert process.process is not None
            sent = time.monotonic()
            api.events.put(
                {
                    "eventType": "SHUTDOWN",
                    "shutdownReason": "SpinDown",
                    "deadlineMs": int(time.time() * 1000) + 2000,
                }
            )
            try:
                returncode: int | None = process.process.wait(5)
            except subprocess.TimeoutExpired:
                returncode = None
            elapsed = time.monotonic() - sent
            yield LifecycleRun(
                api=api,
                process=process,
                secret_value=secret_value,
                init_status=init.status,
                init_body=init.body,
                invoke_status=invoke.status,
                invoke_body=invoke.body,
                next_calls_before_first_event=next_calls,
                shutdown_seconds=elapsed,
                returncode=returncode,
            )
        finally:
            process.stop()


def test_registers_with_its_name_and_events(lifecycle_run: LifecycleRun) -> None:
    registers = lifecycle_run.api.calls("/register")
    assert len(registers) == 1
    register = registers[0]
    assert register.method == "POST"
    assert header(register, "Lambda-Extension-Name") == "secretcache-under-test"
    assert json.loads(register.body) == {"events": ["INVOKE", "SHUTDOWN"]}


def test_port_is_bound_when_register_arrives(lifecycle_run: LifecycleRun) -> None:
    assert lifecycle_run.api.port_bound_at_register is True


def test_event_next_carries_the_identifier(lifecycle_run: LifecycleRun) -> None:
    nexts = lifecycle_run.api.calls("/event/next")
    assert len(nexts) == 2  # none after SHUTDOWN
    for record in nexts:
        assert header(record, "Lambda-Extension-Identifier") == lifecycle_run.api.identifier


def test_serves_during_init_before_the_first_event(lifecycle_run: LifecycleRun) -> None:
    assert lifecycle_run.next_calls_before_first_event == 1
    assert lifecycle_run.init_status == 200, lifecycle_run.init_body[:300]
    assert json.loads(lifecycle_run.init_body)["SecretString"] == lifecycle_run.secret_value


def test_serves_during_invoke(lifecycle_run: LifecycleRun) -> None:
    assert lifecycle_run.invoke_status == 200
    assert json.loads(lifecycle_run.invoke_body)["SecretString"] == lifecycle_run.secret_value


def test_shutdown_in_any_case_exits_zero_well_inside_the_deadline(
    lifecycle_run: LifecycleRun,
) -> None:
    assert lifecycle_run.returncode == 0, lifecycle_run.process.logs()[-2000:]
    assert lifecycle_run.shutdown_seconds < 1.5
    assert not lifecycle_run.api.calls("/exit/error")
    assert not lifecycle_run.api.calls("/init/error")


def test_logs_are_json_lines_with_one_start_line(lifecycle_run: LifecycleRun) -> None:
    records = [json.loads(line) for line in lifecycle_run.process.lines if line.strip()]
    started = [r for r in records if r.get("event") == "extension.started"]
    assert len(started) == 1
    assert started[0]["config"]["mode"] == "lambda"
    assert lifecycle_run.process.token not in "\n".join(lifecycle_run.process.lines)


# Failures at start -------------------------------------------------------------------------


def run_to_exit(process: ExtensionProcess, timeout: float = 20.0) -> int:
    process.start(wait=False)
    assert process.process is not None
    try:
        return process.process.wait(timeout)
    finally:
        process.stop()


def test_bad_config_reports_init_error_and_exits_non_zero(moto_server: MotoServer) -> None:
    port = free_port()
    with FakeExtensionsApi(port) as api:
        process = ExtensionProcess(
            {
                **moto_server.env(),
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
                "SECRETS_MANAGER_TTL": "abc",
            }
        )
        code = run_to_exit(process)
    assert code != 0
    errors = api.calls("/init/error")
    assert len(errors) == 1
    error = errors[0]
    assert header(error, "Lambda-Extension-Function-Error-Type") == "Extension.ConfigInvalid"
    assert header(error, "Lambda-Extension-Identifier") == api.identifier
    message = error.body.decode()
    assert "SECRETS_MANAGER_TTL" in message
    assert "abc" in message
    assert not api.calls("/event/next")


def test_port_in_use_reports_init_error(moto_server: MotoServer) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        with FakeExtensionsApi(port) as api:
            process = ExtensionProcess(
                {
                    **moto_server.env(),
                    "AWS_LAMBDA_RUNTIME_API": api.address,
                    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
                }
            )
            code = run_to_exit(process)
    assert code != 0
    errors = api.calls("/init/error")
    assert len(errors) == 1
    assert str(port) in errors[0].body.decode()
    assert (
        header(
            errors[0],
            "Lambda-Extension-Function-Error-Type",
        )
        == "Extension.PortUnavailable"
    )


def test_failed_registration_exits_non_zero(moto_server: MotoServer) -> None:
    port = free_port()
    with FakeExtensionsApi(port, register_status=500) as api:
        process = ExtensionProcess(
            {
                **moto_server.env(),
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
            }
        )
        code = run_to_exit(process)
    assert code != 0
    assert not api.calls("/event/next")


# Standalone --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_standalone_stops_cleanly_on_signal(moto_server: MotoServer, sig: int) -> None:
    process = ExtensionProcess(moto_server.env()).start()
    assert process.get("/health", token=None).status == 200
    assert process.process is not None
    started = time.monotonic()
    assert process.stop(sig) == 0, process.logs()[-2000:]
    assert time.monotonic() - started < 3
    records = [json.loads(line) for line in process.lines if line.strip()]
    assert any(r.get("event") == "extension.stopped" for r in records)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("AWS_", "PARAMETERS_SECRETS_", "SECRETCACHE_", "SECRETS_MANAGER_", "SSM_")
        )
    }
    return {**env, "PYTHONPATH": str(REPO / "extension"), **extra}


def test_standalone_without_any_token_refuses_to_start() -> None:
    env = clean_env(
        PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(free_port()),
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    done = subprocess.run(
        [sys.executable, "-m", "secretcache"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    for name in ("AWS_SESSION_TOKEN", "SECRETCACHE_TOKEN", "SECRETCACHE_TOKEN_FILE"):
        assert name in output
    assert "Traceback" not in output


def test_standalone_token_from_file(tmp_path: Any, moto_server: MotoServer) -> None:
    token = "file-token-" + uuid.uuid4().hex
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    port = free_port()
    env = clean_env(
        **moto_server.env(),
        PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(port),
        SECRETCACHE_TOKEN_FILE=str(token_file),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "secretcache"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from tools.net import http_request

        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                status = http_request(
                    port, "GET", "/metrics", headers={"X-Aws-Parameters-Secrets-Token": token}
                ).status
                break
            except OSError:
                time.sleep(0.05)
        assert status == 200
        wrong = http_request(
            port, "GET", "/metrics", headers={"X-Aws-Parameters-Secrets-Token": token[:-1]}
        )
        assert wrong.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert token not in out + err


def test_standalone_bad_config_exits_non_zero_naming_the_variable() -> None:
    env = clean_env(
        PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(free_port()),
        AWS_SESSION_TOKEN="some-token-value",
        PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL="chatty",
    )
    done = subprocess.run(
        [sys.executable, "-m", "secretcache"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL" in done.stderr
    assert "chatty" in done.stderr


def test_port_value_config_accepts_is_served_or_rejected_by_name() -> None:
    port = free_port()
    env = clean_env(
        PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=f"+{port}", AWS_SESSION_TOKEN="some-token-value"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "secretcache"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _out, err = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:  # still running: it must be serving on the port
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                pass
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=10)
        return
    assert "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" in err
    assert f"+{port}" in err
