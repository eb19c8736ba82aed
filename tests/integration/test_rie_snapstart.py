"""SnapStart around AWS's RIE: RIE has no snapshot, so one is simulated around it.

RIE gets SnapStart's environment (the container credentials endpoint with its token, no
AWS_SESSION_TOKEN nor key variables) and runs INIT at the first invoke, followed at once by that
invoke: a snapshot restored the instant it was taken. AWS_LAMBDA_INITIALIZATION_TYPE=snap-start
goes to the extension only: with it, awslambdaric asks the Runtime API for
/2018-06-01/runtime/restore/next (the runtime's restore phase), which RIE does not serve.
Then the extension process is stopped (SIGSTOP), the secret rotated in moto, its wall clock moved
two hours ahead (libfaketime, CLOCK_REALTIME only, preloaded into the extension alone through the
launcher's SECRETCACHE_EXEC_PREFIX) and resumed: the next invoke's read must see the restore by
the clock, as a request that reaches the extension before its first event after a real restore
does.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.container_credentials import ContainerCredentialsServer
from tests.support.snapstart import AFTER, BEFORE, STORED_SECONDS, needs_libfaketime
from tools.emulator.emulator import libfaketime
from tools.moto_server import MotoServer
from tools.rie import RieSandbox

pytestmark = needs_libfaketime


def extension_pid(rie: RieSandbox) -> int:
    """The extension's interpreter (the launcher execs it through the bundled glibc loader)."""
    found = [pid for pid, line in rie.processes().items() if "secretcache/python" in line]
    assert len(found) == 1, rie.processes()
    return found[0]


def test_on_rie_a_restore_is_seen_by_the_clock_and_the_rotated_value_served(
    rie_sandbox: Callable[..., RieSandbox], moto_server: MotoServer, tmp_path: Path
) -> None:
    lib = libfaketime()
    secret_id = "snap-rie-" + uuid.uuid4().hex[:8]
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=secret_id, SecretString=BEFORE)
    clock_file = tmp_path / "wall-clock-offset"
    clock_file.write_text("+0\n")
    prefix = tmp_path / "with-movable-clock"
    prefix.write_text(
        f'#!/bin/sh\nAWS_LAMBDA_INITIALIZATION_TYPE=snap-start LD_PRELOAD={lib} exec "$@"\n'
    )
    prefix.chmod(0o755)
    with ContainerCredentialsServer() as credentials:
        rie = rie_sandbox(
            "snapstart_handler",
            {
                **credentials.environment(),
                "AWS_SESSION_TOKEN": None,
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "SNAP_SECRET_ID": secret_id,
                "SECRETS_MANAGER_TTL": "86400",  # by its TTL alone the value would stay fresh
                "SECRETCACHE_EXEC_PREFIX": str(prefix),
                "FAKETIME_TIMESTAMP_FILE": str(clock_file),
                "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            },
        )
        first = rie.invoke({})
        assert first.ok, first
        assert first.payload["session_token_set"] is False
        assert (first.payload["init"], first.payload["value"]) == (BEFORE, BEFORE)
        snap = first.payload["health"]["snapStart"]
        assert snap["restores"] == 1 and snap["lastRestore"]["reason"] == "first-event"
        warm = rie.invoke({})  # cached now (the first read may have met INIT's hold)
        assert warm.ok and warm.payload["value"] == BEFORE
        read_before = credentials.authorized

        pid = extension_pid(rie)
        os.kill(pid, signal.SIGSTOP)  # the snapshot
        sm.put_secret_value(SecretId=secret_id, SecretString=AFTER)
        clock_file.write_text(f"+{STORED_SECONDS:.0f}\n")
        os.kill(pid, signal.SIGCONT)  # the restore, two hours later by the wall clock

        second = rie.invoke({})
        assert second.ok, second
        assert second.payload["value"] == AFTER
        snap = second.payload["health"]["snapStart"]
        assert snap["restores"] == 2 and snap["lastRestore"]["reason"] == "clock-jump"
        assert snap["lastRestore"]["clockJumpSeconds"] >= STORED_SECONDS - 60
        assert credentials.authorized > read_before and credentials.refused == 0
    logs = rie.logs.text()
    assert credentials.token not in logs and BEFORE not in logs and AFTER not in logs
