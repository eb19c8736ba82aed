"""SnapStart, simulated: a real extension process, a fake Extensions API, moto server as AWS.

Under SnapStart, INIT runs once when a version is published and ends in a snapshot; the first
event the extension ever receives follows a restore, possibly much later. The test stands in
for that: the environment as SnapStart sets it (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start, no
AWS_SESSION_TOKEN, the container authorization token), INIT until the extension waits on
event/next, the process frozen (SIGSTOP) while the secret changes in AWS, then thawed and
given its first INVOKE.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_lifecycle import FakeExtensionsApi
from tests.support.extension_process import ExtensionProcess
from tools.moto_server import MotoServer
from tools.net import free_port


def invoke_event() -> dict[str, Any]:
    return {
        "eventType": "INVOKE",
        "deadlineMs": int(time.time() * 1000) + 3000,
        "requestId": str(uuid.uuid4()),
        "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
        "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-0-0"},
    }


def upstream_calls(process: ExtensionProcess, token: str) -> int:
    metrics = json.loads(process.get("/metrics", token=token).body)
    return int(metrics["services"]["secretsmanager"]["upstreamCalls"])


class SnapSandbox:
    def __init__(self, process: ExtensionProcess, api: FakeExtensionsApi, token: str) -> None:
        self.process = process
        self.api = api
        self.token = token

    def read(self, secret_id: str) -> str:
        result = self.process.get(f"/secretsmanager/get?secretId={secret_id}", token=self.token)
        assert result.status == 200, result.body[:300]
        return str(json.loads(result.body)["SecretString"])

    def snapshot_and_restore(self) -> None:
        """Freeze the process as a snapshot would; thaw it and send the first event."""
        assert self.process.process is not None
        self.process.process.send_signal(signal.SIGSTOP)
        self.on_hold()
        self.process.process.send_signal(signal.SIGCONT)
        self.api.events.put(invoke_event())
        self.api.wait_for_next()  # back on event/next: the INVOKE was taken

    def on_hold(self) -> None:
        """What happens while the snapshot is stored (set by the test)."""


@pytest.fixture
def snap_start(moto_server: MotoServer, tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[ExtensionProcess, FakeExtensionsApi]] = []

    def start(**env: str) -> SnapSandbox:
        token = "container-" + uuid.uuid4().hex
        token_file = tmp_path / f"token-{len(started)}"
        token_file.write_text(token)
        port = free_port()
        api = FakeExtensionsApi(port).__enter__()
        process = ExtensionProcess(
            {
                **moto_server.env(),
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
                "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": f"file://{token_file}",
                **env,
            }
        )
        del process.env["AWS_SESSION_TOKEN"]  # SnapStart does not set it
        started.append((process, api))
        process.start(wait=False)
        api.wait_for_next()  # INIT is over: the snapshot would be taken now
        return SnapSandbox(process, api, token)

    yield start
    for process, api in started:
        process.stop()
        api.__exit__(None, None, None)


def test_nothing_read_at_init_is_kept_in_the_snapshot(
    snap_start: Any, moto_server: MotoServer
) -> None:
    secret_id = "snap-" + uuid.uuid4().hex[:8]
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=secret_id, SecretString="before-snapshot")
    sandbox = snap_start(
        SECRETCACHE_PREFETCH=f"sm:{secret_id}", SECRETCACHE_SNAPSTART_JITTER_MILLIS="0"
    )
    # INIT: the handler's reads go to AWS and are not stored; the prefetch is deferred.
    assert sandbox.read(secret_id) == "before-snapshot"
    assert sandbox.read(secret_id) == "before-snapshot"
    assert upstream_calls(sandbox.process, sandbox.token) == 2
    assert "prefetch.deferred" in sandbox.process.logs()

    sandbox.on_hold = lambda: sm.put_secret_value(SecretId=secret_id, SecretString="after-restore")
    sandbox.snapshot_and_restore()

    deadline = time.monotonic() + 10
    while "prefetch.done" not in sandbox.process.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "snapstart.restored" in sandbox.process.logs()
    calls = upstream_calls(sandbox.process, sandbox.token)
    assert calls == 3  # the prefetch, warmed after the restore
    assert sandbox.read(secret_id) == "after-restore"
    assert sandbox.read(secret_id) == "after-restore"
    assert upstream_calls(sandbox.process, sandbox.token) == calls  # cached from now on
    assert sandbox.token not in sandbox.process.logs()


def test_prefetch_into_the_snapshot_is_an_explicit_choice(
    snap_start: Any, moto_server: MotoServer
) -> None:
    secret_id = "snapkeep-" + uuid.uuid4().hex[:8]
    moto_server.client("secretsmanager").create_secret(Name=secret_id, SecretString="kept")
    sandbox = snap_start(
        SECRETCACHE_PREFETCH=f"sm:{secret_id}", SECRETCACHE_SNAPSTART_PREFETCH="true"
    )
    assert upstream_calls(sandbox.process, sandbox.token) == 1  # prefetched at INIT
    assert sandbox.read(secret_id) == "kept"
    assert upstream_calls(sandbox.process, sandbox.token) == 1  # served from the cache
    sandbox.snapshot_and_restore()
    assert sandbox.read(secret_id) == "kept"


def test_the_restore_prefetch_waits_a_random_delay_within_the_jitter(
    snap_start: Any, moto_server: MotoServer
) -> None:
    secret_id = "snapjit-" + uuid.uuid4().hex[:8]
    moto_server.client("secretsmanager").create_secret(Name=secret_id, SecretString="v")
    sandbox = snap_start(
        SECRETCACHE_PREFETCH=f"sm:{secret_id}", SECRETCACHE_SNAPSTART_JITTER_MILLIS="3000"
    )
    time.sleep(0.5)
    assert "prefetch.done" not in sandbox.process.logs()  # nothing warmed into the snapshot
    sandbox.snapshot_and_restore()
    restored = time.monotonic()
    deadline = restored + 10
    while "prefetch.done" not in sandbox.process.logs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "prefetch.done" in sandbox.process.logs()
    assert time.monotonic() - restored < 3.0 + 2.0  # within the jitter (plus load slack)
