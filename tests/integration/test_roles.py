"""Reads through an assumed role (`roleArn`), against moto server, on both upstreams.

moto's STS answers AssumeRole with credentials that moto then routes to the role's account (it
finds the account of an access key among the keys it issued), so a secret created in account B
through a session in B is readable only with a role of B. With moto's IAM enforcement switched
on (INITIAL_NO_AUTH_ACTION_COUNT), STS refuses an AssumeRole the caller's policy does not allow,
as AWS does; moto then also checks every request's SigV4 signature.

moto gap: AssumeRole does not need the role to exist (AWS refuses a role that does not), and
moto's credentials are random, so the test that no credential reaches a log or an error uses a
small local STS that answers AssumeRole with credentials the test knows (STS's real XML).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

import boto3
import pytest

from tests.support.extension_process import ExtensionProcess
from tools.moto_server import REGION, MotoServer
from tools.net import free_port

ACCOUNT_B = "222222222222"
UPSTREAMS = ["lean", "sdk"]


def role(name: str, account: str = ACCOUNT_B) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def session_in(moto: MotoServer, role_arn: str, service: str) -> Any:
    """A boto3 client with credentials of `role_arn` (moto puts its resources in that account)."""
    found = moto.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="seed")
    credentials = found["Credentials"]
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=moto.url,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def body_of(result: Any, status: int = 200) -> dict[str, Any]:
    assert result.status == status, result.body[:400]
    parsed: dict[str, Any] = json.loads(result.body)
    return parsed


@pytest.fixture(params=UPSTREAMS)
def upstream(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_secret_of_another_account_is_read_only_through_its_role(
    moto_server: MotoServer,
    start_extension: Callable[..., ExtensionProcess],
    unique: str,
    upstream: str,
) -> None:
    reader = role(f"{unique}-reader")
    name = f"{unique}/cross"
    created = session_in(moto_server, reader, "secretsmanager").create_secret(
        Name=name, SecretString="in-account-b"
    )
    assert f":{ACCOUNT_B}:" in created["ARN"]
    ext = start_extension(SECRETCACHE_UPSTREAM=upstream, AWS_LAMBDA_FUNCTION_NAME="my-fn")

    through_role = body_of(ext.get(f"/secretsmanager/get?secretId={name}&roleArn={reader}"))
    assert through_role["SecretString"] == "in-account-b"
    assert through_role["ARN"] == created["ARN"]
    # Without the role the function's own account is asked: it has no such secret.
    assert ext.get(f"/secretsmanager/get?secretId={name}").status == 404
    agent = body_of(ext.get(f"/v1/{name}?roleArn={reader}"))
    assert agent["SecretString"] == "in-account-b"
    assert "ResultMetadata" not in agent
    batch = body_of(ext.get(f"/secretsmanager/batchget?secretId={name}&roleArn={reader}"))
    assert [v["SecretString"] for v in batch["SecretValues"]] == ["in-account-b"]
    # The batch warmed the single read's entry of that role (not the role-less one).
    assert ext.get(f"/secretsmanager/get?secretId={name}").status == 404
    # SECRETCACHE_COMPAT=agent: /secretsmanager/get takes roleArn with the Agent's rules.
    agent_mode = start_extension(SECRETCACHE_UPSTREAM=upstream, SECRETCACHE_COMPAT="agent")
    answered = body_of(agent_mode.get(f"/secretsmanager/get?secretId={name}&roleArn={reader}"))
    assert answered == agent
    assert body_of(agent_mode.get(f"/secretsmanager/get?secretId={name}"), 400)["__type"] == (
        "ResourceNotFoundException"
    )


def test_each_role_has_its_own_cache_entries(
    moto_server: MotoServer,
    start_extension: Callable[..., ExtensionProcess],
    unique: str,
    upstream: str,
) -> None:
    first, second = role(f"{unique}-one"), role(f"{unique}-two")
    name = f"{unique}/shared"
    sm_b = session_in(moto_server, first, "secretsmanager")
    sm_b.create_secret(Name=name, SecretString="v1")
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="own-account")
    ext = start_extension(SECRETCACHE_UPSTREAM=upstream)

    read = "/secretsmanager/get?secretId=" + name
    assert body_of(ext.get(f"{read}&roleArn={first}"))["SecretString"] == "v1"
    assert body_of(ext.get(read))["SecretString"] == "own-account"
    sm_b.put_secret_value(SecretId=name, SecretString="v2")
    # Same account, same secret: the first role's entry is still fresh, the second role's new.
    assert body_of(ext.get(f"{read}&roleArn={first}"))["SecretString"] == "v1"
    assert body_of(ext.get(f"{read}&roleArn={second}"))["SecretString"] == "v2"
    assert body_of(ext.get(f"{read}&roleArn={first}&refreshNow=true"))["SecretString"] == "v2"
    assert body_of(ext.get(read))["SecretString"] == "own-account"


def test_a_new_role_beyond_max_roles_is_refused_and_none_is_evicted(
    moto_server: MotoServer,
    start_extension: Callable[..., ExtensionProcess],
    unique: str,
    upstream: str,
) -> None:
    name = f"{unique}/bounded"
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="x")
    ext = start_extension(SECRETCACHE_UPSTREAM=upstream, SECRETCACHE_MAX_ROLES="2")
    own = [role(f"{unique}-r{i}", "123456789012") for i in range(3)]
    read = f"/secretsmanager/get?secretId={name}&refreshNow=true&roleArn="
    assert ext.get(read + own[0]).status == 200
    assert ext.get(read + own[1]).status == 200
    refused = body_of(ext.get(read + own[2]), 400)
    assert refused["errorType"] == "MaxRolesExceeded"
    assert "SECRETCACHE_MAX_ROLES=2" in refused["message"]
    agent = body_of(ext.get(f"/v1/{name}?roleArn={own[2]}"), 400)
    assert agent["__type"] == "MaxRolesExceeded"
    # The roles in use keep working: the bound refuses, it never evicts.
    assert ext.get(read + own[0]).status == 200
    assert ext.get(read + own[1]).status == 200


def test_role_arn_is_validated_and_refused_where_it_does_not_apply(
    start_extension: Callable[..., ExtensionProcess],
) -> None:
    ext = start_extension()
    bad = body_of(
        ext.get("/secretsmanager/get?secretId=x&roleArn=" + quote('arn:aws:iam::1"}')), 400
    )
    assert bad["message"] == (
        "invalid roleArn format, expected arn:<partition>:iam::<account>:role/<name>"
    )
    good = role("r", "123456789012")
    for path in (
        f"/systemsmanager/parameters/get?name=/x&roleArn={good}",
        f"/systemsmanager/parameters/getbatch?name=/x&roleArn={good}",
        f"/systemsmanager/parameters/getbypath?path=/x&roleArn={good}",
    ):
        assert body_of(ext.get(path), 400)["errorType"] == "UnsupportedParameter", path


# STS refusing: moto's IAM enforcement ---------------------------------------------------------


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture(scope="module")
def enforcing_moto() -> Iterator[tuple[MotoServer, dict[str, str], str]]:
    """A moto server that enforces IAM after the setup below (6 unauthenticated calls).

    The function runs as the role `<prefix>-fn` (session credentials, as in Lambda), which may
    read secrets and assume only `<prefix>-allowed`; that role trusts the function's session
    and may read secrets. Yields the server, the function's credentials and the prefix.
    """
    setup_calls = 6
    moto = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(setup_calls)}).start()
    try:
        prefix = f"enf{free_port()}"
        iam = moto.client("iam")
        allowed = role(f"{prefix}-allowed", "123456789012")
        anyone = _policy({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"})
        iam.create_role(RoleName=f"{prefix}-fn", AssumeRolePolicyDocument=anyone)  # 1
        iam.put_role_policy(  # 2
            RoleName=f"{prefix}-fn",
            PolicyName="fn",
            PolicyDocument=_policy(
                {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": allowed},
            ),
        )
        session_arn = f"arn:aws:sts::123456789012:assumed-role/{prefix}-fn/lambda"
        trust_fn = _policy(
            {"Effect": "Allow", "Principal": {"AWS": session_arn}, "Action": "sts:AssumeRole"}
        )
        iam.create_role(RoleName=f"{prefix}-allowed", AssumeRolePolicyDocument=trust_fn)  # 3
        iam.put_role_policy(  # 4
            RoleName=f"{prefix}-allowed",
            PolicyName="read",
            PolicyDocument=_policy(
                {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}
            ),
        )
        moto.client("secretsmanager").create_secret(Name=f"{prefix}/s", SecretString="ok")  # 5
        found = moto.client("sts").assume_role(  # 6
            RoleArn=role(f"{prefix}-fn", "123456789012"), RoleSessionName="lambda"
        )["Credentials"]
        credentials = {
            "AWS_ACCESS_KEY_ID": found["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": found["SecretAccessKey"],
            "AWS_SESSION_TOKEN": found["SessionToken"],
        }
        yield moto, credentials, prefix
    finally:
        moto.stop()


def test_sts_access_denied_is_403_naming_the_role(
    enforcing_moto: tuple[MotoServer, dict[str, str], str], upstream: str
) -> None:
    moto, credentials, prefix = enforcing_moto
    process = ExtensionProcess(
        {**moto.env(), **credentials, "SECRETCACHE_UPSTREAM": upstream, "SECRETCACHE_COMPAT": "aws"}
    ).start()
    try:
        allowed = role(f"{prefix}-allowed", "123456789012")
        denied = role(f"{prefix}-denied", "123456789012")
        name = f"{prefix}/s"
        # Enforcement is on and the signatures hold: the user and the allowed role read.
        assert body_of(process.get(f"/secretsmanager/get?secretId={name}"))["SecretString"] == "ok"
        through = process.get(f"/secretsmanager/get?secretId={name}&roleArn={allowed}")
        assert body_of(through)["SecretString"] == "ok"
        ours = body_of(process.get(f"/secretsmanager/get?secretId={name}&roleArn={denied}"), 403)
        assert ours["errorType"] == "AccessDenied"
        assert denied in ours["message"]
        agent = body_of(process.get(f"/v1/{name}?roleArn={denied}"), 403)
        assert agent == {
            "__type": "AccessDeniedException",
            "message": f"Failed to create caching client from role: {denied}",
        }
        # A refused role takes no place under SECRETCACHE_MAX_ROLES and is asked again next time.
        assert process.get(f"/v1/{name}?roleArn={denied}").status == 403
    finally:
        process.stop()


# Credentials never leak: a local STS whose answer the test knows --------------------------------

KNOWN_KEY = "ASIAKNOWNKEYFORTESTS"
KNOWN_SECRET = "known-secret-access-key-0123456789abcdefXYZ"
KNOWN_TOKEN = "known-session-token-" + "Q" * 200
STS_DENIED = (
    b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
    b"<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/fn is not authorized"
    b" to perform: sts:AssumeRole on resource: ROLE</Message></Error>"
    b"<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
)


class LocalSts:
    """STS on loopback: AssumeRole answers KNOWN_* (or AccessDenied for a role named *denied)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, list[str]]]] = []
        #: Seconds from now the credentials expire (the Expiration STS answers).
        self.expires_in = 3600.0
        #: Answer the next AssumeRole with STS's 500 InternalFailure.
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                outer.requests.append((dict(self.headers.items()), form))
                arn = form.get("RoleArn", [""])[0]
                expires = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + outer.expires_in)
                )
                if arn.endswith("denied"):
                    status, body = 403, STS_DENIED.replace(b"ROLE", arn.encode())
                elif outer.failing:
                    status, body = 500, STS_DENIED.replace(b"AccessDenied", b"InternalFailure")
                else:
                    status, body = (
                        200,
                        (
                            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                            "<AssumeRoleResult><Credentials>"
                            f"<AccessKeyId>{KNOWN_KEY}</AccessKeyId>"
                            f"<SecretAccessKey>{KNOWN_SECRET}</SecretAccessKey>"
                            f"<SessionToken>{KNOWN_TOKEN}</SessionToken>"
                            f"<Expiration>{expires}</Expiration></Credentials>"
                            f"<AssumedRoleUser><Arn>{arn}</Arn><AssumedRoleId>AROA:x</AssumedRoleId>"
                            "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r"
                            "</RequestId></ResponseMetadata></AssumeRoleResponse>"
                        ).encode(),
                    )
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_sts() -> Iterator[LocalSts]:
    sts = LocalSts()
    yield sts
    sts.stop()


