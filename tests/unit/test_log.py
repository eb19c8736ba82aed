"""The JSON-lines logger: levels, the token scrub, and crash locations without values."""

from __future__ import annotations

import io
import json

from secretcache.log import Logger, where


def test_lines_are_json_with_level_event_and_fields() -> None:
    stream = io.StringIO()
    logger = Logger("info", stream)
    logger.debug("hidden")
    logger.info("shown", port=2773)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["level"], record["event"], record["port"]) == ("INFO", "shown", 2773)


def test_level_none_prints_nothing() -> None:
    stream = io.StringIO()
    logger = Logger("none", stream)
    logger.error("boom")
    assert stream.getvalue() == ""


def test_registered_token_never_reaches_a_line() -> None:
    stream = io.StringIO()
    logger = Logger("debug", stream)
    token = "IQoJb3JpZ2luX2VjEXAMPLE-session-token"
    logger.never_print(token)
    logger.warn("oops", detail=f"header was {token}!")
    assert token not in stream.getvalue()
    assert "***" in stream.getvalue()


def test_where_names_the_innermost_frame_but_not_the_message() -> None:
    def fail(secret: str) -> None:
        raise ValueError(secret)

    try:
        fail("hunter2-value")
    except ValueError as exc:
        location = where(exc)
    assert location.startswith("test_log.py:")
    assert location.endswith(" in fail")
    assert "hunter2" not in location
