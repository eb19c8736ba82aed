"""The Secrets Manager Agent's HTTP behaviour (shared/agent-http.md), case by case.

A real extension process, moto server as AWS. Row numbers name the table's rows. Where we
answer differently on purpose (JSON bodies for the Agent's plain-text errors), the test says so.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import pytest

from tests.support.extension_process import ExtensionProcess
from tests.support.shapes import SECRET_KEYS
from tools.moto_server import MotoServer
from tools.net import HttpResult, free_port

EPOCH_TEXT = re.compile(r"^\d+(\.\d+)?$")
AGENT_KEYS = ["ARN", "Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"]
OTHER_METHODS = ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]
XFF = {"X-Forwarded-For": "54.239.28.85"}


@dataclass
class Seeded:
    name: str
    value: str
    arn: str
    version_id: str
    created_epoch: float
    pending_id: str
    pending_value: str
    slashed: str
    binary: str
    parameter: str


@pytest.fixture(scope="module")
def aws(moto_server: MotoServer) -> Seeded:
    prefix = "a" + uuid.uuid4().hex[:8]
    sm = moto_server.client("secretsmanager")
    name = f"{prefix}-MyTest"
    created = sm.create_secret(Name=name, SecretString="hunter2-" + prefix)
    current = sm.get_secret_value(SecretId=name)
    pending = sm.put_secret_value(
        SecretId=name, SecretString="pending-" + prefix, VersionStages=["AWSPENDING"]
    )
    slashed = f"{prefix}/My/Test"
    sm.create_secret(Name=slashed, SecretString="slashed-" + prefix)
    binary = f"{prefix}-bin"
    sm.create_secret(Name=binary, SecretBinary=b"\x00\x01binary")
    parameter = f"/{prefix}/plain"
    moto_server.client("ssm").put_parameter(Name=parameter, Value="p-" + prefix, Type="String")
    return Seeded(
        name=name,
        value="hunter2-" + prefix,
        arn=created["ARN"],
        version_id=created["VersionId"],
        created_epoch=current["CreatedDate"].astimezone(timezone.utc).timestamp(),
        pending_id=pending["VersionId"],
        pending_value="pending-" + prefix,
        slashed=slashed,
        binary=binary,
        parameter=parameter,
    )


@pytest.fixture(scope="module")
def ext(moto_server: MotoServer) -> Iterator[ExtensionProcess]:
    """The default: AWS's extension on /secretsmanager/get, the Agent on /v1 and /ping."""
    process = ExtensionProcess(moto_server.env()).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def agent_ext(moto_server: MotoServer) -> Iterator[ExtensionProcess]:
    """SECRETCACHE_COMPAT=agent: /secretsmanager/get answers as the Agent too."""
    process = ExtensionProcess({**moto_server.env(), "SECRETCACHE_COMPAT": "agent"}).start()
    yield process
    process.stop()


def agent_ok(result: HttpResult) -> dict[str, Any]:
    assert result.status == 200, result.body[:300]
    body = json.loads(result.body)
    assert "ResultMetadata" not in body
    return body


def agent_error(result: HttpResult, status: int) -> dict[str, Any]:
    """The Agent's error shape: `{"__type", "message"}`, compact, keys sorted."""
    assert result.status == status, result.body[:300]
    body = json.loads(result.body)
    assert list(body) == ["__type", "message"], body
    assert result.body == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert body["message"]
    return body


def ours_error(result: HttpResult, status: int) -> dict[str, Any]:
    assert result.status == status, result.body[:300]
    body = json.loads(result.body)
    assert list(body) == ["errorType", "message"], body
    return body


# Rows 1-2, 25: /ping -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [True, None, "wrong"], ids=["token", "no-token", "wrong-token"])
def test_row1_ping_is_healthy_with_or_without_a_token(ext: ExtensionProcess, token: Any) -> None:
    result = ext.get("/ping", token=token)
    assert (result.status, result.body) == (200, b"healthy")


def test_row2_an_unknown_path_is_404(ext: ExtensionProcess) -> None:
    assert ext.get("/pong").status == 404


# Rows 3-8: parsing -------------------------------------------------------------------------


