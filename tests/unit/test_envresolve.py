"""The resolver against a fake extension: requests, values and reasons.

The fake answers as the extension's routes do (tests/integration/test_e2e_env.py runs the real
one); every failure message is checked to hold no value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from secretcache.envresolve import resolve_environment

SECRETS = {
    "prod/db": json.dumps({"username": "app-user-v4l", "password": "pw-V4LU3", "port": 5432}),
    "plain": "plain-V4LU3",
    "not-json": "raw-V4LU3-text",
    "array": json.dumps(["arr-V4LU3"]),
    "nul": "nul\x00V4LU3",
}
PREVIOUS = {"rotated": "previous-V4LU3"}
PARAMETERS = {
    "/app/flag": ("String", "flag-V4LU3"),
    "/app/key": ("SecureString", "key-V4LU3"),
}
VALUES = ("V4LU3", "app-user-v4l")  # every seeded value carries one of these


def ok(body: object) -> tuple[int, bytes]:
    return 200, json.dumps(body).encode()


def error(status: int, error_type: str) -> tuple[int, bytes]:
    return status, json.dumps({"errorType": error_type, "message": "m"}).encode()


class FakeExtension:
    """The routes the wrapper calls, answering from the dicts above; records every request."""

    def __init__(self, deny_batch: bool = False, denied: frozenset[str] = frozenset()) -> None:
        self.requests: list[tuple[str, str]] = []
        self.deny_batch = deny_batch
        self.denied = denied

    def __call__(self, method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        self.requests.append((method, target))
        url = urlsplit(target)
        query = parse_qs(url.query)
        if url.path == "/secretsmanager/batchget":
            if self.deny_batch:
                return error(403, "AccessDeniedException")
            values: list[dict[str, str | None]] = []
            errors: list[dict[str, str]] = []
            for secret_id in query["secretId"]:
                if secret_id in self.denied:
                    errors.append({"SecretId": secret_id, "ErrorCode": "AccessDeniedException"})
                elif secret_id in SECRETS:
                    values.append({"Name": secret_id, "ARN": f"arn:x:{secret_id}-AbCdEf"})
                    values[-1]["SecretString"] = SECRETS[secret_id]
                elif secret_id == "binary":
                    values.append({"Name": "binary", "SecretBinary": "AAEC", "SecretString": None})
                else:
                    errors.append({"SecretId": secret_id, "ErrorCode": "ResourceNotFoundException"})
            return ok({"SecretValues": values, "Errors": errors})
        if url.path == "/secretsmanager/get":
            secret_id = query["secretId"][0]
            if secret_id in self.denied:
                return error(403, "AccessDeniedException")
            store = PREVIOUS if query.get("versionStage") == ["AWSPREVIOUS"] else SECRETS
            if secret_id not in store:
                return error(404, "ResourceNotFoundException")
            return ok({"Name": secret_id, "SecretString": store[secret_id]})
        if url.path == "/systemsmanager/parameters/getbatch":
            params, invalid = [], []
            for name in query["name"]:
                if name in PARAMETERS:
                    kind, value = PARAMETERS[name]
                    params.append({"Name": name, "Type": kind, "Value": value})
                else:
                    invalid.append(name)
            return ok({"Parameters": params, "InvalidParameters": invalid})
        if url.path == "/systemsmanager/parameters/get":
            name = query["name"][0]
            if name not in PARAMETERS:
                return error(404, "ParameterNotFound")
            kind, value = PARAMETERS[name]
            return ok(
                {"Parameter": {"Name": name, "Type": kind, "Value": value + query["version"][0]}}
            )
        if url.path == "/kms/decrypt":
            request = json.loads(body or b"{}")
            blob = base64.b64decode(request["CiphertextBlob"])
            if request.get("EncryptionContext", {}) != {"fn": "f"} and blob.startswith(b"ctx:"):
                return error(400, "InvalidCiphertextException")
            return ok({"Plaintext": base64.b64encode(blob.removeprefix(b"ctx:")).decode()})
        return error(404, "NotFound")


def resolve(env: dict[str, str], fetch: Callable[..., tuple[int, bytes]] | None = None):  # type: ignore[no-untyped-def]
    return resolve_environment(env, fetch or FakeExtension())


def assert_no_value(lines: list[str]) -> None:
    for line in lines:
        for marker in VALUES:
            assert marker not in line, line


def test_every_kind_resolves_in_one_round_of_requests() -> None:
    fake = FakeExtension()
    outcome = resolve(
        {
            "DB_URL": "pg://{{resolve:secretsmanager:prod/db::username}}:"
            "{{resolve:secretsmanager:prod/db::password}}@h:{{resolve:secretsmanager:prod/db::port}}",
            "PLAIN": "{{resolve:secretsmanager:plain}}",
            "PREV": "{{resolve:secretsmanager:rotated:SecretString::AWSPREVIOUS}}",
            "FLAG": "{{resolve:ssm:/app/flag}}",
            "FLAG3": "{{resolve:ssm:/app/flag:3}}",
            "KEY": "{{resolve:ssm-secure:/app/key}}",
            "ENC": base64.b64encode(b"kms-V4LU3").decode(),
            "DEC": "{{resolve:kms:ENC}}",
            "OTHER": "no references",
        },
        fake,
    )
    assert outcome.failures == []
    assert outcome.resolved == {
        "DB_URL": "pg://app-user-v4l:pw-V4LU3@h:5432",
        "PLAIN": "plain-V4LU3",
        "PREV": "previous-V4LU3",
        "FLAG": "flag-V4LU3",
        "FLAG3": "flag-V4LU33",
        "KEY": "key-V4LU3",
        "DEC": "kms-V4LU3",
    }
    paths = sorted(urlsplit(t).path for _, t in fake.requests)
    assert paths == [
        "/kms/decrypt",
        "/secretsmanager/batchget",  # prod/db once for three keys, and plain
        "/secretsmanager/get",  # AWSPREVIOUS: a batch cannot ask for a stage
        "/systemsmanager/parameters/get",  # :3
        "/systemsmanager/parameters/getbatch",  # withDecryption=false
        "/systemsmanager/parameters/getbatch",  # withDecryption=true
    ]
    batch = next(t for _, t in fake.requests if "batchget" in t)
    assert parse_qs(urlsplit(batch).query)["secretId"] == ["plain", "prod/db"]
    assert outcome.requests == 6 and outcome.references == 9


def test_a_batch_denied_as_a_whole_falls_back_to_single_reads() -> None:
    fake = FakeExtension(deny_batch=True, denied=frozenset({"plain"}))
    outcome = resolve(
        {"A": "{{resolve:secretsmanager:prod/db::port}}", "B": "{{resolve:secretsmanager:plain}}"},
        fake,
    )
    assert outcome.resolved == {"A": "5432"}
    assert outcome.failures == [
        "B: {{resolve:secretsmanager:plain}}: access denied (AccessDeniedException)"
    ]
    assert [urlsplit(t).path for _, t in fake.requests] == [
        "/secretsmanager/batchget",
        "/secretsmanager/get",
        "/secretsmanager/get",
    ]


def test_more_than_a_batch_is_split_and_fetched_concurrently() -> None:
    fake = FakeExtension()
    env = {f"V{i:03d}": f"{{{{resolve:secretsmanager:missing-{i}}}}}" for i in range(150)}
    outcome = resolve(env, fake)
    assert len(outcome.failures) == 150
    sizes = sorted(len(parse_qs(urlsplit(t).query)["secretId"]) for _, t in fake.requests)
    assert sizes == [50, 100]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{{resolve:secretsmanager:nope}}", "not found (ResourceNotFoundException)"),
        ("{{resolve:secretsmanager:prod/db::nokey}}", "the secret's JSON has no key nokey"),
        ("{{resolve:secretsmanager:not-json::k}}", "the SecretString is not JSON"),
        ("{{resolve:secretsmanager:array::k}}", "not a JSON object"),
        ("{{resolve:secretsmanager:binary}}", "no SecretString (a binary secret)"),
        ("{{resolve:secretsmanager:nul}}", "NUL character"),
        ("{{resolve:secretsmanager:nope:SecretString::AWSPREVIOUS}}", "not found"),
        ("{{resolve:ssm:/nope}}", "not found (ParameterNotFound)"),
        ("{{resolve:ssm:/nope:2}}", "not found (ParameterNotFound)"),
        ("{{resolve:ssm:/app/key}}", "a SecureString parameter: use {{resolve:ssm-secure:...}}"),
        ("{{resolve:kms:UNSET}}", "the variable UNSET is not set"),
        ("{{resolve:kms:NOT_B64}}", "the variable NOT_B64 does not hold base64"),
        ("{{resolve:kms:CTX_ENC}}", "bad request (InvalidCiphertextException)"),
        ("{{resolve:kms:BAD_UTF8}}", "the plaintext is not UTF-8 text"),
    ],
)
def test_each_failure_names_variable_reference_and_reason_never_a_value(
    value: str, reason: str
) -> None:
    env = {
        "TARGET": f"secret-V4LU3-prefix {value}",
        "NOT_B64": "not base64 V4LU3!",
        "CTX_ENC": base64.b64encode(b"ctx:V4LU3").decode(),
        "BAD_UTF8": base64.b64encode(b"\xff\xfeV4LU3").decode(),
    }
    outcome = resolve(env)
    assert outcome.resolved == {}
    assert len(outcome.failures) == 1
    line = outcome.failures[0]
    assert line.startswith(f"TARGET: {value}: ")  # the reference as written, not rewritten
    assert reason in line
    assert_no_value(outcome.failures)


def test_kms_context_is_sent_and_unquoted_values_pass_through() -> None:
    env = {
        "CTX_ENC": base64.b64encode(b"ctx:ctx-V4LU3").decode(),
        "V": "{{resolve:kms:CTX_ENC:fn=f}}",
    }
    assert resolve(env).resolved == {"V": "ctx-V4LU3"}


def test_transport_failures_become_reasons() -> None:
    def refused(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        raise ConnectionRefusedError(111, "refused")

    def slow(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        raise TimeoutError("timed out")

    def garbled(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        return 200, b"<html>"

    env = {"A": "{{resolve:ssm:/app/flag}}"}
    assert "is not listening" in resolve(env, refused).failures[0]
    assert "SECRETCACHE_ENV_TIMEOUT_MILLIS" in resolve(env, slow).failures[0]
    assert "could not be read" in resolve(env, garbled).failures[0]


def test_malformed_and_unresolvable_variables_are_all_reported_sorted() -> None:
    outcome = resolve(
        {
            "Z_BAD": "V4LU3{{resolve:ssm}}",
            "A_MISSING": "{{resolve:ssm:/nope}}",
            "M_OK": "{{resolve:ssm:/app/flag}}",
        }
    )
    assert [line.split(":")[0] for line in outcome.failures] == ["A_MISSING", "Z_BAD"]
    assert outcome.resolved == {"M_OK": "flag-V4LU3"}
    assert_no_value(outcome.failures)


def test_without_a_token_nothing_is_fetched() -> None:
    fake = FakeExtension()
    outcome = resolve_environment({"A": "{{resolve:ssm:/app/flag}}"}, fake, missing_token=True)
    assert fake.requests == []
    assert "AWS_SESSION_TOKEN is not set" in outcome.failures[0]


def test_requests_run_in_the_calling_thread_when_no_thread_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import _thread

    def refuse(*args: object) -> int:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_thread, "start_new_thread", refuse)
    fake = FakeExtension()
    env = {"A": "{{resolve:ssm:/app/flag}}", "B": "{{resolve:secretsmanager:plain}}"}
    assert resolve(env, fake).resolved == {"A": "flag-V4LU3", "B": "plain-V4LU3"}
    assert len(fake.requests) == 2
