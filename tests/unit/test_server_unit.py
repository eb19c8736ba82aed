"""The aiohttp app against a fake backends object: parsing, access checks, error rendering."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from secretcache.cache import TtlCache
from secretcache.config import load_config
from secretcache.errors import NotFound, UpstreamError
from secretcache.reads import cache_policies
from secretcache.server import STATE, make_app

from tools.net import free_port

TOKEN = "unit-test-token-0123456789abcdef"
HEADER = "X-Aws-Parameters-Secrets-Token"
AUTH = {HEADER: TOKEN}
CREATED = datetime(2022, 11, 16, 8, 22, 40, 499000, tzinfo=timezone.utc)


class FakeBackends:
    """Records every call; answers from canned data."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.loaded = True
        self.call_observer: Any = None
        self.fail_with: Exception | None = None

    async def get_secret_value(
        self, secret_id: str, version_id: str | None, version_stage: str | None
    ) -> dict[str, Any]:
        self.calls.append(("get_secret_value", (secret_id, version_id, version_stage)))
        if self.fail_with is not None:
            raise self.fail_with
        return {
            "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_id}",
            "Name": secret_id,
            "SecretString": f"value-{len(self.calls)}",
            "VersionId": version_id or "v1",
            "VersionStages": [version_stage or "AWSCURRENT"],
            "CreatedDate": CREATED,
        }

    async def get_parameter(self, name: str, with_decryption: bool) -> dict[str, Any]:
        self.calls.append(("get_parameter", (name, with_decryption)))
        if self.fail_with is not None:
            raise self.fail_with
        return {
            "Parameter": {
                "Name": name.split(":")[0],
                "Type": "String",
                "Value": f"p-{len(self.calls)}-{with_decryption}",
                "Version": 1,
                "LastModifiedDate": CREATED,
                "ARN": "arn",
                "DataType": "text",
            }
        }

    async def decrypt(
        self,
        ciphertext: bytes,
        context: dict[str, str] | None,
        key_id: str | None,
        algorithm: str | None = None,
    ) -> dict[str, Any]:
        args = (
            (ciphertext, context, key_id)
            if algorithm is None
            else (ciphertext, context, key_id, algorithm)
        )
        self.calls.append(("decrypt", args))
        if self.fail_with is not None:
            raise self.fail_with
        return {"KeyId": "k", "Plaintext": b"plain", "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def build_app(config: Any, cache: TtlCache, backends: FakeBackends) -> web.Application:
    from secretcache.reads import Reads
    from secretcache.status import Status

    return make_app(Reads(config, cache, backends), Status())  # type: ignore[arg-type]


class App:
    def __init__(self, client: TestClient, backends: FakeBackends, port: int) -> None:
        self.client = client
        self.backends = backends
        self.port = port

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        # skip_auto_headers is not needed: TestClient sends Host 127.0.0.1:<port>
        return await self.client.get(path, headers=AUTH if headers is None else headers)


@pytest.fixture
async def app() -> AsyncIterator[App]:
    port = free_port()
    config = load_config(
        {"AWS_SESSION_TOKEN": TOKEN, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port)}
    )
    backends = FakeBackends()
    cache = TtlCache(max_entries=100, max_bytes=1 << 20, policies=cache_policies(config))
    web_app = build_app(config, cache, backends)
    state = web_app[STATE]
    state.status.ready = True  # what lifecycle sets once start-up work is done
    server = TestServer(web_app, host="127.0.0.1", port=port)
    client = TestClient(server)
    await client.start_server()
    try:
        yield App(client, backends, port)
    finally:
        await client.close()


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert set(body) == {"errorType", "message"}
    assert "Traceback" not in body["message"]
    return body


# Query parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "secret_id"),
    [
        ("secretId=my+secret", "my secret"),
        ("secretId=my%20secret", "my secret"),
        ("secretId=a%2Bb", "a+b"),
        ("secretId=/app/db", "/app/db"),
        ("secretId=%2Fapp%2Fdb", "/app/db"),
        (
            "secretId=arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        ),
        (
            "secretId=arn%3Aaws%3Asecretsmanager%3Aus-east-1%3A123456789012%3Asecret%3Adb",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
        ),
        ("secretId=p%C3%A4ss", "päss"),
    ],
)
async def test_secret_id_decoding(app: App, query: str, secret_id: str) -> None:
    response = await app.get(f"/secretsmanager/get?{query}")
    assert response.status == 200
    assert app.backends.calls == [("get_secret_value", (secret_id, None, None))]
    assert (await response.json())["Name"] == secret_id


async def test_trailing_slash_is_accepted(app: App) -> None:
    response = await app.get("/systemsmanager/parameters/get/?name=%2Fapp%2Fdb")
    assert response.status == 200
    assert app.backends.calls == [("get_parameter", ("/app/db", False))]
    assert (await app.get("/secretsmanager/get/?secretId=x")).status == 200