def test_assumed_credentials_never_reach_a_log_or_an_error(
    moto_server: MotoServer,
    start_extension: Callable[..., ExtensionProcess],
    local_sts: LocalSts,
    unique: str,
    upstream: str,
) -> None:
    name = f"{unique}/leak"
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="v")
    ext = start_extension(
        SECRETCACHE_UPSTREAM=upstream,
        AWS_ENDPOINT_URL_STS=local_sts.url,
        AWS_LAMBDA_FUNCTION_NAME="fn with spaces/and:colons",
        PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL="debug",
    )
    reader = role("reader", "123456789012")
    bodies = [ext.get(f"/secretsmanager/get?secretId={name}&roleArn={reader}").body]
    for path in (
        f"/secretsmanager/get?secretId={name}-missing&roleArn={reader}",
        f"/v1/{name}-missing?roleArn={reader}",
        f"/secretsmanager/get?secretId={name}&roleArn={role('x-denied', '123456789012')}",
        f"/v1/{name}?roleArn={role('x-denied', '123456789012')}",
    ):
        result = ext.get(path)
        assert result.status >= 400
        bodies.append(result.body)
    assert json.loads(bodies[0])["SecretString"] == "v"
    ext.stop()
    seen = b"\n".join(bodies).decode() + ext.logs()
    for known in (KNOWN_SECRET, KNOWN_TOKEN, KNOWN_TOKEN[:40]):
        assert known not in seen
    # What STS received: a SigV4-signed form POST for the function's region, a session name
    # made of STS's characters from the function's name.
    headers, form = local_sts.requests[0]
    assert form["Action"] == ["AssumeRole"] and form["RoleArn"] == [reader]
    assert form["RoleSessionName"] == ["secretcache-fn-with-spaces-and-colons"]
    assert f"/{REGION}/sts/aws4_request" in headers["Authorization"]


