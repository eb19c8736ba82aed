"""ResponseParser: one HTTP/1.x response from bytes however they arrive, with no I/O."""

from __future__ import annotations

import pytest
from secretcache_client._protocol import Answer, MalformedResponse, ResponseParser

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}'


def feed_in_pieces(data: bytes, size: int, eof: bool = False) -> Answer | None:
    parser = ResponseParser()
    answer = None
    for start in range(0, len(data), size):
        assert answer is None, "answered before all bytes arrived"
        answer = parser.feed(data[start : start + size])
    if eof and answer is None:
        answer = parser.feed(b"")
    return answer


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(OK)])
def test_content_length_answer_in_any_split(size: int) -> None:
    answer = feed_in_pieces(OK, size)
    assert answer is not None
    assert (answer.status, answer.body, answer.keep_alive) == (200, b'{"a": true}', True)


def test_answer_waits_for_the_whole_body() -> None:
    parser = ResponseParser()
    assert parser.feed(OK[:-1]) is None
    answer = parser.feed(OK[-1:])
    assert answer is not None and answer.body == b'{"a": true}'


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_chunked_answer_with_extensions_and_trailers(size: int) -> None:
    data = (
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    answer = feed_in_pieces(data, size)
    assert answer is not None
    assert (answer.status, answer.body, answer.keep_alive) == (404, b"hello world", True)


def test_informational_answers_are_skipped() -> None:
    answer = feed_in_pieces(b"HTTP/1.1 100 Continue\r\n\r\n" + OK, 5)
    assert answer is not None and answer.status == 200


def test_bare_line_feeds_are_accepted() -> None:
    answer = feed_in_pieces(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 4)
    assert answer is not None and answer.body == b"ok"


def test_body_delimited_by_close_ends_at_end_of_stream() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\npart one, ") is None
    assert parser.feed(b"part two") is None
    answer = parser.feed(b"")
    assert answer is not None
    assert (answer.body, answer.keep_alive) == (b"part one, part two", False)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n", True),
    ],
)
def test_keep_alive_follows_version_and_connection_header(head: bytes, keep_alive: bool) -> None:
    length = b"" if b" 204 " in head else b"Content-Length: 0\r\n"
    answer = ResponseParser().feed(head + length + b"\r\n")
    assert answer is not None and answer.keep_alive is keep_alive


def test_end_of_stream_before_any_byte_is_a_reset_before_a_response() -> None:
    with pytest.raises(ConnectionResetError, match="before a response"):
        ResponseParser().feed(b"")


@pytest.mark.parametrize("cut", [5, len(OK) - 3])
def test_end_of_stream_inside_an_answer_is_a_reset(cut: int) -> None:
    parser = ResponseParser()
    assert parser.feed(OK[:cut]) is None
    with pytest.raises(ConnectionResetError, match="inside a response"):
        parser.feed(b"")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", "bad status line"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "too many header lines"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 300000, "head too long"),
        (b"HTTP/1.1 200" + b"y" * 70000, "line too long"),
    ],
)
def test_malformed_answers_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedResponse, match=problem):
        ResponseParser().feed(data)
