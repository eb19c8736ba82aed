"""AWS results -> the JSON bodies AWS's extension returns, field for field.

AWS's extension is written in Go and returns the SDK's output structs through encoding/json:
fields in struct order, absent values as null, []byte as base64, and times as time.Time marshals
them (RFC 3339, UTC on Lambda, fraction truncated to the SDK's millisecond precision with trailing
zeros dropped: "2022-11-16T08:22:40.499Z", "...:40.5Z", "...:40Z").
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from .json_body import json_body


def go_time(value: datetime | None) -> str | None:
    """Format like Go's time.Time JSON (RFC3339Nano) after the SDK's millisecond truncation."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    millis = value.microsecond // 1000
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{millis:03d}".rstrip("0")
    return text + "Z"


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def secret_value(result: dict[str, Any]) -> dict[str, Any]:
    """A GetSecretValue output or a BatchGetSecretValue SecretValueEntry, Go-shaped."""
    return {
        "ARN": result.get("ARN"),
        "CreatedDate": go_time(result.get("CreatedDate")),
        "Name": result.get("Name"),
        "SecretBinary": _b64(result.get("SecretBinary")),
        "SecretString": result.get("SecretString"),
        "VersionId": result.get("VersionId"),
        "VersionStages": result.get("VersionStages"),
    }


def secret_value_body(result: dict[str, Any]) -> bytes:
    """GetSecretValue output."""
    return shaped_secret_value_body(secret_value(result))


def shaped_secret_value_body(shaped: dict[str, Any]) -> bytes:
    """GetSecretValue output from an already Go-shaped entry (a batch fills single entries)."""
    return json_body({**shaped, "ResultMetadata": {}})


def secret_values_body(values: list[dict[str, Any]], errors: list[dict[str, Any]]) -> bytes:
    """BatchGetSecretValue output; `values` are already Go-shaped entries."""
    shaped_errors = [
        {
            "ErrorCode": e.get("ErrorCode"),
            "ErrorMessage": e.get("ErrorMessage"),
            "SecretId": e.get("SecretId"),
        }
        for e in errors
    ]
    return json_body({"SecretValues": values, "Errors": shaped_errors, "ResultMetadata": {}})


def parameter(p: dict[str, Any], selector: str = "") -> dict[str, Any]:
    """One SSM Parameter, Go-shaped."""
    # AWS echoes the selector it was given (":3", ":live"); fill it where a stand-in omits it.
    return {
        "ARN": p.get("ARN"),
        "DataType": p.get("DataType"),
        "LastModifiedDate": go_time(p.get("LastModifiedDate")),
        "Name": p.get("Name"),
        "Selector": p.get("Selector") or (selector or None),
        "SourceResult": p.get("SourceResult"),
        "Type": p.get("Type"),
        "Value": p.get("Value"),
        "Version": p.get("Version", 0),
    }


def parameter_body(result: dict[str, Any], selector: str = "") -> bytes:
    """GetParameter output."""
    return shaped_parameter_body(parameter(result.get("Parameter") or {}, selector))


def shaped_parameter_body(shaped: dict[str, Any]) -> bytes:
    """GetParameter output from an already Go-shaped parameter (batch and path reads)."""
    return json_body({"Parameter": shaped, "ResultMetadata": {}})


def parameters_body(parameters: list[dict[str, Any]], invalid: list[str] | None) -> bytes:
    """GetParameters (with InvalidParameters) or GetParametersByPath output, Go-shaped entries."""
    body: dict[str, Any] = {"Parameters": parameters}
    if invalid is not None:
        body["InvalidParameters"] = invalid
    body["ResultMetadata"] = {}
    return json_body(body)


def decrypt_body(result: dict[str, Any]) -> bytes:
    """KMS Decrypt output (CiphertextForRecipient omitted: we never pass a Recipient)."""
    return json_body(
        {
            "KeyId": result.get("KeyId"),
            "Plaintext": _b64(result.get("Plaintext")),
            "EncryptionAlgorithm": result.get("EncryptionAlgorithm"),
            "ResultMetadata": {},
        }
    )