def test_role_credentials_are_refreshed_before_they_expire_and_kept_when_sts_fails(
    moto_server: MotoServer,
    start_extension: Callable[..., ExtensionProcess],
    local_sts: LocalSts,
    unique: str,
    upstream: str,
) -> None:
    """Credentials 15 min + 3 s from expiry enter the refresh window 3 s later (on the sdk
    upstream through botocore's refreshable credentials, on the lean one through ours)."""
    name = f"{unique}/refresh"
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="v")
    ext = start_extension(SECRETCACHE_UPSTREAM=upstream, AWS_ENDPOINT_URL_STS=local_sts.url)
    read = f"/secretsmanager/get?secretId={name}&refreshNow=true&roleArn=" + role(
        "reader", "123456789012"
    )
    local_sts.expires_in = 15 * 60 + 3
    assert body_of(ext.get(read))["SecretString"] == "v"
    assert body_of(ext.get(read))["SecretString"] == "v"
    assert len(local_sts.requests) == 1  # still outside the refresh window
    time.sleep(3.5)
    assert body_of(ext.get(read))["SecretString"] == "v"
    assert len(local_sts.requests) == 2  # refreshed ahead of expiry
    # STS failing while the credentials are still good: the read goes on with the old ones.
    time.sleep(3.5)
    local_sts.failing = True
    assert body_of(ext.get(read))["SecretString"] == "v"
    assert len(local_sts.requests) >= 3


