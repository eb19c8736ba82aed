"""What only the asyncio client can show: concurrency on one loop, many loops, cancellation.

Every other behaviour runs on both clients in ``test_client.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from secretcache_client import aio
from secretcache_client.aio import AsyncClient

from tests.unit.test_client_fakes import SECRET, TOKEN, FakeExtension, Reply, secret_reply


@pytest.fixture
def fake() -> Iterator[FakeExtension]:
    with FakeExtension() as server:
        yield server


@pytest.fixture
async def client(fake: FakeExtension) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(port=fake.port, token=TOKEN, timeout=2.0) as c:
        yield c


async def test_concurrent_calls_each_get_their_own_answer(
    fake: FakeExtension, client: AsyncClient
) -> None:
    fake.responder = lambda request: secret_reply(string="v-" + request.query["secretId"])
    ids = [f"s{i}" for i in range(30)]
    values = await asyncio.gather(*(client.get_secret(i) for i in ids))
    assert values == ["v-" + i for i in ids]
    assert fake.connections <= 30
    before = fake.connections
    await client.get_secret("again")
    assert fake.connections == before  # served from the idle pool


def test_works_across_event_loops(fake: FakeExtension) -> None:
    client = AsyncClient(port=fake.port, token=TOKEN)
    for _ in range(3):  # a handler that calls asyncio.run() per invoke
        assert asyncio.run(client.get_secret("s")) == SECRET
    assert len(fake.requests) == 3


async def test_a_cancelled_call_leaves_no_connection_out_of_step(
    fake: FakeExtension, client: AsyncClient
) -> None:
    fake.sequence(Reply(delay=0.5, body=secret_reply(string="late").body), secret_reply())
    call = asyncio.ensure_future(client.get_secret("s"))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await client.get_secret("s") == SECRET  # not the cancelled call's late answer
    assert fake.connections == 2


async def test_module_coroutines_use_the_default_client(
    fake: FakeExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setattr(aio.default_client, "_port", fake.port)
    assert await aio.get_secret("s") == SECRET
    fake.always(Reply(body={"Parameters": [{"Name": "/app/a", "Value": "1"}]}))
    assert await aio.get_parameters_by_path("/app") == {"/app/a": "1"}
    assert fake.requests[0].headers["x-aws-parameters-secrets-token"] == TOKEN
    assert fake.requests[1].query == {"path": "/app", "withDecryption": "true"}
    await aio.default_client.aclose()
