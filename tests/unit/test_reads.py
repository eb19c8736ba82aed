"""The read core against fake backends, through the aiohttp app: batch single-flight, the bound on
what one by-path read may hold, and the bytes every door stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from secretcache.cache import CacheKey, TtlCache
from secretcache.config import load_config
from secretcache.reads import Reads, cache_policies
from secretcache.server import make_app
from secretcache.status import Status

from tools.net import free_port

TOKEN = "unit-test-token-0123456789abcdef"
AUTH = {"X-Aws-Parameters-Secrets-Token": TOKEN}


def parameter(name: str) -> dict[str, Any]:
    return {"Name": name, "Type": "String", "Value": f"value of {name} \u00e9", "Version": 1}


class SlowBackends:
    """Answers batch and path reads after a short pause, so concurrent requests overlap."""

    def __init__(self, path_size: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.loaded = True
        self.call_observer: Any = None
        self.path_size = path_size

    async def get_parameters(self, names: list[str], with_decryption: bool) -> dict[str, Any]:
        self.calls.append(("get_parameters", tuple(names)))
        await asyncio.sleep(0.05)
        return {"Parameters": [parameter(n) for n in names], "InvalidParameters": []}

    async def batch_get_secret_value(self, secret_ids: list[str]) -> dict[str, Any]:
        self.calls.append(("batch_get_secret_value", tuple(secret_ids)))
        await asyncio.sleep(0.05)
        values = [{"Name": s, "ARN": f"arn:{s}-AbCdEf", "SecretString": "v"} for s in secret_ids]
        return {"SecretValues": values, "Errors": []}

    async def get_parameters_by_path(
        self, path: str, recursive: bool, with_decryption: bool, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append(("get_parameters_by_path", limit))
        size = self.path_size if limit is None else min(self.path_size, limit + 1)
        return [parameter(f"{path}/p{i}") for i in range(size)]

    async def get_parameter(self, name: str, with_decryption: bool) -> dict[str, Any]:
        self.calls.append(("get_parameter", name))
        return {"Parameter": parameter(name)}


class Harness:
    def __init__(self, client: TestClient, backends: SlowBackends, cache: TtlCache) -> None:
        self.client = client
        self.backends = backends
        self.cache = cache

    async def get(self, path: str) -> Any:
        return await self.client.get(path, headers=AUTH)


async def harness(backends: SlowBackends, **env: str) -> tuple[Harness, TestClient]:
    port = free_port()
    config = load_config(
        {"AWS_SESSION_TOKEN": TOKEN, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port), **env}
    )
    cache = TtlCache(
        max_entries=config.cache_size, max_bytes=1 << 24, policies=cache_policies(config)
    )
    status = Status()
    status.ready = True
    app = make_app(Reads(config, cache, backends), status)  # type: ignore[arg-type]
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    return Harness(client, backends, cache), client


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    made, client = await harness(SlowBackends())
    try:
        yield made
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/systemsmanager/parameters/getbatch?name=/a&name=/b", "get_parameters"),
        ("/secretsmanager/batchget?secretId=a&secretId=b", "batch_get_secret_value"),
    ],
)
async def test_concurrent_identical_cold_batches_make_one_upstream_call(
    h: Harness, path: str, operation: str
) -> None:
    responses = await asyncio.gather(*(h.get(path) for _ in range(20)))
    assert [r.status for r in responses] == [200] * 20
    bodies = {await r.read() for r in responses}
    assert len(bodies) == 1
    assert [c[0] for c in h.backends.calls] == [operation]


async def test_a_batch_fills_single_entries_with_the_same_bytes_a_single_read_stores(
    h: Harness,
) -> None:
    await h.get("/systemsmanager/parameters/getbatch?name=/a")
    from_batch = h.cache.fresh(CacheKey("ssm", "/a", "", False))
    h.backends.calls.clear()
    single = await (await h.get("/systemsmanager/parameters/get?name=/b")).read()
    assert from_batch is not None
    # one serialiser: non-ASCII is written the same way whichever door filled the entry
    assert ("\u00e9".encode() in from_batch) == ("\u00e9".encode() in single)
    assert json.loads(from_batch)["Parameter"]["Value"] == "value of /a \u00e9"


async def test_a_path_over_the_bound_is_refused_and_evicts_nothing() -> None:
    made, client = await harness(
        SlowBackends(path_size=2000),
        PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE="100",
        SECRETCACHE_PATH_MAX_PARAMETERS="50",
    )
    try:
        for i in range(40):
            assert (await made.get(f"/systemsmanager/parameters/get?name=/keep/{i}")).status == 200
        response = await made.get("/systemsmanager/parameters/getbypath?path=/big")
        assert response.status == 400
        body = await response.json()
        assert body["errorType"] == "PathTooLarge"
        assert "SECRETCACHE_PATH_MAX_PARAMETERS" in body["message"]
        # the backend was told to stop paging past the bound
        assert ("get_parameters_by_path", 50) in made.backends.calls
        assert all(made.cache.fresh(CacheKey("ssm", f"/keep/{i}", "", False)) for i in range(40))
    finally:
        await client.close()


async def test_a_path_within_the_bound_is_served_and_warms_single_reads() -> None:
    made, client = await harness(SlowBackends(path_size=30), SECRETCACHE_PATH_MAX_PARAMETERS="50")
    try:
        response = await made.get("/systemsmanager/parameters/getbypath?path=/small")
        assert response.status == 200
        assert len((await response.json())["Parameters"]) == 30
        made.backends.calls.clear()
        assert (await made.get("/systemsmanager/parameters/get?name=/small/p7")).status == 200
        assert made.backends.calls == []
    finally:
        await client.close()
