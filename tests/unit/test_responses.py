"""Response bodies: byte-for-byte what AWS's Go extension returns."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from secretcache.responses import decrypt_body, go_time, parameter_body, secret_value_body

from tests.support.shapes import PARAMETER_KEYS

UTC = timezone.utc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2022, 11, 16, 8, 22, 40, 499000, tzinfo=UTC), "2022-11-16T08:22:40.499Z"),
        (datetime(2022, 11, 16, 8, 22, 40, 499999, tzinfo=UTC), "2022-11-16T08:22:40.499Z"),
        (datetime(2022, 11, 16, 8, 22, 40, 500000, tzinfo=UTC), "2022-11-16T08:22:40.5Z"),
        (datetime(2022, 11, 16, 8, 22, 40, 490000, tzinfo=UTC), "2022-11-16T08:22:40.49Z"),
        (datetime(2022, 11, 16, 8, 22, 40, 1000, tzinfo=UTC), "2022-11-16T08:22:40.001Z"),
        (datetime(2022, 11, 16, 8, 22, 40, 10000, tzinfo=UTC), "2022-11-16T08:22:40.01Z"),
        # sub-millisecond precision is below the SDK's and disappears
        (datetime(2022, 11, 16, 8, 22, 40, 999, tzinfo=UTC), "2022-11-16T08:22:40Z"),
        (datetime(2022, 11, 16, 8, 22, 40, tzinfo=UTC), "2022-11-16T08:22:40Z"),
        (datetime(2024, 2, 29, 0, 0, 0, tzinfo=UTC), "2024-02-29T00:00:00Z"),
    ],
)
def test_go_time_formats_like_go_rfc3339nano(value: datetime, expected: str) -> None:
    assert go_time(value) == expected


def test_go_time_treats_naive_datetimes_as_utc() -> None:
    assert go_time(datetime(2022, 11, 16, 8, 22, 40, 499000)) == "2022-11-16T08:22:40.499Z"


@pytest.mark.parametrize(
    ("offset_hours", "local", "expected"),
    [
        (2, datetime(2022, 11, 16, 10, 22, 40, 500000), "2022-11-16T08:22:40.5Z"),
        (-5, datetime(2022, 12, 31, 21, 0, 1), "2023-01-01T02:00:01Z"),
        (5.5, datetime(2022, 1, 1, 3, 0, 0, 123000), "2021-12-31T21:30:00.123Z"),
    ],
)
def test_go_time_converts_other_zones_to_utc(
    offset_hours: float, local: datetime, expected: str
) -> None:
    zone = timezone(timedelta(hours=offset_hours))
    assert go_time(local.replace(tzinfo=zone)) == expected


def test_go_time_none_is_null() -> None:
    assert go_time(None) is None


CREATED = datetime(2022, 11, 16, 8, 22, 40, 499000, tzinfo=UTC)


def test_secret_string_body_exact_bytes() -> None:
    body = secret_value_body(
        {
            "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
            "Name": "db",
            "VersionId": "v-1",
            "SecretString": '{"user":"admin"}',
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": CREATED,
            "ResponseMetadata": {"RequestId": "r", "HTTPStatusCode": 200},
        }
    )
    assert body == (
        b'{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",'
        b'"CreatedDate":"2022-11-16T08:22:40.499Z","Name":"db","SecretBinary":null,'
        b'"SecretString":"{\\"user\\":\\"admin\\"}","VersionId":"v-1",'
        b'"VersionStages":["AWSCURRENT"],"ResultMetadata":{}}'
    )


def test_secret_binary_is_base64_and_string_null() -> None:
    body = json.loads(
        secret_value_body(
            {
                "ARN": "a",
                "Name": "n",
                "SecretBinary": b"\x00\xff\xfe binary",
                "CreatedDate": CREATED,
            }
        )
    )
    assert body["SecretBinary"] == "AP/+IGJpbmFyeQ=="
    assert body["SecretString"] is None


def test_secret_body_field_order_and_nulls_for_absent_values() -> None:
    body = json.loads(secret_value_body({}))
    assert list(body) == [
        "ARN",
        "CreatedDate",
        "Name",
        "SecretBinary",
        "SecretString",
        "VersionId",
        "VersionStages",
        "ResultMetadata",
    ]
    assert body == {
        "ARN": None,
        "CreatedDate": None,
        "Name": None,
        "SecretBinary": None,
        "SecretString": None,
        "VersionId": None,
        "VersionStages": None,
        "ResultMetadata": {},
    }


def test_secret_response_metadata_is_never_echoed() -> None:
    body = json.loads(
        secret_value_body({"ResponseMetadata": {"RequestId": "abc", "HTTPHeaders": {"x": "y"}}})
    )
    assert body["ResultMetadata"] == {}
    assert "ResponseMetadata" not in body


def test_non_ascii_values_are_utf8_not_escaped() -> None:
    body = secret_value_body({"SecretString": "pässwörd ✓ 密码"})
    assert "pässwörd ✓ 密码".encode() in body
    assert json.loads(body)["SecretString"] == "pässwörd ✓ 密码"


PARAMETER = {
    "Name": "/app/db/url",
    "Type": "SecureString",
    "Value": "postgres://x",
    "Version": 3,
    "LastModifiedDate": datetime(2023, 5, 1, 12, 0, 0, 500000, tzinfo=UTC),
    "ARN": "arn:aws:ssm:us-east-1:123456789012:parameter/app/db/url",
    "DataType": "text",
    "Tier": "Standard",
}


def test_parameter_body_exact_bytes() -> None:
    body = parameter_body({"Parameter": PARAMETER, "ResponseMetadata": {"RequestId": "r"}})
    assert body == (
        b'{"Parameter":{"ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db/url",'
        b'"DataType":"text","LastModifiedDate":"2023-05-01T12:00:00.5Z","Name":"/app/db/url",'
        b'"Selector":null,"SourceResult":null,"Type":"SecureString","Value":"postgres://x",'
        b'"Version":3},"ResultMetadata":{}}'
    )


def test_parameter_body_field_order() -> None:
    body = json.loads(parameter_body({"Parameter": PARAMETER}))
    assert list(body) == ["Parameter", "ResultMetadata"]
    assert list(body["Parameter"]) == PARAMETER_KEYS
    assert "Tier" not in body["Parameter"]


@pytest.mark.parametrize("selector", [":3", ":live"])
def test_parameter_selector_filled_from_request_when_missing(selector: str) -> None:
    body = json.loads(parameter_body({"Parameter": PARAMETER}, selector))
    assert body["Parameter"]["Selector"] == selector


def test_parameter_selector_from_aws_wins() -> None:
    body = json.loads(parameter_body({"Parameter": {**PARAMETER, "Selector": ":2"}}, ":live"))
    assert body["Parameter"]["Selector"] == ":2"


def test_parameter_source_result_passes_through() -> None:
    body = json.loads(parameter_body({"Parameter": {**PARAMETER, "SourceResult": '{"a":1}'}}))
    assert body["Parameter"]["SourceResult"] == '{"a":1}'


def test_parameter_absent_values_are_null_and_version_zero() -> None:
    body = json.loads(parameter_body({}))
    assert body == {
        "Parameter": {
            "ARN": None,
            "DataType": None,
            "LastModifiedDate": None,
            "Name": None,
            "Selector": None,
            "SourceResult": None,
            "Type": None,
            "Value": None,
            "Version": 0,
        },
        "ResultMetadata": {},
    }


def test_decrypt_body_shape() -> None:
    body = decrypt_body(
        {
            "KeyId": "arn:aws:kms:us-east-1:123456789012:key/k",
            "Plaintext": b"\x01\x02hello",
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "ResponseMetadata": {"RequestId": "r"},
        }
    )
    assert body == (
        b'{"KeyId":"arn:aws:kms:us-east-1:123456789012:key/k","Plaintext":"AQJoZWxsbw==",'
        b'"EncryptionAlgorithm":"SYMMETRIC_DEFAULT","ResultMetadata":{}}'
    )


def test_bodies_are_compact_json() -> None:
    for body in (secret_value_body({}), parameter_body({}), decrypt_body({})):
        assert b": " not in body
        assert b", " not in body
        assert b"\n" not in body
