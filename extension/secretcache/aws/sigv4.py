"""AWS Signature Version 4 for a request with its body in memory, as botocore's SigV4Auth signs.

Byte-identical to botocore's signer for the requests we send (a property test checks it against
botocore on generated requests, and AWS's published test vectors pin the algorithm).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
#: Headers botocore never signs (a proxy or the transport may change them).
UNSIGNED_HEADERS = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
#: Headers the signer sets itself (a caller's copy is replaced, as botocore replaces it).
_SET_BY_SIGNER = frozenset({"authorization", "x-amz-date", "x-amz-security-token"})


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def normalize_path(path: str) -> str:
    """Remove dot segments and empty segments (RFC 3986 5.2.4, as AWS wants), then encode."""
    if not path:
        return "/"
    kept: list[str] = []
    for segment in path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if kept:
                    kept.pop()
            else:
                kept.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and kept else ""
    return quote(first + "/".join(kept) + last, safe="/~")


def canonical_query(query: str) -> str:
    """Pairs sorted by key then value, each left as the URL encodes it."""
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def canonical_request(
    method: str, path: str, query: str, headers: dict[str, str], payload_hash: str
) -> tuple[str, str]:
    """The canonical request and its signed-headers list; ``headers`` keys are lower case."""
    names = sorted(headers)
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names)
    signed = ";".join(names)
    parts = (method.upper(), normalize_path(path), canonical_query(query), canonical_headers)
    text = "\n".join((*parts, signed, payload_hash))
    return text, signed


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    service: str,
    amz_date: str,
) -> dict[str, str]:
    """The headers to add: X-Amz-Date, X-Amz-Security-Token (with a token) and Authorization.

    ``host`` is the Host header value (lower case, without a default port); ``amz_date`` is
    ``YYYYMMDDTHHMMSSZ`` in UTC; ``headers`` are the other headers to send (any case).
    """
    added = {"X-Amz-Date": amz_date}
    if token:
        added["X-Amz-Security-Token"] = token
    to_sign: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low not in UNSIGNED_HEADERS and low not in _SET_BY_SIGNER:
            to_sign[low] = value
    to_sign["x-amz-date"] = amz_date
    if token:
        to_sign["x-amz-security-token"] = token
    to_sign.setdefault("host", host)
    payload_hash = hashlib.sha256(body).hexdigest()
    creq, signed = canonical_request(method, path, query, to_sign, payload_hash)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest())
    )
    key = signing_key(secret_key, amz_date[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return added