@pytest.mark.parametrize("query", ["secretId=%FF", "secretId=%C3%28", "secretId=ok&versionId=%80"])
async def test_invalid_utf8_after_percent_decoding_is_400(app: App, query: str) -> None:
    body = await error_of(await app.get(f"/secretsmanager/get?{query}"), 400)
    assert body["errorType"] == "BadRequest"
    assert app.backends.calls == []


async def test_over_long_value_is_400(app: App) -> None:
    await error_of(await app.get("/secretsmanager/get?secretId=" + "a" * 2049), 400)
    assert app.backends.calls == []
    assert (await app.get("/secretsmanager/get?secretId=" + "a" * 2048)).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/secretsmanager/get",
        "/secretsmanager/get?secretId=",
        "/secretsmanager/get?secretid=x",
        "/systemsmanager/parameters/get",
        "/systemsmanager/parameters/get?name=",
    ],
)
async def test_missing_or_empty_identifier_is_400(app: App, path: str) -> None:
    body = await error_of(await app.get(path), 400)
    assert body["errorType"] == "MissingParameter"
    assert app.backends.calls == []


async def test_first_duplicate_parameter_wins(app: App) -> None:
    assert (await app.get("/secretsmanager/get?secretId=first&secretId=second")).status == 200
    assert app.backends.calls[0][1][0] == "first"


async def test_version_id_and_stage_are_passed(app: App) -> None:
    response = await app.get(
        "/secretsmanager/get?secretId=s&versionId=abc&versionStage=AWSPREVIOUS"
    )
    assert response.status == 200
    assert app.backends.calls == [("get_secret_value", ("s", "abc", "AWSPREVIOUS"))]


@pytest.mark.parametrize("version", ["abc", "1.5", "-1", "0", "0x1", "1e3", "+1", "1%20", "%D9%A3"])
async def test_non_numeric_version_is_400(app: App, version: str) -> None:
    body = await error_of(
        await app.get(f"/systemsmanager/parameters/get?name=p&version={version}"), 400
    )
    assert body["errorType"] == "BadRequest"
    assert app.backends.calls == []


async def test_superscript_digit_version_is_400_not_500(app: App) -> None:
    response = await app.get("/systemsmanager/parameters/get?name=p&version=%C2%B2")
    body = await error_of(response, 400)
    assert body["errorType"] == "BadRequest"


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("name=p&version=3", "p:3"),
        ("name=p&version=003", "p:3"),
        ("name=p&label=live", "p:live"),
        ("name=p&version=2&label=live", "p:2"),
        ("name=p&label=live&version=2", "p:live"),
        ("name=p&version=&label=live", "p:live"),
        ("name=p", "p"),
    ],
)
async def test_first_of_version_or_label_wins(app: App, query: str, name: str) -> None:
    response = await app.get(f"/systemsmanager/parameters/get?{query}")
    assert response.status == 200
    assert app.backends.calls == [("get_parameter", (name, False))]
    selector = name[1:] or None
    assert (await response.json())["Parameter"]["Selector"] == selector


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("", False)],
)
async def test_with_decryption_flag(app: App, value: str, expected: bool) -> None:
    response = await app.get(f"/systemsmanager/parameters/get?name=p&withDecryption={value}")
    assert response.status == 200
    assert app.backends.calls == [("get_parameter", ("p", expected))]


async def test_bad_boolean_is_400(app: App) -> None:
    await error_of(await app.get("/systemsmanager/parameters/get?name=p&withDecryption=yes!"), 400)
    await error_of(await app.get("/secretsmanager/get?secretId=s&refreshNow=maybe"), 400)
    assert app.backends.calls == []


# Caching through the app -------------------------------------------------------------------


async def test_hit_is_served_without_a_backend_call(app: App) -> None:
    first = await app.get("/secretsmanager/get?secretId=s")
    second = await app.get("/secretsmanager/get?secretId=s")
    assert await first.read() == await second.read()
    assert len(app.backends.calls) == 1
    assert second.headers["Content-Type"].startswith("application/json")
    assert second.headers["Cache-Control"] == "no-store"


