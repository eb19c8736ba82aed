"""ARN rules (roleArn, the region of a resource ARN) and the lean STS client's XML handling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.loaders import create_loader
from secretcache.arns import ROLE_ARN_MESSAGE, arn_region, partition_of_region, validate_role_arn
from secretcache.aws.credentials import Credentials
from secretcache.aws.protocol import AwsClientError, ParamValidationError, ResponseParserError
from secretcache.aws.sts import StsClient, parse_assume_role, parse_error
from secretcache.backends import AwsBackends, classify
from secretcache.errors import AccessDenied, BadRequest, RoleAccessDenied, Throttled, agent_error
from secretcache.query import parse_query_string
from secretcache.read_requests import ParameterRead, SecretRead, SecretsRead
from secretcache.reads import cache_key

# roleArn ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/TestRole",
        "arn:aws-us-gov:iam::123456789012:role/path/to/R+=,.@-_1",
        "arn:aws-cn:iam::000000000000:role/r",
    ],
)
def test_role_arns_the_agent_accepts(arn: str) -> None:
    assert validate_role_arn(arn) == arn


@pytest.mark.parametrize(
    "arn",
    [
        "not-a-valid-arn",
        "arn:aws:iam::12345678901:role/r",  # 11 digits
        "arn:aws:iam::123456789012:user/r",
        "arn:aws:iam::123456789012:role/",
        'arn:aws:iam::123456789012:role/a","x":"y',  # JSON injection
        "arn:aws:iam::123456789012:role/r\n",  # `$` would let a trailing newline through
        "arn:aws:iam::123456789012:role/ré",
        "arn:aws:sts::123456789012:role/r",
        "",
    ],
)
def test_role_arns_the_agent_refuses(arn: str) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_role_arn(arn)
    assert refused.value.message == ROLE_ARN_MESSAGE


def test_role_arn_parses_on_every_secret_read_and_is_refused_elsewhere() -> None:
    role = "arn:aws:iam::123456789012:role/R"
    pairs = parse_query_string(f"secretId=s&roleArn={role}")
    assert SecretRead.from_query(pairs).role_arn == role
    assert SecretRead.from_agent_query(pairs).role_arn == role
    assert SecretRead.from_agent_path("s", parse_query_string(f"roleArn={role}")).role_arn == role
    assert SecretsRead.from_query(pairs).role_arn == role
    assert SecretRead.from_query(parse_query_string("secretId=s")).role_arn is None
    with pytest.raises(BadRequest, match="secret reads only"):
        ParameterRead.from_query(parse_query_string(f"name=/p&roleArn={role}"))


def test_the_role_is_part_of_the_cache_key() -> None:
    plain = SecretRead("s")
    one = SecretRead("s", role_arn="arn:aws:iam::123456789012:role/one")
    two = SecretRead("s", role_arn="arn:aws:iam::123456789012:role/two")
    assert len({cache_key(plain), cache_key(one), cache_key(two)}) == 3
    assert cache_key(one) == cache_key(SecretRead("s", role_arn=one.role_arn))


# The region of a resource ARN -----------------------------------------------------------------


def test_every_region_botocore_knows_maps_to_its_own_partition() -> None:
    partitions = create_loader().load_data("partitions")["partitions"]
    for partition in partitions:
        for region in partition["regions"]:
            if region.endswith("-global"):
                assert partition_of_region(region) is None
                continue
            assert partition_of_region(region) == partition["id"], region


@pytest.mark.parametrize(
    ("identifier", "service", "region"),
    [
        (
            "arn:aws:secretsmanager:us-west-2:123456789012:secret:db-AbCdEf",
            "secretsmanager",
            "us-west-2",
        ),
        ("arn:aws-cn:secretsmanager:cn-north-1:1:secret:x", "secretsmanager", "cn-north-1"),
        ("arn:aws-us-gov:ssm:us-gov-west-1:1:parameter/a/b:3", "ssm", "us-gov-west-1"),
        ("arn:aws:kms:eu-west-1:1:key/1234", "kms", "eu-west-1"),
        ("db/prod", "secretsmanager", None),
        ("/app/db", "ssm", None),
        ("alias/x", "kms", None),
        ("arn:aws:ssm:us-west-2:1:parameter/x", "secretsmanager", None),  # another service's
        ("arn:aws:secretsmanager::1:secret:x", "secretsmanager", None),  # no region
        ("arn:aws:secretsmanager:us-west-2", "secretsmanager", None),  # not a full ARN
    ],
)
def test_arn_region(identifier: str, service: str, region: str | None) -> None:
    assert arn_region(identifier, service) == region


@pytest.mark.parametrize(
    "region",
    [
        "evil.example.com",
        "us-west-2.evil.com",
        "us-west-2/..",
        "127.0.0.1",
        "US-WEST-2",
        "us-west-2 ",
        "us_west_2",
        "xx-nowhere-1",
        "aws-global",
        "us-west-2\n",
        "a" * 300,
    ],
)
def test_a_region_that_is_not_one_is_refused(region: str) -> None:
    with pytest.raises(BadRequest) as refused:
        arn_region(f"arn:aws:secretsmanager:{region}:123456789012:secret:x", "secretsmanager")
    assert refused.value.error_type == "InvalidArn"
    assert len(refused.value.message) < 200


def test_the_partition_must_be_the_regions() -> None:
    with pytest.raises(BadRequest, match="partition aws-cn"):
        arn_region("arn:aws:secretsmanager:cn-north-1:1:secret:x", "secretsmanager")
    with pytest.raises(BadRequest, match="unknown partition"):
        arn_region("arn:aws-evil:secretsmanager:us-east-1:1:secret:x", "secretsmanager")


# STS AssumeRole on the wire -------------------------------------------------------------------

ANSWER = b"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>Alice</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>IQoJb3JpZ2luX2VjEOz////////////////////wEXAMPLEtc764</SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"""

