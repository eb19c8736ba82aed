"""A SnapStart restore drops the credentials of assumed roles (`roleArn`), on both upstreams: the
backends against moto server over real HTTP, the restore being the extension's own
`after_restore()` (as `lifecycle` calls it). The whole restore on the emulator (frozen processes,
a moved clock) is in test_snapstart_emulator.py; this pins the role part of it."""

from __future__ import annotations

import uuid

import pytest
from secretcache.aws.credentials import Credentials
from secretcache.config import load_config
from secretcache.roles import RoleRegistry
from secretcache.upstream import make_backends

from tools.moto_server import MotoServer

from .test_roles import role, session_in


@pytest.mark.parametrize("upstream", ["lean", "sdk"])
async def test_role_credentials_assumed_before_the_snapshot_are_assumed_again_after_restore(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, upstream: str
) -> None:
    role_arn = role("restored-reader")
    secret_id = "restore-" + uuid.uuid4().hex[:8]
    session_in(moto_server, role_arn, "secretsmanager").create_secret(
        Name=secret_id, SecretString="in-account-b"
    )
    env = moto_server.env()
    for name, value in env.items():  # aiobotocore reads the process environment
        monkeypatch.setenv(name, value)
    config = {**env, "SECRETCACHE_UPSTREAM": upstream, "SECRETCACHE_TOKEN": uuid.uuid4().hex}
    backends = make_backends(load_config(config))
    assumed: list[str] = []
    assume_role = backends._assume_role

    async def counted(arn: str) -> Credentials:
        assumed.append(arn)
        return await assume_role(arn)

    backends.roles = RoleRegistry(10, counted)
    backends.start_loading()
    await backends.wait_loaded()
    try:
        for _ in range(2):
            got = await backends.get_secret_value(secret_id, None, None, role_arn=role_arn)
            assert got["SecretString"] == "in-account-b"
        assert assumed == [role_arn]  # kept between reads
        backends.after_restore()
        got = await backends.get_secret_value(secret_id, None, None, role_arn=role_arn)
        assert got["SecretString"] == "in-account-b"
        assert assumed == [role_arn, role_arn]  # assumed again, not the snapshot's credentials
    finally:
        await backends.close()
