"""Beyond AWS's extension: batch and path reads, batch secrets, Agent paths, prefetch, metrics."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote

import pytest

from tests.support.extension_process import ExtensionProcess
from tests.support.shapes import PARAMETER_KEYS, SECRET_ENTRY_KEYS
from tools.moto_server import MotoServer

StartExtension = Callable[..., ExtensionProcess]


def _metrics(extension: ExtensionProcess) -> dict[str, dict[str, object]]:
    result = extension.get("/metrics")
    assert result.status == 200
    body = result.json()
    assert isinstance(body, dict)
    return body["services"]  # type: ignore[no-any-return]


@pytest.fixture
def params(moto_server: MotoServer, unique: str) -> dict[str, str]:
    """12 SecureStrings under /<unique>/app/ (one nested deeper) and their values."""
    ssm = moto_server.client("ssm")
    values = {}
    for i in range(11):
        name = f"/{unique}/app/p{i:02d}"
        values[name] = f"value-{unique}-{i}"
        ssm.put_parameter(Name=name, Value=values[name], Type="SecureString")
    nested = f"/{unique}/app/deep/inner"
    values[nested] = f"value-{unique}-nested"
    ssm.put_parameter(Name=nested, Value=values[nested], Type="SecureString")
    return values


def test_getbatch_returns_request_order_with_invalid_names_and_fills_single_entries(
    extension: ExtensionProcess, params: dict[str, str], unique: str
) -> None:
    names = sorted(params)[:11]
    asked = [*reversed(names), f"/{unique}/missing"]
    query = "&".join(f"name={quote(n, safe='')}" for n in asked) + "&withDecryption=true"
    result = extension.get(f"/systemsmanager/parameters/getbatch?{query}")
    assert result.status == 200, result.body
    body = result.json()
    assert list(body) == ["Parameters", "InvalidParameters", "ResultMetadata"]
    assert [p["Name"] for p in body["Parameters"]] == list(reversed(names))
    assert [p["Value"] for p in body["Parameters"]] == [params[n] for n in reversed(names)]
    assert all(list(p) == PARAMETER_KEYS for p in body["Parameters"])
    assert body["InvalidParameters"] == [f"/{unique}/missing"]
    ssm_before = _metrics(extension)["ssm"]
    assert ssm_before["upstreamCalls"] == 2  # 11 names in chunks of 10

    single = extension.get(
        f"/systemsmanager/parameters/get?name={quote(names[0], safe='')}&withDecryption=true"
    )
    assert single.status == 200
    assert single.json()["Parameter"]["Value"] == params[names[0]]
    # Found names are now cached; a name AWS did not know is asked again (no negative cache).
    found_only = "&".join(f"name={quote(n, safe='')}" for n in reversed(names))
    again = extension.get(f"/systemsmanager/parameters/getbatch?{found_only}&withDecryption=true")
    assert again.json()["Parameters"] == body["Parameters"]
    assert again.json()["InvalidParameters"] == []
    ssm_after = _metrics(extension)["ssm"]
    assert ssm_after["upstreamCalls"] == 2, (
        "single and repeated batch reads were not served from cache"
    )
    assert ssm_after["hits"] >= 1 + 11


def test_getbatch_rejects_missing_names_and_too_many(extension: ExtensionProcess) -> None:
    missing = extension.get("/systemsmanager/parameters/getbatch")
    assert missing.status == 400
    assert missing.json()["errorType"] == "MissingParameter"
    many = "&".join(f"name=/p{i}" for i in range(101))
    too_many = extension.get(f"/systemsmanager/parameters/getbatch?{many}")
    assert too_many.status == 400
    assert "100" in too_many.json()["message"]


def test_getbypath_follows_every_page_and_caches_each_parameter(
    extension: ExtensionProcess, params: dict[str, str], unique: str
) -> None:
    path = f"/{unique}/app/"
    flat = extension.get(f"/systemsmanager/parameters/getbypath?path={path}&withDecryption=true")
    assert flat.status == 200, flat.body
    body = flat.json()
    assert list(body) == ["Parameters", "ResultMetadata"]
    assert {p["Name"]: p["Value"] for p in body["Parameters"]} == {
        n: v for n, v in params.items() if "/deep/" not in n
    }
    calls_after_flat = _metrics(extension)["ssm"]["upstreamCalls"]
    assert calls_after_flat >= 2  # 11 parameters at 10 per page

    recursive = extension.get(
        f"/systemsmanager/parameters/getbypath?path={path}&recursive=true&withDecryption=true"
    )
    assert {p["Name"] for p in recursive.json()["Parameters"]} == set(params)

    cached = extension.get(f"/systemsmanager/parameters/getbypath?path={path}&withDecryption=true")
    assert cached.json() == body
    one = sorted(params)[0]
    single = extension.get(
        f"/systemsmanager/parameters/get?name={quote(one, safe='')}&withDecryption=true"
    )
    assert single.json()["Parameter"]["Value"] == params[one]
    after = _metrics(extension)["ssm"]
    calls_recursive = after["upstreamCalls"]
    assert after["hits"] >= 2
    # The repeated path read and the single read cost nothing upstream.
    assert calls_recursive == _metrics(extension)["ssm"]["upstreamCalls"]


def test_getbypath_requires_an_absolute_path(extension: ExtensionProcess) -> None:
    result = extension.get("/systemsmanager/parameters/getbypath?path=relative")
    assert result.status == 400
    assert "path" in result.json()["message"]


def test_batchget_secrets_in_order_with_errors_and_single_entries(
    extension: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    sm = moto_server.client("secretsmanager")
    ids = [f"{unique}/s{i:02d}" for i in range(22)]
    for i, secret_id in enumerate(ids):
        sm.create_secret(Name=secret_id, SecretString=f"secret-{unique}-{i}")
    asked = [*ids, f"{unique}/nope"]
    query = "&".join(f"secretId={quote(s, safe='')}" for s in asked)
    result = extension.get(f"/secretsmanager/batchget?{query}")
    assert result.status == 200, result.body
    body = result.json()
    assert list(body) == ["SecretValues", "Errors", "ResultMetadata"]
    assert [v["Name"] for v in body["SecretValues"]] == ids
    assert [v["SecretString"] for v in body["SecretValues"]] == [
        f"secret-{unique}-{i}" for i in range(22)
    ]
    assert all(list(v) == SECRET_ENTRY_KEYS for v in body["SecretValues"])
    assert [e["SecretId"] for e in body["Errors"]] == [f"{unique}/nope"]
    assert set(body["Errors"][0]) == {"ErrorCode", "ErrorMessage", "SecretId"}
    assert _metrics(extension)["secretsmanager"]["upstreamCalls"] == 2  # chunks of 20

    single = extension.get(f"/secretsmanager/get?secretId={quote(ids[3], safe='')}")
    assert single.json()["SecretString"] == f"secret-{unique}-3"
    assert _metrics(extension)["secretsmanager"]["upstreamCalls"] == 2


def test_secrets_manager_agent_paths_and_headers(
    extension: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    secret_id = f"{unique}/agent/db"
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=secret_id, SecretString="agent-v1")
    via_agent = extension.get(
        f"/v1/{secret_id}", token=None, headers={"X-Vault-Token": extension.token}
    )
    assert via_agent.status == 200
    assert via_agent.json()["SecretString"] == "agent-v1"
    assert extension.get(f"/v1/{secret_id}", token=None).status == 401

    sm.put_secret_value(SecretId=secret_id, SecretString="agent-v2")
    assert extension.get(f"/v1/{secret_id}?refreshNow=0").json()["SecretString"] == "agent-v1"
    assert extension.get(f"/v1/{secret_id}?refreshNow=false").json()["SecretString"] == "agent-v1"
    assert extension.get(f"/v1/{secret_id}?refreshNow=1").json()["SecretString"] == "agent-v2"
    assert extension.get(f"/v1/{secret_id}?refreshNow=maybe").status == 400

    ping = extension.get("/ping", token=None)
    assert ping.status == 200
    assert ping.body == b"healthy"


def test_health_needs_no_token_and_says_nothing_else(extension: ExtensionProcess) -> None:
    result = extension.get("/health", token=None)
    assert result.status == 200
    assert result.json() == {"status": "ok"}


def test_metrics_need_the_token_and_count_hits_misses_and_errors(
    extension: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    assert extension.get("/metrics", token=None).status == 401
    moto_server.client("secretsmanager").create_secret(Name=f"{unique}/m", SecretString="m-value")
    for _ in range(3):
        assert extension.get(f"/secretsmanager/get?secretId={unique}/m").status == 200
    assert extension.get(f"/secretsmanager/get?secretId={unique}/absent").status == 404
    sm = _metrics(extension)["secretsmanager"]
    assert sm["hits"] == 2
    assert sm["misses"] == 2
    assert sm["upstreamCalls"] == 2
    assert sm["upstreamErrors"] == {"ResourceNotFoundException": 1}
    assert sm["entries"] == 1
    assert isinstance(sm["bytes"], int) and sm["bytes"] > len("m-value")
    latency = sm["upstreamLatencyMs"]
    assert (
        isinstance(latency, dict)
        and latency["p50"] is not None
        and latency["p99"] >= latency["p50"]
    )
    text = extension.get("/metrics").body.decode()
    assert "m-value" not in text and unique not in text


@pytest.fixture
def prefetch_env(moto_server: MotoServer, unique: str) -> dict[str, str]:
    sm, ssm, kms = (moto_server.client(s) for s in ("secretsmanager", "ssm", "kms"))
    sm.create_secret(Name=f"{unique}/db", SecretString="prefetched-db")
    ssm.put_parameter(Name=f"/{unique}/key", Value="prefetched-key", Type="SecureString")
    ssm.put_parameter(Name=f"/{unique}/tree/a", Value="tree-a", Type="String")
    ssm.put_parameter(Name=f"/{unique}/tree/b", Value="tree-b", Type="String")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"prefetched-plain")["CiphertextBlob"]
    return {
        "MY_CIPHERTEXT": base64.b64encode(blob).decode(),
        "SECRETCACHE_PREFETCH": (
            f"sm:{unique}/db,ssm:/{unique}/key?withDecryption=true,"
            f"ssmpath:/{unique}/tree/,kms:MY_CIPHERTEXT"
        ),
    }


def test_prefetched_items_are_hits_on_first_read(
    start_extension: StartExtension, prefetch_env: dict[str, str], unique: str
) -> None:
    extension = start_extension(**prefetch_env)
    before = _metrics(extension)
    assert before["secretsmanager"]["upstreamCalls"] == 1
    assert before["kms"]["upstreamCalls"] == 1

    secret = extension.get(f"/secretsmanager/get?secretId={unique}/db")
    assert secret.json()["SecretString"] == "prefetched-db"
    key = extension.get(f"/systemsmanager/parameters/get?name=/{unique}/key&withDecryption=true")
    assert key.json()["Parameter"]["Value"] == "prefetched-key"
    tree_a = extension.get(f"/systemsmanager/parameters/get?name=/{unique}/tree/a")
    assert tree_a.json()["Parameter"]["Value"] == "tree-a"
    plain = extension.request(
        "POST",
        "/kms/decrypt",
        body=json.dumps({"CiphertextBlob": prefetch_env["MY_CIPHERTEXT"]}).encode(),
    )
    assert base64.b64decode(plain.json()["Plaintext"]) == b"prefetched-plain"

    after = _metrics(extension)
    for service in ("secretsmanager", "ssm", "kms"):
        assert after[service]["upstreamCalls"] == before[service]["upstreamCalls"], service
    assert after["secretsmanager"]["hits"] == 1
    assert after["ssm"]["hits"] == 2
    assert after["kms"]["hits"] == 1
    logs = extension.logs()
    assert "prefetched-db" not in logs and "prefetched-plain" not in logs


def test_prefetch_failure_is_logged_and_start_up_goes_on(
    start_extension: StartExtension, unique: str
) -> None:
    extension = start_extension(SECRETCACHE_PREFETCH=f"sm:{unique}/does-not-exist")
    assert extension.get("/health", token=None).json() == {"status": "ok"}
    failures = [json.loads(line) for line in extension.lines if '"prefetch.failed"' in line]
    assert failures and failures[0]["item"] == f"sm:{unique}/does-not-exist"
    assert failures[0]["errorType"] == "ResourceNotFoundException"


def test_required_prefetch_failure_stops_start_up_naming_the_item(
    start_extension: StartExtension, unique: str
) -> None:
    extension = start_extension(
        wait=False,
        SECRETCACHE_PREFETCH=f"sm:{unique}/does-not-exist",
        SECRETCACHE_PREFETCH_REQUIRED="true",
    )
    assert extension.process is not None
    assert extension.process.wait(30) != 0
    assert f"sm:{unique}/does-not-exist" in extension.logs()


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("vault:x", "KIND"),
        ("ssm:/x?colour=red", "colour"),
        ("kms:NOT_SET_ANYWHERE", "NOT_SET_ANYWHERE"),
        ("ssm:/x?withDecryption=perhaps", "withDecryption"),
    ],
)
def test_bad_prefetch_specs_refuse_to_start(
    start_extension: StartExtension, spec: str, named: str
) -> None:
    extension = start_extension(wait=False, SECRETCACHE_PREFETCH=spec)
    assert extension.process is not None
    assert extension.process.wait(30) != 0
    logs = extension.logs()
    assert "SECRETCACHE_PREFETCH" in logs and named in logs


def test_emf_line_at_stop_carries_the_counters(
    start_extension: StartExtension, moto_server: MotoServer, unique: str
) -> None:
    moto_server.client("secretsmanager").create_secret(
        Name=f"{unique}/emf", SecretString="emf-value"
    )
    extension = start_extension(
        SECRETCACHE_METRICS="emf",
        SECRETCACHE_METRICS_NAMESPACE="TestSpace",
        AWS_LAMBDA_FUNCTION_NAME="emf-fn",
    )
    for _ in range(2):
        extension.get(f"/secretsmanager/get?secretId={unique}/emf")
    assert extension.stop() == 0
    emf = [json.loads(line) for line in extension.lines if line.startswith('{"FunctionName"')]
    assert len(emf) == 1
    record = emf[0]
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "TestSpace"
    assert directive["Dimensions"] == [["FunctionName"]]
    assert record["FunctionName"] == "emf-fn"
    assert record["SecretsManagerHits"] == 1
    assert record["SecretsManagerMisses"] == 1
    assert record["SecretsManagerUpstreamCalls"] == 1
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"SecretsManagerHits", "SsmMisses", "KmsUpstreamCalls"} <= names
    assert all(name in record for name in names)
    assert "emf-value" not in json.dumps(record)


def test_batchget_by_partial_arns_never_serves_or_caches_one_secret_under_another_id(
    extension: ExtensionProcess, moto_server: MotoServer, unique: str
) -> None:
    sm = moto_server.client("secretsmanager")
    prod_arn = sm.create_secret(Name=f"{unique}/rt/prod", SecretString="prod-value")["ARN"]
    db_arn = sm.create_secret(Name=f"{unique}/rt/prod-db", SecretString="db-value")["ARN"]
    prod_partial, db_partial = prod_arn[:-7], db_arn[:-7]
    assert db_arn.startswith(prod_partial)  # the shape that prefix matching got wrong

    query = f"secretId={quote(prod_partial, safe='')}&secretId={quote(db_partial, safe='')}"
    batch = extension.get(f"/secretsmanager/batchget?{query}")
    assert batch.status == 200, batch.body
    assert [v["SecretString"] for v in batch.json()["SecretValues"]] == ["prod-value", "db-value"]

    single = extension.get(f"/secretsmanager/get?secretId={quote(prod_partial, safe='')}")
    assert single.status == 200
    assert single.json()["SecretString"] == "prod-value"
    assert single.json()["ARN"] == prod_arn

    bogus = prod_partial[: -len("rt/prod")]  # ...:secret:<unique>/ names no secret
    mixed = extension.get(
        f"/secretsmanager/batchget?secretId={quote(bogus, safe='')}"
        f"&secretId={quote(f'{unique}/rt/prod', safe='')}"
    )
    assert mixed.status == 200, mixed.body
    body = mixed.json()
    assert [v["Name"] for v in body["SecretValues"]] == [f"{unique}/rt/prod"]
    assert [e["SecretId"] for e in body["Errors"]] == [bogus]
    again = extension.get(f"/secretsmanager/get?secretId={quote(bogus, safe='')}")
    assert again.status == 404, again.body
