"""Both clients against a scripted extension on a real loopback socket.

Every behaviour test runs on the blocking ``Client`` and on ``AsyncClient`` (driven through
the same blocking calls by :class:`BlockingAsyncClient`), so the transports cannot drift
apart in what they do. Tests named for threads, fork or the module functions are
``Client``'s alone; ``test_client_aio.py`` has what only asyncio can show.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import secretcache_client
from secretcache_client import (
    AccessDenied,
    BadRequest,
    Client,
    ExtensionUnavailable,
    SecretcacheError,
    SecretNotFound,
    Throttled,
    TransformError,
    Unauthorized,
    UpstreamError,
)
from secretcache_client.aio import AsyncClient

from tests.unit.test_client_fakes import (
    SECRET,
    TOKEN,
    FakeExtension,
    Reply,
    Request,
    error_reply,
    free_port,
    parameter_reply,
    secret_reply,
)

HANDLER_CLIENT = Path(__file__).resolve().parents[2] / "handler_client"


@pytest.fixture
def fake() -> Iterator[FakeExtension]:
    with FakeExtension() as server:
        yield server


class BlockingAsyncClient:
    """An AsyncClient behind Client's blocking calls, on an event loop of its own."""

    def __init__(self, **settings: Any) -> None:
        self._client = AsyncClient(**settings)
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not inspect.iscoroutinefunction(method):
            return method
        return lambda *args, **kwargs: self._loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()


MakeClient = Callable[..., Client]


@pytest.fixture(params=["Client", "AsyncClient"])
def make_client(request: pytest.FixtureRequest) -> Iterator[MakeClient]:
    """Builds the client under test from Client's settings; closes what it built."""
    made: list[Client] = []

    def make(**settings: Any) -> Client:
        if request.param == "Client":
            client = Client(**settings)
        else:
            client = cast(Client, BlockingAsyncClient(**settings))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(fake: FakeExtension, make_client: MakeClient) -> Client:
    return make_client(port=fake.port, token=TOKEN, timeout=2.0)