def test_row3_row4_missing_secret_id_is_400(agent_ext: ExtensionProcess) -> None:
    for query in ("", "?versionStage=AWSPENDING"):
        body = agent_error(agent_ext.get(f"/secretsmanager/get{query}"), 400)
        assert "secretId" in body["message"]


@pytest.mark.parametrize("path", ["/v1/", "/v1", "/v1/?versionStage=AWSPENDING"])
def test_row5_v1_without_an_id_is_400_missing_secret_id(ext: ExtensionProcess, path: str) -> None:
    assert "missing secret ID" in agent_error(ext.get(path), 400)["message"]


def test_row6_unknown_query_parameter_is_400_under_compat_agent(
    agent_ext: ExtensionProcess, ext: ExtensionProcess, aws: Seeded
) -> None:
    query = f"secretId={aws.name}&versionStage=AWSPENDING&abc=XXXXXXXXXXXX"
    body = agent_error(agent_ext.get(f"/secretsmanager/get?{query}"), 400)
    assert body["message"] == "unknown parameter: abc"
    # The default (AWS's extension) ignores it, as before.
    assert ext.get(f"/secretsmanager/get?{query}").status == 200


def test_row7_unknown_query_parameter_on_v1_is_400(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/v1/{aws.name}?versionStage=AWSPENDING&abc=XXXXXXXXXXXX")
    assert agent_error(result, 400)["message"] == "unknown parameter: abc"


@pytest.mark.parametrize("value", ["123", "yes", "maybe"])
def test_row8_a_bad_refresh_now_is_400(
    ext: ExtensionProcess, agent_ext: ExtensionProcess, aws: Seeded, value: str
) -> None:
    assert (
        "refreshNow" in agent_error(ext.get(f"/v1/{aws.name}?refreshNow={value}"), 400)["message"]
    )
    query = f"/secretsmanager/get?secretId={aws.name}&refreshNow={value}"
    assert "refreshNow" in agent_error(agent_ext.get(query), 400)["message"]


@pytest.mark.parametrize("value", ["true", "1", "false", "0", "FALSE", "True"])
def test_row8_refresh_now_takes_the_agents_values_in_any_case(
    ext: ExtensionProcess, aws: Seeded, value: str
) -> None:
    assert agent_ok(ext.get(f"/v1/{aws.name}?refreshNow={value}"))["SecretString"] == aws.value


# Rows 9-13, 17-19: bodies ------------------------------------------------------------------


def check_agent_body(body: dict[str, Any], aws: Seeded) -> None:
    assert list(body) == AGENT_KEYS
    assert body["ARN"] == aws.arn
    assert body["Name"] == aws.name
    assert body["VersionId"] == aws.version_id
    assert body["SecretString"] == aws.value
    assert body["VersionStages"] == ["AWSCURRENT"]
    assert isinstance(body["CreatedDate"], str) and EPOCH_TEXT.match(body["CreatedDate"])
    assert abs(float(body["CreatedDate"]) - aws.created_epoch) < 0.001


@pytest.mark.parametrize("refresh", ["", "?refreshNow=1"], ids=["row9", "row10"])
def test_row9_row10_v1_answers_with_the_agents_fields_order_and_dates(
    ext: ExtensionProcess, aws: Seeded, refresh: str
) -> None:
    check_agent_body(agent_ok(ext.get(f"/v1/{aws.name}{refresh}")), aws)


def test_row9_compat_agent_secretsmanager_get_answers_as_the_agent(
    agent_ext: ExtensionProcess, aws: Seeded
) -> None:
    first = agent_ext.get(f"/secretsmanager/get?secretId={aws.name}")
    second = agent_ext.get(f"/secretsmanager/get?secretId={aws.name}")  # a fast-path hit
    check_agent_body(agent_ok(first), aws)
    assert second.body == first.body


def test_row9_by_arn_the_arn_is_the_one_asked_for(ext: ExtensionProcess, aws: Seeded) -> None:
    assert agent_ok(ext.get(f"/v1/{aws.arn}"))["ARN"] == aws.arn


def test_binary_secret_has_base64_and_no_secret_string(ext: ExtensionProcess, aws: Seeded) -> None:
    body = agent_ok(ext.get(f"/v1/{aws.binary}"))
    assert list(body) == [
        "ARN",
        "Name",
        "VersionId",
        "SecretBinary",
        "VersionStages",
        "CreatedDate",
    ]
    assert body["SecretBinary"] == "AAFiaW5hcnk="


def test_row11_version_stage_is_reflected(ext: ExtensionProcess, aws: Seeded) -> None:
    body = agent_ok(ext.get(f"/v1/{aws.name}?versionStage=AWSPENDING"))
    assert body["VersionStages"] == ["AWSPENDING"]
    assert (body["SecretString"], body["VersionId"]) == (aws.pending_value, aws.pending_id)


def test_row12_row13_version_id_and_all_options_are_reflected(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    assert agent_ok(ext.get(f"/v1/{aws.name}?versionId={aws.version_id}"))["VersionId"] == (
        aws.version_id
    )
    query = f"versionStage=AWSPENDING&versionId={aws.pending_id}&refreshNow=true"
    body = agent_ok(ext.get(f"/v1/{aws.name}?{query}"))
    assert (body["VersionId"], body["VersionStages"]) == (aws.pending_id, ["AWSPENDING"])


def test_row17_x_vault_token_is_accepted(ext: ExtensionProcess, aws: Seeded) -> None:
    result = ext.get(f"/v1/{aws.name}", token=None, headers={"X-Vault-Token": ext.token})
    assert agent_ok(result)["SecretString"] == aws.value


def test_row18_row19_raw_slashes_after_v1_are_part_of_the_id(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    for query in ("", "?versionStage=AWSCURRENT&refreshNow=0"):
        body = agent_ok(ext.get(f"/v1/{aws.slashed}{query}"))
        assert (body["Name"], body["SecretString"]) == (aws.slashed, "slashed-" + aws.slashed[:9])
    # Ours beyond the Agent: an escaped slash is decoded too (a secret id never holds a "%").
    assert agent_ok(ext.get(f"/v1/{aws.slashed.replace('/', '%2F')}"))["Name"] == aws.slashed


# Rows 14-16: AWS errors and caching --------------------------------------------------------


@pytest.mark.parametrize("refresh", ["", "?refreshNow=true"])
def test_row14_an_aws_error_is_the_agents_json_with_aws_status(
    ext: ExtensionProcess, agent_ext: ExtensionProcess, refresh: str
) -> None:
    missing = "nope-" + uuid.uuid4().hex[:8]
    body = agent_error(ext.get(f"/v1/{missing}{refresh}"), 400)
    assert body["__type"] == "ResourceNotFoundException"
    sep = "&" if refresh else ""
    result = agent_ext.get(f"/secretsmanager/get?secretId={missing}{sep}{refresh[1:]}")
    assert agent_error(result, 400)["__type"] == "ResourceNotFoundException"
    # Our own routes keep our richer statuses.
    ours = ours_error(ext.get(f"/secretsmanager/get?secretId={missing}"), 404)
    assert ours["errorType"] == "ResourceNotFoundException"


def test_row16_cached_until_refresh_now(ext: ExtensionProcess, moto_server: MotoServer) -> None:
    name = "c" + uuid.uuid4().hex[:8]
    sm = moto_server.client("secretsmanager")
    sm.create_secret(Name=name, SecretString="one")
    first = ext.get(f"/v1/{name}")
    sm.put_secret_value(SecretId=name, SecretString="two")
    second = ext.get(f"/v1/{name}")
    third = ext.get(f"/v1/{name}?refreshNow=true")
    assert first.body == second.body
    assert agent_ok(third)["SecretString"] == "two"
    assert agent_ok(third)["VersionStages"] == ["AWSCURRENT"]


def test_v1_hits_are_served_by_the_fast_path_and_match_aiohttps_bytes(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    fast = ext.get(f"/v1/{aws.slashed}")
    assert "server" not in fast.headers  # the fast path sends no Server header; aiohttp does
    escaped = ext.get(f"/v1/{aws.slashed.replace('/', '%2F')}")  # an escape: aiohttp answers
    assert "server" in escaped.headers
    assert escaped.body == fast.body
    refused = ext.get(f"/v1/{aws.slashed}", token="wrong")
    assert agent_error(refused, 403)["__type"] == "BadToken"


def test_agent_and_aws_shapes_of_one_secret_are_cached_apart(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    agent = agent_ok(ext.get(f"/v1/{aws.name}"))
    aws_shaped = json.loads(ext.get(f"/secretsmanager/get?secretId={aws.name}").body)
    again = agent_ok(ext.get(f"/v1/{aws.name}"))
    assert list(aws_shaped) == SECRET_KEYS and aws_shaped["ResultMetadata"] == {}
    assert list(agent) == list(again) == AGENT_KEYS


# Rows 20-23: tokens and X-Forwarded-For ----------------------------------------------------


@pytest.mark.parametrize(
    ("token", "headers"),
    [(None, {}), ("wrong", {}), (None, {"X-Vault-Token": "click slipers"})],
    ids=["missing", "wrong", "wrong-vault"],
)
def test_row20_row21_row22_a_missing_or_wrong_token_is_403_on_agent_routes(
    ext: ExtensionProcess, agent_ext: ExtensionProcess, aws: Seeded, token: Any, headers: Any
) -> None:
    assert agent_error(ext.get(f"/v1/{aws.name}", token=token, headers=headers), 403)
    result = agent_ext.get(f"/secretsmanager/get?secretId={aws.name}", token=token, headers=headers)
    assert agent_error(result, 403)["__type"] == "BadToken"
    # Our routes keep 401 (in both modes), as before.
    ours_error(
        ext.get(f"/secretsmanager/get?secretId={aws.name}", token=token, headers=headers), 401
    )
    params = f"/systemsmanager/parameters/get?name={aws.parameter}"
    ours_error(agent_ext.get(params, token=token, headers=headers), 401)


def test_row20_refresh_now_without_a_token_is_403(ext: ExtensionProcess, aws: Seeded) -> None:
    agent_error(ext.get(f"/v1/{aws.name}?refreshNow=true", token=None), 403)


def xff_routes(aws: Seeded) -> list[tuple[str, str]]:
    return [
        ("GET", f"/secretsmanager/get?secretId={aws.name}"),
        ("GET", f"/systemsmanager/parameters/get?name={aws.parameter}"),
        ("GET", f"/secretsmanager/batchget?secretId={aws.name}"),
        ("GET", f"/v1/{aws.name}"),
        ("GET", "/ping"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/kms/decrypt"),
        ("GET", "/nowhere"),
    ]


@pytest.mark.parametrize("token", [True, None], ids=["token", "no-token"])
def test_row23_x_forwarded_for_is_400_on_every_route_with_a_reason(
    ext: ExtensionProcess, agent_ext: ExtensionProcess, aws: Seeded, token: Any
) -> None:
    for process in (ext, agent_ext):
        # Warm the hot reads, so a fast-path hit would be served if the header were not checked.
        assert process.get(f"/secretsmanager/get?secretId={aws.name}").status == 200
        assert process.get(f"/systemsmanager/parameters/get?name={aws.parameter}").status == 200
        for method, path in xff_routes(aws):
            for value in ("54.239.28.85", "127.0.0.1", ""):
                result = process.request(
                    method, path, token=token, headers={"X-Forwarded-For": value}
                )
                assert result.status == 400, (method, path, result.body[:200])
                body = json.loads(result.body)
                message = body["message"]
                assert "X-Forwarded-For" in message and "proxy" in message, body
                assert body.get("errorType", body.get("__type")) == "Forwarded"


def test_row23_x_forwarded_for_in_any_case_on_the_fast_path(
    ext: ExtensionProcess, aws: Seeded
) -> None:
    path = f"/secretsmanager/get?secretId={aws.name}"
    assert ext.get(path).status == 200
    for name in ("x-forwarded-for", "X-FORWARDED-FOR"):
        assert (
            ours_error(ext.get(path, headers={name: "10.0.0.1"}), 400)["errorType"] == "Forwarded"
        )


# Row 27: methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", OTHER_METHODS)
def test_row27_other_methods_are_405_after_the_token_check(
    ext: ExtensionProcess, agent_ext: ExtensionProcess, aws: Seeded, method: str
) -> None:
    for process, path in (
        (ext, f"/v1/{aws.name}"),
        (agent_ext, f"/secretsmanager/get?secretId={aws.name}"),
        (ext, "/ping"),
    ):
        result = process.request(method, path)
        assert result.status == 405, (method, path)
        if method != "HEAD":
            agent_error(result, 405)
        # The token is checked first (row order): without one, 403, except on /ping.
        expected = 405 if path == "/ping" else 403
        assert process.request(method, path, token=None).status == expected


# Rows 28-29: roleArn (the role is assumed through moto's STS; tests/integration/test_roles.py
# covers accounts, the role bound and STS refusals) ------------------------------------------


def test_row28_role_arn_reads_through_the_role(ext: ExtensionProcess, aws: Seeded) -> None:
    role = "arn:aws:iam::123456789012:role/TestRole"
    for path in (
        f"/v1/{aws.name}?roleArn={role}",
        f"/v1/{aws.name}?versionStage=AWSCURRENT&roleArn={role}",
    ):
        result = ext.get(path)
        assert result.status == 200, result.body[:300]
        body = json.loads(result.body)
        assert list(body) == AGENT_KEYS
        assert body["SecretString"] == aws.value


@pytest.mark.parametrize(
    "bad",
    ["not-a-valid-arn", "arn:aws:iam::12345:role/x", "", 'arn:aws:iam::123456789012:role/a"}'],
)
def test_row29_a_malformed_role_arn_is_400_with_the_agents_message(
    ext: ExtensionProcess, aws: Seeded, bad: str
) -> None:
    from urllib.parse import quote

    result = ext.get(f"/v1/{aws.name}?roleArn={quote(bad)}")
    assert agent_error(result, 400)["message"] == (
        "invalid roleArn format, expected arn:<partition>:iam::<account>:role/<name>"
    )


# The switch --------------------------------------------------------------------------------


def test_default_secretsmanager_get_is_still_aws_shaped(ext: ExtensionProcess, aws: Seeded) -> None:
    body = json.loads(ext.get(f"/secretsmanager/get?secretId={aws.name}").body)
    assert list(body) == SECRET_KEYS
    assert body["CreatedDate"].endswith("Z")


def test_compat_agent_leaves_our_other_routes_ours(
    agent_ext: ExtensionProcess, aws: Seeded
) -> None:
    body = json.loads(agent_ext.get(f"/systemsmanager/parameters/get?name={aws.parameter}").body)
    assert body["ResultMetadata"] == {}
    missing = agent_ext.get("/systemsmanager/parameters/get?name=/nope/" + uuid.uuid4().hex)
    assert ours_error(missing, 404)["errorType"] == "ParameterNotFound"


def test_an_invalid_compat_value_stops_start_up_naming_it(moto_server: MotoServer) -> None:
    process = ExtensionProcess({**moto_server.env(), "SECRETCACHE_COMPAT": "sma"})
    process.start(wait=False)
    assert process.process is not None
    try:
        code = process.process.wait(20)
    finally:
        process.stop()
    time.sleep(0.1)  # let the pump threads drain the pipes
    assert code != 0
    assert "SECRETCACHE_COMPAT='sma'" in process.logs()
    assert process.token not in process.logs()


def test_token_from_aws_container_authorization_token_file(
    moto_server: MotoServer, aws: Seeded, tmp_path: Any
) -> None:
    token = "snap-" + uuid.uuid4().hex
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    process = ExtensionProcess(
        {
            **moto_server.env(),
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": f"file://{token_file}",
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
        }
    )
    del process.env["AWS_SESSION_TOKEN"]  # as under SnapStart: no session token is set
    process.start()
    try:
        assert process.get(f"/v1/{aws.name}", token=token).status == 200
        assert process.get(f"/v1/{aws.name}", token=process.token).status == 403
        assert token not in process.logs()
    finally:
        process.stop()
