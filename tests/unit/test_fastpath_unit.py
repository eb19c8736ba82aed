"""The fast path's decisions that need no socket: which partial heads are worth waiting for."""

from __future__ import annotations

import pytest
from secretcache.fastpath import _may_become_fast


@pytest.mark.parametrize(
    "partial",
    [
        b"G",
        b"GET",
        b"GET /secretsmanager/get?secr",
        b"GET / HTTP/1.1\r\nHo",
        b"POST /kms/dec",  # the fast path serves KMS decrypt too
        b"POST /kms/decrypt HTTP/1.1\r\nHo",
    ],
)
def test_a_partial_get_or_decrypt_head_is_waited_for(partial: bytes) -> None:
    assert _may_become_fast(partial)


@pytest.mark.parametrize(
    "partial",
    [
        b"POST /secretsmanager/get",  # another method: aiohttp's at once
        b"PUT /kms/decrypt",
        b"\x16\x03\x01\x00\xc4",  # a TLS ClientHello on the plain port
        b"GET / HTTP/1.1\nHost: x",  # bare LF line ends
        b"get /",
    ],
)
def test_bytes_that_cannot_become_a_fast_path_request_go_to_aiohttp_at_once(
    partial: bytes,
) -> None:
    assert not _may_become_fast(partial)
