"""SnapStart around AWS's RIE: RIE has no snapshot, so one is simulated around it.

RIE gets SnapStart's environment (the container credentials endpoint with its token, no
AWS_SESSION_TOKEN nor key variables) and runs INIT at the first invoke, followed at once by that
invoke: a snapshot restored the instant it was taken, so the restore is the first event.
AWS_LAMBDA_INITIALIZATION_TYPE=snap-start goes to the extension only: with it, awslambdaric asks
the Runtime API for /2018-06-01/runtime/restore/next (the runtime's restore phase), which RIE
does not serve. Then the restored sandbox is frozen (the extension stopped with SIGSTOP) while
the secret is rotated and its wall clock moves two hours ahead (libfaketime, CLOCK_REALTIME only,
preloaded into the extension alone through the launcher's SECRETCACHE_EXEC_PREFIX), and thawed:
that jump is no second restore (a process is restored once), and the entry has aged by it.
The restore seen by the clock before the first event is tested on our emulator, which can hold
the first event back (test_snapstart_emulator.py).
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


def test_on_rie_the_restore_is_the_first_event_and_a_later_thaw_is_no_second_one(
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
                "SECRETS_MANAGER_TTL": "3600",  # shorter than the time frozen
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
        assert snap["holding"] is False and credentials.refused == 0
        warm = rie.invoke({})  # cached now (the first read may have met INIT's hold)
        assert warm.ok and warm.payload["value"] == BEFORE

        pid = extension_pid(rie)
        os.kill(pid, signal.SIGSTOP)  # frozen between invokes
        sm.put_secret_value(SecretId=secret_id, SecretString=AFTER)
        clock_file.write_text(f"+{STORED_SECONDS:.0f}\n")
        os.kill(pid, signal.SIGCONT)  # thawed, two hours later by the wall clock

        later = rie.invoke({})
        assert later.ok, later
        assert later.payload["value"] == AFTER  # aged past its TTL by the clock's step
        snap = later.payload["health"]["snapStart"]
        assert snap["restores"] == 1 and snap["lastRestore"]["reason"] == "first-event"
    logs = rie.logs.text()
    assert credentials.token not in logs and BEFORE not in logs and AFTER not in logs