def leak_free(exc: BaseException, *values: str) -> bool:
    """True if neither the message, the repr nor the printed traceback holds any value."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    return not any(value in text for value in values for text in texts)


# -- reads and their wire form ----------------------------------------------------------


def test_get_secret_returns_secret_string_and_sends_token(
    fake: FakeExtension, client: Client
) -> None:
    assert client.get_secret("db") == SECRET
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.path == "/secretsmanager/get"
    assert request.query == {"secretId": "db"}
    assert request.headers["x-aws-parameters-secrets-token"] == TOKEN
    assert request.headers["host"] == f"127.0.0.1:{fake.port}"


def test_get_secret_binary_is_decoded_to_bytes(fake: FakeExtension, client: Client) -> None:
    raw = bytes(range(256))
    fake.always(secret_reply(string=None, binary=base64.b64encode(raw).decode()))
    assert client.get_secret("blob") == raw


def test_get_secret_value_returns_the_whole_answer(fake: FakeExtension, client: Client) -> None:
    document = client.get_secret_value("db")
    assert document["SecretString"] == SECRET
    assert document["VersionStages"] == ["AWSCURRENT"]
    assert document["ResultMetadata"] == {}


def test_secret_selectors_and_refresh_are_percent_encoded(
    fake: FakeExtension, client: Client
) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db+x=1&y"
    client.get_secret(arn, version_id="v 1", version_stage="AWS/PENDING", refresh=True)
    (request,) = fake.requests
    assert request.query == {
        "secretId": arn,
        "versionId": "v 1",
        "versionStage": "AWS/PENDING",
        "refreshNow": "true",
    }


def test_get_parameter_decrypts_by_default_and_passes_selectors(
    fake: FakeExtension, client: Client
) -> None:
    fake.always(parameter_reply("v"))
    assert client.get_parameter("/app/p") == "v"
    client.get_parameter("/app/p", decrypt=False, version=3, refresh=True)
    client.get_parameter("/app/p", label="prod")
    first, second, third = fake.requests
    assert first.path == "/systemsmanager/parameters/get"
    assert first.query == {"name": "/app/p", "withDecryption": "true"}
    assert second.query == {
        "name": "/app/p",
        "version": "3",
        "withDecryption": "false",
        "refreshNow": "true",
    }
    assert third.query == {"name": "/app/p", "label": "prod", "withDecryption": "true"}


def test_version_and_label_together_are_rejected_before_any_request(
    fake: FakeExtension, client: Client
) -> None:
    with pytest.raises(ValueError, match="version or label"):
        client.get_parameter("/app/p", version=1, label="prod")
    with pytest.raises(ValueError):
        client.get_secret("")
    with pytest.raises(ValueError, match="transform"):
        client.get_secret("db", transform="list")  # type: ignore[call-overload]
    assert fake.requests == []


def test_kms_decrypt_posts_base64_and_returns_plaintext_bytes(
    fake: FakeExtension, client: Client
) -> None:
    fake.always(
        Reply(
            body={
                "KeyId": "arn:aws:kms:us-east-1:123456789012:key/k",
                "Plaintext": base64.b64encode(b"\x00plain\xff").decode(),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "ResultMetadata": {},
            }
        )
    )
    plaintext = client.kms_decrypt(b"\x01\x02cipher", encryption_context={"app": "x"}, key_id="k")
    assert plaintext == b"\x00plain\xff"
    assert client.kms_decrypt(base64.b64encode(b"c").decode()) == b"\x00plain\xff"
    first, second = fake.requests
    assert (first.method, first.path) == ("POST", "/kms/decrypt")
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.body) == {
        "CiphertextBlob": base64.b64encode(b"\x01\x02cipher").decode(),
        "EncryptionContext": {"app": "x"},
        "KeyId": "k",
    }
    assert json.loads(second.body) == {"CiphertextBlob": base64.b64encode(b"c").decode()}


def test_get_parameters_by_path_sends_its_options_and_returns_names_and_values(
    fake: FakeExtension, client: Client
) -> None:
    fake.always(
        Reply(
            body={
                "Parameters": [{"Name": "/app/a", "Value": "1"}, {"Name": "/app/b/c", "Value": "2"}]
            }
        )
    )
    assert client.get_parameters_by_path("/app", recursive=True, refresh=True) == {
        "/app/a": "1",
        "/app/b/c": "2",
    }
    (request,) = fake.requests
    assert request.path == "/systemsmanager/parameters/getbypath"
    assert request.query == {
        "path": "/app",
        "withDecryption": "true",
        "recursive": "true",
        "refreshNow": "true",
    }
    with pytest.raises(ValueError, match="start with '/'"):
        client.get_parameters_by_path("app")
    fake.always(Reply(body={"Parameters": [{"Name": "/app/a"}]}))
    with pytest.raises(UpstreamError, match="no Name or Value"):
        client.get_parameters_by_path("/app")


# -- transforms ---------------------------------------------------------------------------


def test_json_transform_parses_secret(fake: FakeExtension, client: Client) -> None:
    fake.always(secret_reply(string='{"user": "u", "port": 5432}'))
    assert client.get_secret("db", transform="json") == {"user": "u", "port": 5432}


def test_binary_transform_decodes_base64_secret_string(fake: FakeExtension, client: Client) -> None:
    fake.always(secret_reply(string=base64.b64encode(b"\x00\x01").decode()))
    assert client.get_secret("db", transform="binary") == b"\x00\x01"


def test_binary_transform_leaves_secret_binary_as_is(fake: FakeExtension, client: Client) -> None:
    fake.always(secret_reply(string=None, binary=base64.b64encode(b"raw").decode()))
    assert client.get_secret("db", transform="binary") == b"raw"


def test_json_transform_accepts_secret_binary(fake: FakeExtension, client: Client) -> None:
    fake.always(secret_reply(string=None, binary=base64.b64encode(b'{"a": 1}').decode()))
    assert client.get_secret("db", transform="json") == {"a": 1}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("/app/config.json", '{"a": [1]}', {"a": [1]}),
        ("/app/key.binary", base64.b64encode(b"\xfe").decode(), b"\xfe"),
        ("/app/plain", '{"a": 1}', '{"a": 1}'),
        ("/app/json", "not-json", "not-json"),
    ],
)
def test_auto_transform_picks_by_suffix(
    fake: FakeExtension, client: Client, name: str, value: str, expected: object
) -> None:
    fake.always(parameter_reply(value, name=name))
    assert client.get_parameter(name, transform="auto") == expected
    fake.always(secret_reply(string=value, name=name))
    assert client.get_secret(name, transform="auto") == expected


def test_list_transform_splits_string_list(fake: FakeExtension, client: Client) -> None:
    fake.always(parameter_reply("a,b,,c", type_="StringList"))
    assert client.get_parameter("/app/p", transform="list") == ["a", "b", "", "c"]
    assert client.get_parameter("/app/p") == "a,b,,c"


def test_failed_transforms_name_the_fault_but_not_the_value(
    fake: FakeExtension, client: Client
) -> None:
    fake.always(secret_reply(string=SECRET))
    with pytest.raises(TransformError) as json_error:
        client.get_secret("db", transform="json")
    assert "not valid JSON" in str(json_error.value)
    assert json_error.value.__context__ is None
    assert leak_free(json_error.value, SECRET)
    fake.always(secret_reply(string=SECRET + "!"))
    with pytest.raises(TransformError) as binary_error:
        client.get_secret("db", transform="binary")
    assert leak_free(binary_error.value, SECRET)
    assert isinstance(binary_error.value, ValueError)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "cls", "error_type"),
    [
        (error_reply(400, "ValidationException", "bad id"), BadRequest, "ValidationException"),
        (error_reply(401, "Unauthorized", "bad token"), Unauthorized, "Unauthorized"),
        (error_reply(403, "AccessDeniedException", "no"), AccessDenied, "AccessDeniedException"),
        (
            error_reply(404, "ResourceNotFoundException", "gone"),
            SecretNotFound,
            "ResourceNotFoundException",
        ),
        (error_reply(404, "ParameterNotFound", "gone"), SecretNotFound, "ParameterNotFound"),
        (
            error_reply(404, "ParameterVersionNotFound", "gone"),
            SecretNotFound,
            "ParameterVersionNotFound",
        ),
        (error_reply(405, "MethodNotAllowed", "GET only"), BadRequest, "MethodNotAllowed"),
        (error_reply(429, "ThrottlingException", "slow"), Throttled, "ThrottlingException"),
        (error_reply(502, "InternalServiceError", "boom"), UpstreamError, "InternalServiceError"),
        (error_reply(504, "UpstreamTimeout", "slow"), UpstreamError, "UpstreamTimeout"),
        (Reply(status=500, body=b"oops"), UpstreamError, "UpstreamError"),
        (Reply(status=404, body=b""), SecretNotFound, "NotFound"),
    ],
)
def test_error_answers_raise_typed_exceptions(
    fake: FakeExtension,
    client: Client,
    reply: Reply,
    cls: type[SecretcacheError],
    error_type: str,
) -> None:
    fake.always(reply)
    with pytest.raises(cls) as caught:
        client.get_secret("db")
    assert isinstance(caught.value, SecretcacheError)
    assert caught.value.error_type == error_type
    assert caught.value.status == reply.status
    assert str(reply.status) in str(caught.value)
    assert len(fake.requests) == 1  # errors are not retried


def test_aws_extension_plain_text_400_is_upstream_error_with_its_text(
    fake: FakeExtension, client: Client
) -> None:
    text = b"ResourceNotFoundException: Secrets Manager can't find the specified secret."
    fake.always(Reply(status=400, body=text, headers={"Content-Type": "text/plain"}))
    with pytest.raises(UpstreamError) as caught:
        client.get_secret("db")
    assert caught.value.status == 400
    assert "can't find the specified secret" in caught.value.message


def test_error_text_never_echoes_the_token(fake: FakeExtension, client: Client) -> None:
    fake.always(Reply(status=401, body=f"bad token {TOKEN}\r\n\x1b[31m".encode()))
    with pytest.raises(Unauthorized) as caught:
        client.get_secret("db")
    assert leak_free(caught.value, TOKEN)
    assert "\x1b" not in str(caught.value)
    assert "<token>" in str(caught.value)


def test_long_error_text_is_truncated(fake: FakeExtension, client: Client) -> None:
    fake.always(error_reply(400, "ValidationException", "x" * 10_000))
    with pytest.raises(BadRequest) as caught:
        client.get_secret("db")
    assert len(str(caught.value)) < 400


def test_non_json_success_body_is_upstream_error_without_the_body(
    fake: FakeExtension, client: Client
) -> None:
    fake.always(Reply(status=200, body=SECRET.encode()))
    with pytest.raises(UpstreamError) as caught:
        client.get_secret("db")
    assert leak_free(caught.value, SECRET)


def test_unusable_token_is_refused_without_echoing_it(make_client: MakeClient) -> None:
    bad = TOKEN + "\r\nX-Injected: 1"
    with pytest.raises(Unauthorized) as caught:
        make_client(port=1, token=bad)
    assert leak_free(caught.value, TOKEN)


def test_missing_token_sends_no_header_and_explains_401(
    fake: FakeExtension, monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("SECRETCACHE_TOKEN", raising=False)
    fake.always(error_reply(401, "Unauthorized", "missing token"))
    with pytest.raises(Unauthorized) as caught:
        make_client(port=fake.port).get_secret("db")
    assert "x-aws-parameters-secrets-token" not in fake.requests[0].headers
    assert "AWS_SESSION_TOKEN" in str(caught.value)


def test_token_and_port_come_from_the_environment(
    fake: FakeExtension, monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(fake.port))
    monkeypatch.setenv("SECRETCACHE_TOKEN", "from-secretcache-env")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    client = make_client()
    client.get_secret("db")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "from-session-env")
    client.get_secret("db")
    tokens = [r.headers["x-aws-parameters-secrets-token"] for r in fake.requests]
    assert tokens == ["from-secretcache-env", "from-session-env"]


def test_invalid_port_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "27x3")
    with pytest.raises(ValueError, match="PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"):
        make_client(token=TOKEN).get_secret("db")


def test_exceptions_pickle_and_keep_their_fields() -> None:
    original = SecretNotFound("gone", error_type="ParameterNotFound", status=404)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is SecretNotFound
    assert (copy.message, copy.error_type, copy.status) == ("gone", "ParameterNotFound", 404)


def test_client_repr_hides_the_token(make_client: MakeClient) -> None:
    assert TOKEN not in repr(make_client(port=2773, token=TOKEN))


# -- start-up retries and timeouts --------------------------------------------------------

NOT_READY = Reply(status=400, body=b"not ready to serve traffic, please wait")


def test_not_ready_answers_are_retried_until_ready(fake: FakeExtension, client: Client) -> None:
    fake.sequence(NOT_READY, NOT_READY, NOT_READY, secret_reply())
    assert client.get_secret("db") == SECRET
    assert len(fake.requests) == 4


def test_not_ready_past_the_timeout_is_extension_unavailable(
    fake: FakeExtension, make_client: MakeClient
) -> None:
    fake.always(NOT_READY)
    started = time.monotonic()
    client = make_client(port=fake.port, token=TOKEN, timeout=0.5)
    with pytest.raises(ExtensionUnavailable) as caught:
        client.get_secret("db")
    elapsed = time.monotonic() - started
    assert 0.3 < elapsed < 3.0
    assert "not ready" in str(caught.value)
    assert len(fake.requests) > 2


def test_retries_caps_the_start_up_attempts(fake: FakeExtension, make_client: MakeClient) -> None:
    fake.always(NOT_READY)
    client = make_client(port=fake.port, token=TOKEN, timeout=5.0, retries=2)
    with pytest.raises(ExtensionUnavailable):
        client.get_secret("db")
    assert len(fake.requests) == 3


def test_refused_connections_are_retried_until_the_extension_listens(
    make_client: MakeClient,
) -> None:
    port = free_port()
    servers: list[FakeExtension] = []

    def start_late() -> None:
        time.sleep(0.3)
        servers.append(FakeExtension(port).__enter__())

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        client = make_client(port=port, token=TOKEN, timeout=10.0)
        assert client.get_secret("db") == SECRET
    finally:
        starter.join()
        for server in servers:
            server.__exit__(None, None, None)


def test_nothing_listening_is_extension_unavailable_within_the_timeout(
    make_client: MakeClient,
) -> None:
    started = time.monotonic()
    client = make_client(port=free_port(), token=TOKEN, timeout=0.4)
    with pytest.raises(ExtensionUnavailable) as caught:
        client.get_parameter("/app/p")
    assert time.monotonic() - started < 3.0
    assert caught.value.status is None
    assert "refused" in str(caught.value)


def test_slow_answer_is_a_timeout(fake: FakeExtension, make_client: MakeClient) -> None:
    fake.sequence(Reply(delay=2.0), secret_reply())
    started = time.monotonic()
    client = make_client(port=fake.port, token=TOKEN, timeout=0.3)
    with pytest.raises(ExtensionUnavailable) as caught:
        client.get_secret("db")
    assert time.monotonic() - started < 1.5
    assert caught.value.error_type == "Timeout"
    assert client.get_secret("db") == SECRET  # recovers on a fresh connection


# -- connections ---------------------------------------------------------------------------


def test_calls_reuse_one_kept_alive_connection(fake: FakeExtension, client: Client) -> None:
    for _ in range(20):
        client.get_secret("db")
    fake.always(parameter_reply("v"))
    for _ in range(5):
        client.get_parameter("/app/p")
    assert len(fake.requests) == 25
    assert fake.connections == 1


def test_error_answers_keep_the_connection(fake: FakeExtension, client: Client) -> None:
    fake.sequence(error_reply(404, "NotFound", "x"), secret_reply())
    with pytest.raises(SecretNotFound):
        client.get_secret("db")
    client.get_secret("db")
    assert fake.connections == 1


def test_connection_closed_by_the_extension_is_replaced_once(
    fake: FakeExtension, client: Client
) -> None:
    fake.sequence(Reply(body=secret_reply().body, close_after=True), secret_reply())
    client.get_secret("db")
    time.sleep(0.05)  # let the server finish closing; the client must not care either way
    assert client.get_secret("db") == SECRET
    assert fake.connections == 2


def test_reset_before_any_answer_is_retried_like_a_starting_extension(
    fake: FakeExtension, client: Client
) -> None:
    fake.sequence(Reply(drop=True), Reply(drop=True), secret_reply())
    assert client.get_secret("db") == SECRET
    assert len(fake.requests) == 3


def test_resets_past_the_timeout_are_extension_unavailable(
    fake: FakeExtension, make_client: MakeClient
) -> None:
    fake.always(Reply(drop=True))
    started = time.monotonic()
    with pytest.raises(ExtensionUnavailable, match="reset"):
        make_client(port=fake.port, token=TOKEN, timeout=0.4).get_secret("db")
    assert time.monotonic() - started < 3.0


def test_stale_connection_gets_exactly_one_retry(
    fake: FakeExtension, make_client: MakeClient
) -> None:
    client = make_client(port=fake.port, token=TOKEN, retries=0)
    fake.sequence(secret_reply(), Reply(drop=True))
    client.get_secret("db")
    with pytest.raises(ExtensionUnavailable):
        client.get_secret("db")
    assert len(fake.requests) == 3  # first call, the stale attempt, one fresh retry


def test_threads_share_the_client_safely(fake: FakeExtension) -> None:
    client = Client(port=fake.port, token=TOKEN, timeout=2.0)
    fake.responder = lambda request: secret_reply(string="value-" + request.query["secretId"])
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(25):
            secret_id = f"t{n}-{i}"
            value = client.get_secret(secret_id)
            if value != "value-" + secret_id:
                failures.append(f"{secret_id} -> {value!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert failures == []
    assert len(fake.requests) == 200
    assert 1 <= fake.connections <= 8


def _run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(HANDLER_CLIENT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_module_functions_use_the_environment(fake: FakeExtension) -> None:
    fake.responder = lambda request: (
        parameter_reply("a,b")
        if request.path.startswith("/systemsmanager")
        else secret_reply(string='{"k": "v"}')
    )
    code = (
        "from secretcache_client import get_secret, get_parameter\n"
        "print(get_secret('db', transform='json')['k'], get_parameter('/p', transform='list'))\n"
    )
    env = {"PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(fake.port), "AWS_SESSION_TOKEN": TOKEN}
    assert _run_python(code, env) == "v ['a', 'b']"
    assert {r.headers["x-aws-parameters-secrets-token"] for r in fake.requests} == {TOKEN}
    assert fake.connections == 1


def test_import_loads_no_heavy_modules() -> None:
    code = (
        "import sys, secretcache_client\n"
        "heavy = ['http.client', 'json', 'asyncio', 'typing', 'socket', 'urllib.parse']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    assert _run_python(code, {}) == "[]"


def test_module_functions_are_bound_to_the_default_client() -> None:
    for name in ("get_secret", "get_secret_value", "get_parameter", "kms_decrypt"):
        bound = getattr(secretcache_client, name)
        assert bound.__self__ is secretcache_client.default_client


def test_request_records_are_complete(fake: FakeExtension, client: Client) -> None:
    client.get_secret("db")
    assert isinstance(fake.requests[0], Request)
