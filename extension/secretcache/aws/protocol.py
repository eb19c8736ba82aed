"""AWS JSON 1.1 for the operations we call: validate, serialize, sign, send, parse, raise.

Every operation is one ``POST /`` with ``X-Amz-Target`` and a JSON body. What differs per
operation is data (the tables below): which members are required or length-bounded (validated
as botocore validates them, so a bad request fails here the same way), which input members are
blobs (base64 on the wire) and which output members are blobs or timestamps. Unit tests compare
these tables and the parser with botocore's models and parser.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .credentials import CredentialSource
from .signed_client import SignedClient

CONTENT_TYPE = "application/x-amz-json-1.1"
USER_AGENT = "secretcache (lean AWS client)"


@dataclass(frozen=True)
class Operation:
    name: str
    #: member -> the model's minimum that botocore checks: length of strings and lists, value of
    #: integers (not blobs); list elements' own minimum under "Name[]".
    min_lengths: dict[str, int]
    required: tuple[str, ...] = ()
    input_blobs: tuple[str, ...] = ()
    #: Paths in the output: "A/B", with "*" for every element of a list.
    output_blobs: tuple[str, ...] = ()
    output_timestamps: tuple[str, ...] = ()


#: service -> (X-Amz-Target prefix, SigV4 signing name, {python method name: Operation}).
SERVICES: dict[str, tuple[str, str, dict[str, Operation]]] = {
    "secretsmanager": (
        "secretsmanager",
        "secretsmanager",
        {
            "get_secret_value": Operation(
                "GetSecretValue",
                {"SecretId": 1, "VersionId": 32, "VersionStage": 1},
                required=("SecretId",),
                output_blobs=("SecretBinary",),
                output_timestamps=("CreatedDate",),
            ),
            "describe_secret": Operation(
                "DescribeSecret",
                {"SecretId": 1},
                required=("SecretId",),
                output_timestamps=(
                    "CreatedDate",
                    "DeletedDate",
                    "LastAccessedDate",
                    "LastChangedDate",
                    "LastRotatedDate",
                    "NextRotationDate",
                    "ReplicationStatus/*/LastAccessedDate",
                ),
            ),
            "batch_get_secret_value": Operation(
                "BatchGetSecretValue",
                {"SecretIdList": 1, "SecretIdList[]": 1, "MaxResults": 1, "NextToken": 1},
                output_blobs=("SecretValues/*/SecretBinary",),
                output_timestamps=("SecretValues/*/CreatedDate",),
            ),
        },
    ),
    "ssm": (
        "AmazonSSM",
        "ssm",
        {
            "get_parameter": Operation(
                "GetParameter",
                {"Name": 1},
                required=("Name",),
                output_timestamps=("Parameter/LastModifiedDate",),
            ),
            "get_parameters": Operation(
                "GetParameters",
                {"Names": 1, "Names[]": 1},
                required=("Names",),
                output_timestamps=("Parameters/*/LastModifiedDate",),
            ),
            "get_parameters_by_path": Operation(
                "GetParametersByPath",
                {"Path": 1, "MaxResults": 1},
                required=("Path",),
                output_timestamps=("Parameters/*/LastModifiedDate",),
            ),
        },
    ),
    "kms": (
        "TrentService",
        "kms",
        {
            "decrypt": Operation(
                "Decrypt",
                {"KeyId": 1},
                input_blobs=("CiphertextBlob",),
                output_blobs=("Plaintext", "CiphertextForRecipient"),
            ),
        },
    ),
}


class ParamValidationError(Exception):
    """The parameters break the API's model (named as botocore's, so errors map the same way)."""


class ResponseParserError(Exception):
    """A success response whose body is not the JSON the API promises."""


class AwsClientError(Exception):
    """AWS answered with an error; ``response`` has botocore's ClientError shape."""

    def __init__(self, response: dict[str, Any], operation: str) -> None:
        error = response["Error"]
        super().__init__(f"An error occurred ({error['Code']}) when calling the {operation}")
        self.response = response
        self.operation_name = operation


def validate(operation: Operation, params: dict[str, Any]) -> None:
    """Required members present; lengths at or above the model's minimum (as botocore checks)."""
    problems = [f"missing {name}" for name in operation.required if name not in params]
    for name, value in params.items():
        minimum = operation.min_lengths.get(name)
        if minimum is not None:
            if isinstance(value, (str, list)) and len(value) < minimum:
                problems.append(f"{name} is shorter than {minimum}")
            elif isinstance(value, int) and not isinstance(value, bool) and value < minimum:
                problems.append(f"{name} is below {minimum}")
        element_minimum = operation.min_lengths.get(name + "[]")
        if (
            element_minimum is not None
            and isinstance(value, list)
            and any(isinstance(v, str) and len(v) < element_minimum for v in value)
        ):
            problems.append(f"an element of {name} is shorter than {element_minimum}")
    if problems:
        # Names only: a value may be a secret's name, never a secret, but keep it out anyway.
        raise ParamValidationError("; ".join(problems))