DENIED = b"""<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>User: arn:aws:iam::123456789012:user/fn is not authorized to perform: \
sts:AssumeRole on resource: arn:aws:iam::222222222222:role/r</Message>
  </Error>
  <RequestId>4e3d7d3c-2f3b-11e8-a1b8-example</RequestId>
</ErrorResponse>"""


def test_the_answer_parses_as_botocore_parses_it() -> None:
    from botocore.model import ServiceModel
    from botocore.parsers import QueryParser

    ours = parse_assume_role(ANSWER)
    model = ServiceModel(create_loader().load_service_model("sts", "service-2"))
    theirs = QueryParser().parse(
        {"body": ANSWER, "headers": {}, "status_code": 200},
        model.operation_model("AssumeRole").output_shape,
    )
    for name in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
        assert ours["Credentials"][name] == theirs["Credentials"][name]
    assert ours["Credentials"]["Expiration"] == theirs["Credentials"]["Expiration"].timestamp()
    assert ours["AssumedRoleUser"] == theirs["AssumedRoleUser"]


def test_the_error_parses_as_botocore_parses_it_and_maps_to_403() -> None:
    from botocore.parsers import QueryParser

    ours = parse_error(403, {}, DENIED)
    theirs = QueryParser().parse({"body": DENIED, "headers": {}, "status_code": 403}, None)
    assert ours["Error"]["Code"] == theirs["Error"]["Code"] == "AccessDenied"
    assert ours["Error"]["Message"] == theirs["Error"]["Message"]
    assert isinstance(classify(AwsClientError(ours, "AssumeRole"), "sts"), AccessDenied)
    throttled = parse_error(400, {}, DENIED.replace(b"AccessDenied", b"Throttling"))
    assert isinstance(classify(AwsClientError(throttled, "AssumeRole"), "sts"), Throttled)
    moto_shape = (
        b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>m</Message></Error>"
        b"</Errors></ErrorResponse>"
    )
    assert parse_error(403, {}, moto_shape)["Error"] == {"Code": "AccessDenied", "Message": "m"}
    assert parse_error(503, {}, b"")["Error"]["Code"] == "503"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<AssumeRoleResponse/>",
        b"<Other><Credentials/></Other>",
        ANSWER.replace(b"<SessionToken>", b"<X>").replace(b"</SessionToken>", b"</X>"),
        ANSWER.replace(b"2019-11-09T13:34:41Z", b"tomorrow"),
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]>'
        b"<AssumeRoleResponse>&e;</AssumeRoleResponse>",
    ],
)
def test_a_bad_answer_is_refused_without_echoing_it(body: bytes) -> None:
    with pytest.raises(ResponseParserError) as refused:
        parse_assume_role(body)
    assert "wJalrXUtnFEMI" not in str(refused.value)
    assert "IQoJb3JpZ2lu" not in str(refused.value)


