"""SnapStart on the emulator: the real layer zip, real processes, moto server, a real credentials
endpoint, snapshot and restore simulated.

What SnapStart does that we reproduce: the environment (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start,
credentials from AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN, no
AWS_SESSION_TOKEN nor key variables); INIT ends in a snapshot (every process stopped with
SIGSTOP, the extension blocked in event/next); the restore comes later by the wall clock while the
monotonic clock did not move (libfaketime moves CLOCK_REALTIME of the extension process only);
the first event after INIT follows the restore. What we cannot reproduce: a restore into another
microVM (here the process and its TCP connections survive; the extension drops its pooled ones
anyway), and one snapshot restored into two sandboxes (two processes started from the same random
seed stand in for that).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.container_credentials import ContainerCredentialsServer
from tests.support.fault_proxy import FaultProxy
from tests.support.snapstart import AFTER, BEFORE, STORED_SECONDS, needs_libfaketime
from tools.emulator import LambdaEmulator
from tools.moto_server import MotoServer
from tools.net import http_request

pytestmark = needs_libfaketime


@pytest.fixture
def credentials() -> Iterator[ContainerCredentialsServer]:
    with ContainerCredentialsServer() as server:
        yield server


@pytest.fixture
def snap_secret(moto_server: MotoServer) -> str:
    secret_id = "snap-" + uuid.uuid4().hex[:8]
    moto_server.client("secretsmanager").create_secret(Name=secret_id, SecretString=BEFORE)
    return secret_id


@pytest.fixture
def snap_sandbox(
    lambda_sandbox: Callable[..., LambdaEmulator],
    credentials: ContainerCredentialsServer,
    snap_secret: str,
) -> Callable[..., LambdaEmulator]:
    """Factory: a SnapStart sandbox running snapstart_handler, INIT done, snapshot taken."""

    def make(**env: str) -> LambdaEmulator:
        emu = lambda_sandbox(
            "snapstart_handler",
            env={**credentials.environment(), "SNAP_SECRET_ID": snap_secret, **env},
            snapstart=True,
            movable_clock=True,
        )
        emu.init()
        emu.snapshot()
        return emu

    return make


def extension_get(emu: LambdaEmulator, path: str, token: str | None = None) -> Any:
    port = int(emu.environment["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"])
    headers = {} if token is None else {"X-Aws-Parameters-Secrets-Token": token}
    result = http_request(port, "GET", path, headers=headers)
    assert result.status == 200, result.body[:300]
    return json.loads(result.body)


def rotate(moto_server: MotoServer, secret_id: str) -> None:
    moto_server.client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString=AFTER)


def test_the_environment_is_snapstarts(
    snap_sandbox: Callable[..., LambdaEmulator], credentials: ContainerCredentialsServer
) -> None:
    emu = snap_sandbox()
    env = emu.environment
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "snap-start"
    for name in ("AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name not in env
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == credentials.token
    assert credentials.authorized >= 1 and credentials.refused == 0  # INIT's read used it


def test_a_value_changed_while_snapshotted_is_what_the_handler_gets_after_restore(
    snap_sandbox: Callable[..., LambdaEmulator],
    credentials: ContainerCredentialsServer,
    moto_server: MotoServer,
    snap_secret: str,
) -> None:
    emu = snap_sandbox(SECRETCACHE_PREFETCH=f"sm:{snap_secret}")
    read_at_init = credentials.authorized
    rotate(moto_server, snap_secret)  # while the snapshot is stored
    emu.restore(after_seconds=STORED_SECONDS)
    result = emu.invoke({})
    assert result.ok, result
    payload = result.payload
    assert (payload["init"], payload["value"]) == (BEFORE, AFTER)
    assert payload["session_token_set"] is False
    snap = payload["health"]["snapStart"]
    assert snap["enabled"] is True and snap["holding"] is False and snap["restores"] == 1
    assert snap["lastRestore"]["reason"] in ("clock-jump", "first-event")
    assert credentials.authorized > read_at_init  # re-read from the endpoint after the restore
    assert credentials.refused == 0
    logs = emu.logs.text("secretcache")
    assert "snapstart.restored" in logs
    assert credentials.token not in logs and AFTER not in logs and BEFORE not in logs


@pytest.mark.parametrize("upstream", ["lean", "sdk"])
def test_connections_pooled_before_the_snapshot_are_not_used_after_restore(
    snap_sandbox: Callable[..., LambdaEmulator],
    moto_server: MotoServer,
    snap_secret: str,
    upstream: str,
) -> None:
    network = FaultProxy(moto_server.port).start()
    try:
        emu = snap_sandbox(AWS_ENDPOINT_URL=network.url, SECRETCACHE_UPSTREAM=upstream)
        assert network.accepted == 1  # INIT's read: its keep-alive connection is in the snapshot
        rotate(moto_server, snap_secret)
        network.sever()  # after the restore, that connection leads nowhere
        emu.restore(after_seconds=STORED_SECONDS)
        result = emu.invoke({})
        assert result.ok, result
        assert result.payload["value"] == AFTER
        assert network.requests_into_severed == 0  # nothing was sent on a pre-snapshot connection
        assert network.accepted == 2
    finally:
        network.stop()


def test_a_request_before_the_first_event_sees_the_restore_by_the_clock(
    snap_sandbox: Callable[..., LambdaEmulator],
    credentials: ContainerCredentialsServer,
    moto_server: MotoServer,
    snap_secret: str,
) -> None:
    """Opt-in prefetch into the snapshot: its value must not be served as fresh after restore,
    even to a request that reaches the extension before the INVOKE does."""
    emu = snap_sandbox(
        SECRETCACHE_PREFETCH=f"sm:{snap_secret}",
        SECRETCACHE_SNAPSTART_PREFETCH="true",
        SECRETCACHE_SNAPSTART_JITTER_MILLIS="60000",  # the restore prefetch will not have run
        SECRETS_MANAGER_TTL="86400",  # by its TTL alone the snapshot's entry would still be fresh
    )
    token = credentials.token
    emu.thaw()  # a look before the snapshot's restore: the prefetched value is held and fresh
    before = extension_get(emu, "/metrics", token)
    assert before["snapStart"]["restores"] == 0 and before["cache"]["entries"] == 1
    emu.freeze()
    rotate(moto_server, snap_secret)
    emu.restore(after_seconds=STORED_SECONDS)
    # No event yet: the extension's event thread has not seen anything.
    value = extension_get(emu, f"/secretsmanager/get?secretId={snap_secret}", token)
    assert value["SecretString"] == AFTER
    health = extension_get(emu, "/health")
    last = health["snapStart"]["lastRestore"]
    assert health["snapStart"]["restores"] == 1 and last["reason"] == "clock-jump"
    assert last["clockJumpSeconds"] >= STORED_SECONDS - 60
    result = emu.invoke({})  # the first event: the same restore, not a second one
    assert result.ok, result
    assert result.payload["value"] == AFTER
    assert result.payload["health"]["snapStart"]["restores"] == 1


def test_two_sandboxes_restored_from_one_state_pick_different_prefetch_delays(
    snap_sandbox: Callable[..., LambdaEmulator], snap_secret: str
) -> None:
    same_state = {
        "SECRETCACHE_RANDOM_SEED": "one-snapshot",
        "SECRETCACHE_PREFETCH": f"sm:{snap_secret}",
        "SECRETCACHE_SNAPSTART_JITTER_MILLIS": "60000",
    }
    delays = []
    for emu in (snap_sandbox(**same_state), snap_sandbox(**same_state)):
        emu.restore(after_seconds=STORED_SECONDS)
        result = emu.invoke({})
        assert result.ok, result
        delay = result.payload["health"]["snapStart"]["lastRestore"]["prefetchDelayMs"]
        assert 0 <= delay <= 60000
        delays.append(delay)
    assert delays[0] != delays[1]