def serialize(operation: Operation, params: dict[str, Any]) -> bytes:
    body = dict(params)
    for name in operation.input_blobs:
        value = body.get(name)
        if isinstance(value, str):
            value = value.encode("utf-8")
        if isinstance(value, (bytes, bytearray)):
            body[name] = base64.b64encode(value).decode("ascii")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _timestamp(value: Any) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    try:
        return datetime.fromtimestamp(float(value), timezone.utc)
    except (TypeError, ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _convert(data: Any, path: list[str], convert: Any) -> None:
    if not path or data is None:
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(data, list):
            for index, item in enumerate(data):
                if rest:
                    _convert(item, rest, convert)
                elif item is not None:
                    data[index] = convert(item)
        return
    if not isinstance(data, dict) or data.get(head) is None:
        return
    if rest:
        _convert(data[head], rest, convert)
    else:
        data[head] = convert(data[head])


def _drop_nulls(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_nulls(v) for v in data]
    return data


def parse_success(operation: Operation, body: bytes) -> dict[str, Any]:
    """The output as botocore returns it: blobs as bytes, timestamps as aware datetimes."""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        raise ResponseParserError("the response body is not JSON") from None
    if not isinstance(parsed, dict):
        raise ResponseParserError("the response body is not a JSON object")
    data: dict[str, Any] = _drop_nulls(parsed)
    try:
        for path in operation.output_blobs:
            _convert(data, path.split("/"), base64.b64decode)
        for path in operation.output_timestamps:
            _convert(data, path.split("/"), _timestamp)
    except (ValueError, TypeError, OverflowError):
        raise ResponseParserError("a blob or timestamp in the response is malformed") from None
    return data


def parse_error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """botocore's error dict for a JSON 1.1 response with status >= 301."""
    stripped = body.strip()
    if status >= 500 and (not stripped or stripped.startswith(b"<html>")):
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        return {
            "Error": {"Code": str(status), "Message": phrase},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
    parsed: Any
    if not body:
        parsed = {}
    else:
        text = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {"message": text}
    if not isinstance(parsed, dict):
        parsed = {}
    code = parsed.get("__type", status and str(status))
    if isinstance(code, str):
        if ":" in code:
            code = code.split(":", 1)[0]
        if "#" in code:
            code = code.rsplit("#", 1)[1]
        query_error = headers.get("x-amzn-query-error", "").split(";")
        if len(query_error) == 2 and query_error[0]:
            code = query_error[0]
    metadata: dict[str, Any] = {"HTTPStatusCode": status}
    if "x-amzn-requestid" in headers:
        metadata["RequestId"] = headers["x-amzn-requestid"]
    message = parsed.get("message", parsed.get("Message", ""))
    return {"Error": {"Message": message, "Code": code or ""}, "ResponseMetadata": metadata}


class JsonServiceClient(SignedClient):
    """One service's operations as coroutines named like aiobotocore's client methods."""

    def __init__(
        self,
        service: str,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource,
        *,
        max_connections: int,
        timeout: float,
        clock: Any = time.time,
    ) -> None:
        self.service = service
        self._target_prefix, signing_name, self._operations = SERVICES[service]
        super().__init__(
            endpoint_url,
            region,
            credentials,
            signing_name=signing_name,
            max_idle=max_connections,
            timeout=timeout,
            clock=clock,
        )

    def __getattr__(self, name: str) -> Any:
        operation = self._operations.get(name) if not name.startswith("_") else None
        if operation is None:
            raise AttributeError(name)

        async def call(**params: Any) -> dict[str, Any]:
            return await self.call(operation, params)

        return call

    async def call(self, operation: Operation, params: dict[str, Any]) -> dict[str, Any]:
        validate(operation, params)
        body = serialize(operation, params)
        headers = {
            "X-Amz-Target": f"{self._target_prefix}.{operation.name}",
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
        }
        status, response_headers, response_body = await self._post(headers, body)
        if status >= 301:
            raise AwsClientError(
                parse_error(status, response_headers, response_body), operation.name
            )
        result = parse_success(operation, response_body)
        metadata: dict[str, Any] = {"HTTPStatusCode": status}
        if "x-amzn-requestid" in response_headers:
            metadata["RequestId"] = response_headers["x-amzn-requestid"]
        result["ResponseMetadata"] = metadata
        return result