class Chain:
    async def get(self) -> Credentials:
        return Credentials("AKIDFUNCTION", "function-secret", "function-token")


def test_the_client_validates_as_the_model_does() -> None:
    client = StsClient("http://127.0.0.1:9", "us-east-1", Chain(), timeout=1.0)
    for bad in (
        {"RoleArn": "short", "RoleSessionName": "ok"},
        {"RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "has space"},
        {"RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "x"},
    ):
        with pytest.raises(ParamValidationError):
            asyncio.run(client.assume_role(**bad))


# The backends' AssumeRole: errors name the role, never the credentials -------------------------


class StsAnswers(AwsBackends):
    def __init__(self, answer: Any) -> None:
        super().__init__(max_connections=1, timeouts={"secretsmanager": 1.0}, function_name="fn")
        self.answer = answer
        self.params: dict[str, Any] = {}

    async def call(self, service: str, operation: str, params: dict[str, Any], **_: Any) -> Any:
        assert (service, operation) == ("sts", "assume_role")
        self.params = params
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_access_denied_names_the_role_in_both_shapes() -> None:
    role = "arn:aws:iam::222222222222:role/r"
    backends = StsAnswers(AccessDenied("sts: AccessDenied: no", error_type="AccessDenied"))
    with pytest.raises(RoleAccessDenied) as denied:
        await backends.roles.credentials(role)
    assert denied.value.status == 403 and role in denied.value.message
    assert agent_error(denied.value) == (
        403,
        b'{"__type":"AccessDeniedException","message":"Failed to create caching client from role: '
        + role.encode()
        + b'"}',
    )
    assert backends.params == {"RoleArn": role, "RoleSessionName": "secretcache-fn"}


async def test_an_answer_without_credentials_is_an_upstream_error() -> None:
    backends = StsAnswers({"Credentials": {"AccessKeyId": "A", "SecretAccessKey": "leak-me"}})
    with pytest.raises(Exception) as failed:
        await backends.roles.credentials("arn:aws:iam::222222222222:role/r")
    assert failed.value.status == 502  # type: ignore[attr-defined]
    assert "leak-me" not in str(failed.value)


def test_an_sm_prefetch_item_takes_role_arn() -> None:
    from secretcache.config import load_config

    role = "arn:aws:iam::123456789012:role/R"
    config = load_config(
        {"AWS_SESSION_TOKEN": "t", "SECRETCACHE_PREFETCH": f"sm:db?roleArn={role}"}
    )
    read = config.prefetch[0].read
    assert isinstance(read, SecretRead) and read.role_arn == role
    assert config.max_roles == 10
    assert load_config({"AWS_SESSION_TOKEN": "t", "SECRETCACHE_MAX_ROLES": "0"}).max_roles == 0
    from secretcache.config import ConfigError

    for bad in ("-1", "1001", "ten"):
        with pytest.raises(ConfigError, match="SECRETCACHE_MAX_ROLES"):
            load_config({"AWS_SESSION_TOKEN": "t", "SECRETCACHE_MAX_ROLES": bad})
