"""SECRETCACHE_ROTATION_AWARE in the built layer on the local Lambda emulator: a function reading a
rotating secret gets the new value at NextRotationDate, though its TTL is 300 s. AWS is moto
server behind the fault proxy, which moves moto's NextRotationDate (moto computes it only as
whole days from now: see tests/resilience/test_rotation_freshness.py for the moto gaps)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fault_proxy import FaultProxy
from tools.moto_server import MotoServer

from .conftest import rotate


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server.port).start()
    yield p
    p.stop()


@pytest.mark.parametrize("upstream", ["lean", "sdk"])
def test_the_layer_serves_the_new_value_at_next_rotation_date(
    lambda_sandbox, moto_server, rotating_secret: str, proxy: FaultProxy, upstream: str
):
    sm = moto_server.client("secretsmanager")
    sm.rotate_secret(
        SecretId=rotating_secret,
        RotationRules={"AutomaticallyAfterDays": 1},
        RotateImmediately=False,
    )
    due = time.time() + 5.0

    def next_rotation_soon(document: dict[str, Any]) -> dict[str, Any]:
        document["NextRotationDate"] = due
        return document

    proxy.set_rewrite("DescribeSecret", next_rotation_soon)
    emu = lambda_sandbox(
        "urllib_handler",
        env={
            "SECRET_ID": rotating_secret,
            "SECRETS_MANAGER_TTL": "300",
            "SECRETCACHE_ROTATION_AWARE": "true",
            "SECRETCACHE_UPSTREAM": upstream,
            "AWS_ENDPOINT_URL": proxy.url,
        },
    )
    emu.init()
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v1"}
    rotate(moto_server, rotating_secret, "v2")
    if time.time() < due - 0.5:
        assert emu.invoke({"action": "secret"}).payload == {"secret": "v1"}  # cached
    time.sleep(max(0.0, due + 0.3 - time.time()))
    assert emu.invoke({"action": "secret"}).payload == {"secret": "v2"}
    assert proxy.count("DescribeSecret", rotating_secret) >= 2
    assert proxy.count("GetSecretValue", rotating_secret) == 2
