"""The asyncio client against the same scripted extension as the sync tests."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from secretcache_client import aio
from secretcache_client.aio import (
    AsyncClient,
    ExtensionUnavailable,
    SecretNotFound,
    Throttled,
    TransformError,
    Unauthorized,
    UpstreamError,
)

from tests.unit.test_client_fakes import (
    SECRET,
    TOKEN,
    FakeExtension,
    Reply,
    error_reply,
    free_port,
    parameter_reply,
    secret_reply,
)

NOT_READY = Reply(status=400, body=b"not ready to serve traffic, please wait")


@pytest.fixture
def fake() -> Iterator[FakeExtension]:
    with FakeExtension() as server:
        yield server


@pytest.fixture
async def client(fake: FakeExtension) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(port=fake.port, token=TOKEN, timeout=2.0) as c:
        yield c


async def test_get_secret_sends_token_and_returns_value(
    fake: FakeExtension, client: AsyncClient
) -> None:
    assert await client.get_secret("app/db") == SECRET
    (request,) = fake.requests
    assert (request.method, request.path) == ("GET", "/secretsmanager/get")
    assert request.query == {"secretId": "app/db"}
    assert request.headers["x-aws-parameters-secrets-token"] == TOKEN
    assert request.headers["host"] == f"127.0.0.1:{fake.port}"


async def test_transforms_match_the_sync_client(fake: FakeExtension, client: AsyncClient) -> None:
    fake.always(secret_reply(string='{"a": 1}'))
    assert await client.get_secret("s", transform="json") == {"a": 1}
    fake.always(parameter_reply("x,y", type_="StringList"))
    assert await client.get_parameter("/p", transform="list") == ["x", "y"]
    fake.always(parameter_reply(base64.b64encode(b"\x07").decode(), name="/k.binary"))
    assert await client.get_parameter("/k.binary", transform="auto") == b"\x07"
    fake.always(secret_reply(string=SECRET))
    with pytest.raises(TransformError) as caught:
        await client.get_secret("s", transform="json")
    assert SECRET not in str(caught.value) + repr(caught.value)


async def test_get_parameter_query(fake: FakeExtension, client: AsyncClient) -> None:
    fake.always(parameter_reply("v"))
    assert await client.get_parameter("/app/p", label="blue", refresh=True) == "v"
    assert fake.requests[0].query == {
        "name": "/app/p",
        "label": "blue",
        "withDecryption": "true",
        "refreshNow": "true",
    }


async def test_kms_decrypt_posts_json(fake: FakeExtension, client: AsyncClient) -> None:
    fake.always(Reply(body={"KeyId": "k", "Plaintext": base64.b64encode(b"pt").decode()}))
    assert await client.kms_decrypt(b"ct", encryption_context={"a": "b"}) == b"pt"
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/kms/decrypt")
    assert json.loads(request.body) == {
        "CiphertextBlob": base64.b64encode(b"ct").decode(),
        "EncryptionContext": {"a": "b"},
    }


@pytest.mark.parametrize(
    ("reply", "cls"),
    [
        (error_reply(404, "ParameterNotFound", "no"), SecretNotFound),
        (error_reply(429, "ThrottlingException", "slow"), Throttled),
        (error_reply(401, "Unauthorized", f"bad {TOKEN}"), Unauthorized),
        (Reply(status=400, body=b"AccessDeniedException: not allowed"), UpstreamError),
    ],
)
async def test_errors_raise_typed_exceptions(
    fake: FakeExtension, client: AsyncClient, reply: Reply, cls: type[Exception]
) -> None:
    fake.always(reply)
    with pytest.raises(cls) as caught:
        await client.get_secret("s")
    assert TOKEN not in str(caught.value) + repr(caught.value)


async def test_chunked_answers_are_read(fake: FakeExtension, client: AsyncClient) -> None:
    reply = secret_reply(string='{"long": "' + "z" * 300 + '"}')
    reply.chunked = True
    fake.always(reply)
    assert await client.get_secret("s", transform="json") == {"long": "z" * 300}
    assert await client.get_secret("s", transform="json") == {"long": "z" * 300}
    assert fake.connections == 1


async def test_calls_reuse_one_connection(fake: FakeExtension, client: AsyncClient) -> None:
    for _ in range(20):
        await client.get_secret("s")
    assert fake.connections == 1


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


async def test_not_ready_is_retried(fake: FakeExtension, client: AsyncClient) -> None:
    fake.sequence(NOT_READY, NOT_READY, secret_reply())
    assert await client.get_secret("s") == SECRET
    assert len(fake.requests) == 3


async def test_not_ready_past_timeout_is_unavailable(fake: FakeExtension) -> None:
    fake.always(NOT_READY)
    started = time.monotonic()
    with pytest.raises(ExtensionUnavailable, match="not ready"):
        await AsyncClient(port=fake.port, token=TOKEN, timeout=0.4).get_secret("s")
    assert 0.2 < time.monotonic() - started < 3.0


async def test_refused_until_listening_then_succeeds() -> None:
    port = free_port()
    servers: list[FakeExtension] = []

    async def start_late() -> None:
        await asyncio.sleep(0.3)
        servers.append(FakeExtension(port).__enter__())

    starter = asyncio.create_task(start_late())
    try:
        client = AsyncClient(port=port, token=TOKEN, timeout=10.0)
        assert await client.get_secret("s") == SECRET
        await client.aclose()
    finally:
        await starter
        for server in servers:
            server.__exit__(None, None, None)


async def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(ExtensionUnavailable, match="refused"):
        await AsyncClient(port=free_port(), token=TOKEN, timeout=0.3).get_parameter("/p")


async def test_slow_answer_times_out_and_the_client_recovers(fake: FakeExtension) -> None:
    fake.sequence(Reply(delay=2.0), secret_reply())
    client = AsyncClient(port=fake.port, token=TOKEN, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ExtensionUnavailable) as caught:
        await client.get_secret("s")
    assert caught.value.error_type == "Timeout"
    assert time.monotonic() - started < 1.5
    assert await client.get_secret("s") == SECRET
    await client.aclose()


async def test_stale_connection_is_replaced_once(fake: FakeExtension, client: AsyncClient) -> None:
    fake.sequence(Reply(body=secret_reply().body, close_after=True), secret_reply())
    await client.get_secret("s")
    await asyncio.sleep(0.05)
    assert await client.get_secret("s") == SECRET
    assert fake.connections == 2


async def test_reset_before_any_answer_is_retried(fake: FakeExtension, client: AsyncClient) -> None:
    fake.sequence(Reply(drop=True), secret_reply())
    assert await client.get_secret("s") == SECRET
    assert len(fake.requests) == 2


async def test_stale_connection_gets_exactly_one_retry(fake: FakeExtension) -> None:
    client = AsyncClient(port=fake.port, token=TOKEN, retries=0)
    fake.sequence(secret_reply(), Reply(drop=True))
    await client.get_secret("s")
    with pytest.raises(ExtensionUnavailable):
        await client.get_secret("s")
    assert len(fake.requests) == 3


def test_works_across_event_loops(fake: FakeExtension) -> None:
    client = AsyncClient(port=fake.port, token=TOKEN)
    for _ in range(3):  # a handler that calls asyncio.run() per invoke
        assert asyncio.run(client.get_secret("s")) == SECRET
    assert len(fake.requests) == 3


async def test_module_coroutines_use_the_default_client(
    fake: FakeExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setattr(aio.default_client, "_port", fake.port)
    assert await aio.get_secret("s") == SECRET
    assert fake.requests[0].headers["x-aws-parameters-secrets-token"] == TOKEN
    await aio.default_client.aclose()