async def test_refresh_now_calls_the_backend_and_stores(app: App) -> None:
    first = await (await app.get("/secretsmanager/get?secretId=s")).json()
    refreshed = await (await app.get("/secretsmanager/get?secretId=s&refreshNow=true")).json()
    after = await (await app.get("/secretsmanager/get?secretId=s")).json()
    assert first["SecretString"] == "value-1"
    assert refreshed["SecretString"] == "value-2"
    assert after["SecretString"] == "value-2"
    assert len(app.backends.calls) == 2


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "/secretsmanager/get?secretId=s",
            "/secretsmanager/get?secretId=s&versionStage=AWSPREVIOUS",
        ),
        (
            "/secretsmanager/get?secretId=s&versionId=v",
            "/secretsmanager/get?secretId=s&versionStage=v",
        ),
        ("/secretsmanager/get?secretId=s", "/secretsmanager/get?secretId=S"),
        (
            "/systemsmanager/parameters/get?name=p",
            "/systemsmanager/parameters/get?name=p&withDecryption=true",
        ),
        (
            "/systemsmanager/parameters/get?name=p",
            "/systemsmanager/parameters/get?name=p&version=1",
        ),
        (
            "/systemsmanager/parameters/get?name=p&version=1",
            "/systemsmanager/parameters/get?name=p&label=1a",
        ),
    ],
)
async def test_requests_aws_answers_differently_never_share_an_entry(
    app: App, a: str, b: str
) -> None:
    assert (await app.get(a)).status == 200
    assert (await app.get(b)).status == 200
    assert len(app.backends.calls) == 2


async def test_backend_errors_render_as_json_and_are_not_cached(app: App) -> None:
    app.backends.fail_with = NotFound(
        "secretsmanager: ResourceNotFoundException", error_type="ResourceNotFoundException"
    )
    body = await error_of(await app.get("/secretsmanager/get?secretId=s"), 404)
    assert body["errorType"] == "ResourceNotFoundException"
    app.backends.fail_with = UpstreamError(
        "secretsmanager: InternalFailure", error_type="InternalFailure"
    )
    await error_of(await app.get("/secretsmanager/get?secretId=s"), 502)
    app.backends.fail_with = None
    assert (await app.get("/secretsmanager/get?secretId=s")).status == 200
    assert len(app.backends.calls) == 3


async def test_unexpected_backend_exception_is_500_without_traceback(app: App) -> None:
    app.backends.fail_with = RuntimeError("secret-ish internal detail")
    body = await error_of(await app.get("/secretsmanager/get?secretId=s"), 500)
    assert "secret-ish" not in body["message"]


# Host and token ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "LOCALHOST",
        "localhost:{port}",
        "127.0.0.1:{port}",
        "[::1]:{port}",
    ],
)
async def test_loopback_host_headers_are_allowed(app: App, host: str) -> None:
    headers = {**AUTH, "Host": host.format(port=app.port)}
    assert (await app.get("/secretsmanager/get?secretId=s", headers)).status == 200


@pytest.mark.parametrize(
    "host", ["evil.com", "evil.com:{port}", "127.0.0.1.evil.com", "localhost.evil.com:{port}"]
)
async def test_foreign_host_header_is_403(app: App, host: str) -> None:
    headers = {**AUTH, "Host": host.format(port=app.port)}
    body = await error_of(await app.get("/secretsmanager/get?secretId=s", headers), 403)
    assert body["errorType"] == "ForbiddenHost"
    assert app.backends.calls == []


async def test_foreign_host_is_refused_even_for_health(app: App) -> None:
    await error_of(await app.client.get("/health", headers={"Host": "evil.com"}), 403)


@pytest.mark.parametrize(
    "name",
    [HEADER, HEADER.lower(), HEADER.upper(), "x-AWS-parameters-SECRETS-token", "X-Vault-Token"],
)
async def test_token_header_in_any_letter_case(app: App, name: str) -> None:
    assert (await app.get("/secretsmanager/get?secretId=s", {name: TOKEN})).status == 200


async def test_missing_token_is_401_and_nothing_is_fetched(app: App) -> None:
    body = await error_of(await app.get("/secretsmanager/get?secretId=s", {}), 401)
    assert body["errorType"] == "MissingToken"
    assert app.backends.calls == []


@pytest.mark.parametrize(
    "token", ["", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN + "x"]
)
async def test_wrong_token_is_401_and_nothing_is_fetched(app: App, token: str) -> None:
    body = await error_of(
        await app.get("/systemsmanager/parameters/get?name=p", {HEADER: token}), 401
    )
    assert body["errorType"] == "InvalidToken"
    assert TOKEN not in body["message"]
    assert app.backends.calls == []


async def test_non_ascii_token_is_401_not_500(app: App) -> None:
    response = await app.client.get(
        "/secretsmanager/get?secretId=s", headers={HEADER: "t\u00e9st".encode().decode("latin-1")}
    )
    await error_of(response, 401)


async def test_cached_value_is_not_served_without_token(app: App) -> None:
    assert (await app.get("/secretsmanager/get?secretId=s")).status == 200
    await error_of(await app.get("/secretsmanager/get?secretId=s", {}), 401)


async def test_health_needs_no_token(app: App) -> None:
    response = await app.client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/health/", "/ping/"])
async def test_health_and_ping_with_a_trailing_slash_need_no_token(app: App, path: str) -> None:
    assert (await app.client.get(path)).status == 200


