"""STS AssumeRole on the lean client: the AWS query protocol (form POST, XML answer), nothing more.

Strict by design: one operation, its two parameters validated as botocore's model validates them,
the answer parsed with the standard library's XML parser (a document type declaration, which
could declare entities, is refused outright) and checked for every credential field. Errors are
raised shaped like botocore's (`AwsClientError.response["Error"]`), so `backends.classify` maps
STS's AccessDenied, throttling and 5xx as it maps the other services' errors. Neither the
request's signature nor the credentials in the answer ever reach an exception's text.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ElementTree
from typing import Any
from urllib.parse import urlencode

from .credentials import CredentialSource
from .protocol import AwsClientError, ParamValidationError, ResponseParserError
from .signed_client import SignedClient

API_VERSION = "2011-06-15"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
USER_AGENT = "secretcache (lean AWS client)"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_MAX_ERROR_MESSAGE = 512


def _local(tag: str) -> str:
    """An element's name without its XML namespace."""
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ElementTree.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


def _find(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    for child in element.iter():
        if _local(child.tag) == name:
            return child
    return None


def _parse_xml(body: bytes) -> ElementTree.Element:
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ResponseParserError("the STS answer declares a document type")
    try:
        # Safe without defusedxml: entities need a DTD, refused above; expat fetches nothing.
        return ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError:
        raise ResponseParserError("the STS answer is not XML") from None


def _expiration(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ResponseParserError("the STS answer's Expiration is not a timestamp") from None


def parse_assume_role(body: bytes) -> dict[str, Any]:
    """AssumeRoleResponse -> botocore's shape: ``{"Credentials": {...}, "AssumedRoleUser": ...}``.

    `Expiration` is a float (Unix time) rather than botocore's datetime; every credential field
    must be present and non-empty.
    """
    root = _parse_xml(body)
    if _local(root.tag) != "AssumeRoleResponse":
        raise ResponseParserError("the STS answer is not an AssumeRoleResponse")
    credentials = _find(root, "Credentials")
    if credentials is None:
        raise ResponseParserError("the STS answer has no Credentials")
    fields = {}
    for name in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"):
        value = _child_text(credentials, name)
        if not value:
            raise ResponseParserError(f"the STS answer's Credentials lack {name}")
        fields[name] = value
    result: dict[str, Any] = {
        "Credentials": {**fields, "Expiration": _expiration(fields["Expiration"])}
    }
    user = _find(root, "AssumedRoleUser")
    if user is not None:
        result["AssumedRoleUser"] = {
            "Arn": _child_text(user, "Arn") or "",
            "AssumedRoleId": _child_text(user, "AssumedRoleId") or "",
        }
    return result


def parse_error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """botocore's error dict for a query-protocol error (``<ErrorResponse><Error>...``)."""
    metadata: dict[str, Any] = {"HTTPStatusCode": status}
    code, message = str(status), ""
    try:
        root = _parse_xml(body) if body.strip() else None
    except ResponseParserError:
        root = None
    if root is not None:
        error = _find(root, "Error")
        if error is not None:
            code = _child_text(error, "Code") or code
            message = (_child_text(error, "Message") or "")[:_MAX_ERROR_MESSAGE]
        request_id = _find(root, "RequestId")
        if request_id is not None and request_id.text:
            metadata["RequestId"] = request_id.text.strip()
    elif status >= 500:
        from http import HTTPStatus

        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = ""
    return {"Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}


class StsClient(SignedClient):
    """`assume_role(RoleArn=..., RoleSessionName=...)`, named like aiobotocore's client method."""

    service = "sts"

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource,
        *,
        timeout: float,
        clock: Any = time.time,
    ) -> None:
        super().__init__(
            endpoint_url,
            region,
            credentials,
            signing_name="sts",
            max_idle=1,
            timeout=timeout,
            clock=clock,
        )

    async def assume_role(
        self, *, RoleArn: str, RoleSessionName: str, DurationSeconds: int | None = None
    ) -> dict[str, Any]:
        problems = []
        if not 20 <= len(RoleArn) <= 2048:
            problems.append("RoleArn must be 20 to 2048 characters")
        if not _SESSION_NAME.fullmatch(RoleSessionName):
            problems.append("RoleSessionName must be 2 to 64 of [\\w+=,.@-]")
        if DurationSeconds is not None and not 900 <= DurationSeconds <= 43200:
            problems.append("DurationSeconds must be 900 to 43200")
        if problems:
            raise ParamValidationError("; ".join(problems))
        form = {
            "Action": "AssumeRole",
            "Version": API_VERSION,
            "RoleArn": RoleArn,
            "RoleSessionName": RoleSessionName,
        }
        if DurationSeconds is not None:
            form["DurationSeconds"] = str(DurationSeconds)
        body = urlencode(form).encode("ascii")
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT}
        status, response_headers, response_body = await self._post(headers, body)
        if status >= 300:
            raise AwsClientError(parse_error(status, response_headers, response_body), "AssumeRole")
        result = parse_assume_role(response_body)
        result["ResponseMetadata"] = {"HTTPStatusCode": status}
        return result