def test_the_built_layer_reads_through_a_role_and_from_another_region(
    lambda_sandbox: Callable[..., Any], moto_server: MotoServer, unique: str
) -> None:
    """The real layer on the emulator: the bundled Python's XML parser reads STS's answer."""
    reader = role(f"{unique}-layer")
    session_in(moto_server, reader, "secretsmanager").create_secret(
        Name=f"{unique}/b", SecretString="from-b"
    )
    west = boto3.client(
        "secretsmanager",
        region_name="us-west-2",
        endpoint_url=moto_server.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_secret(Name=f"{unique}/w", SecretString="from-west")["ARN"]
    emu = lambda_sandbox("urllib_handler")
    emu.init()

    def get(query: dict[str, str]) -> dict[str, Any]:
        result = emu.invoke({"action": "get", "path": "/secretsmanager/get", "query": query})
        assert result.ok, result.error
        payload: dict[str, Any] = result.payload
        return payload

    assert get({"secretId": f"{unique}/b", "roleArn": reader})["body"]["SecretString"] == "from-b"
    assert get({"secretId": f"{unique}/b"})["status"] == 404
    assert get({"secretId": west})["body"]["SecretString"] == "from-west"
    assert get({"secretId": west, "roleArn": reader})["status"] == 404  # account B has none there


def test_expired_role_credentials_with_sts_failing_fail_the_read_cleanly(
    moto_server: MotoServer,
    start_extension: Callable[..., ExtensionProcess],
    local_sts: LocalSts,
    unique: str,
    upstream: str,
) -> None:
    name = f"{unique}/expiring"
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="v")
    ext = start_extension(
        SECRETCACHE_UPSTREAM=upstream,
        AWS_ENDPOINT_URL_STS=local_sts.url,
        SECRETCACHE_MAX_STALE_SECONDS="0",  # else the last value is served stale, as designed
    )
    read = f"/secretsmanager/get?secretId={name}&refreshNow=true&roleArn=" + role(
        "reader", "123456789012"
    )
    local_sts.expires_in = 62  # a minute and two seconds: usable, then too close to expiry
    assert body_of(ext.get(read))["SecretString"] == "v"
    time.sleep(3)
    local_sts.failing = True
    failed = body_of(ext.get(read), 502)
    assert failed["errorType"] == "InternalFailure"
    ext.stop()
    assert "Traceback" not in ext.logs()
    assert KNOWN_SECRET not in ext.logs() and KNOWN_TOKEN[:40] not in ext.logs()