async def test_metrics_need_the_token_and_hold_no_names(app: App) -> None:
    await error_of(await app.client.get("/metrics"), 401)
    await app.get("/secretsmanager/get?secretId=very-private-name")
    response = await app.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert "very-private-name" not in text
    assert "value-1" not in text
    assert json.loads(text)["services"]["secretsmanager"]["misses"] == 1


# Paths and methods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/secretsmanager", "/secretsmanager/get/extra", "/nope?secretId=s"]
)
async def test_unknown_path_is_404_json(app: App, path: str) -> None:
    body = await error_of(await app.get(path), 404)
    assert body["errorType"] == "UnknownPath"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/secretsmanager/get?secretId=s"),
        ("DELETE", "/systemsmanager/parameters/get?name=p"),
        ("PUT", "/secretsmanager/get/"),
        ("GET", "/kms/decrypt"),
    ],
)
async def test_wrong_method_is_405_json(app: App, method: str, path: str) -> None:
    body = await error_of(await app.client.request(method, path, headers=AUTH), 405)
    assert body["errorType"] == "MethodNotAllowed"
    assert app.backends.calls == []


# KMS body validation -----------------------------------------------------------------------

BLOB = base64.b64encode(b"ciphertext-bytes").decode()


async def post_decrypt(app: App, body: bytes | str | dict[str, Any] | list[Any]) -> Any:
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    return await app.client.post("/kms/decrypt", data=data, headers=AUTH)


async def test_decrypt_passes_blob_context_and_key_id(app: App) -> None:
    response = await post_decrypt(
        app, {"CiphertextBlob": BLOB, "EncryptionContext": {"app": "x"}, "KeyId": "alias/k"}
    )
    assert response.status == 200
    assert app.backends.calls == [("decrypt", (b"ciphertext-bytes", {"app": "x"}, "alias/k"))]
    assert await response.json() == {
        "KeyId": "k",
        "Plaintext": base64.b64encode(b"plain").decode(),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "ResultMetadata": {},
    }


async def test_decrypt_is_cached_by_whole_request(app: App) -> None:
    await post_decrypt(app, {"CiphertextBlob": BLOB})
    await post_decrypt(app, {"CiphertextBlob": BLOB})
    assert len(app.backends.calls) == 1
    await post_decrypt(app, {"CiphertextBlob": BLOB, "EncryptionContext": {"a": "b"}})
    await post_decrypt(app, {"CiphertextBlob": BLOB, "KeyId": "alias/other"})
    assert len(app.backends.calls) == 3


async def test_decrypt_encryption_algorithm_is_not_silently_ignored(app: App) -> None:
    assert (await post_decrypt(app, {"CiphertextBlob": BLOB})).status == 200
    response = await post_decrypt(
        app, {"CiphertextBlob": BLOB, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
    )
    # either rejected, or a separate upstream call (with the algorithm)
    assert response.status == 400 or len(app.backends.calls) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        [BLOB],
        "just a string",
        {},
        {"CiphertextBlob": ""},
        {"CiphertextBlob": 123},
        {"CiphertextBlob": "not base64!!"},
        {"CiphertextBlob": "QUJD"[:3]},
        {"CiphertextBlob": BLOB, "EncryptionContext": "a=b"},
        {"CiphertextBlob": BLOB, "EncryptionContext": {"a": 1}},
        {"CiphertextBlob": BLOB, "EncryptionContext": ["a"]},
        {"CiphertextBlob": BLOB, "KeyId": ""},
        {"CiphertextBlob": BLOB, "KeyId": 5},
        {"CiphertextBlob": BLOB, "Unknown": "x"},
    ],
)
async def test_invalid_decrypt_body_is_400_json(app: App, body: Any) -> None:
    await error_of(await post_decrypt(app, body), 400)
    assert app.backends.calls == []


async def test_deeply_nested_decrypt_body_is_400_not_500(app: App) -> None:
    body = await error_of(await post_decrypt(app, b"[" * 30000 + b"]" * 30000), 400)
    assert body["errorType"] == "BadRequest"
    assert app.backends.calls == []


async def test_decrypt_body_over_64_kib_is_413_json(app: App) -> None:
    big = {"CiphertextBlob": base64.b64encode(b"x" * 60_000).decode()}
    data = json.dumps(big).encode()
    assert len(data) > 64 * 1024
    body = await error_of(await post_decrypt(app, data), 413)
    assert body["errorType"] == "PayloadTooLarge"
    assert app.backends.calls == []


async def test_decrypt_without_token_is_401(app: App) -> None:
    response = await app.client.post("/kms/decrypt", data=json.dumps({"CiphertextBlob": BLOB}))
    await error_of(response, 401)
    assert app.backends.calls == []
