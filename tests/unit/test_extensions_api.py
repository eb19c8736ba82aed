"""Typed events from the Extensions API's event/next body."""

from __future__ import annotations

from secretcache.extensions_api import Event


def test_shutdown_event_carries_its_deadline_in_seconds_and_reason() -> None:
    event = Event.from_json(
        {"eventType": "SHUTDOWN", "deadlineMs": 1_700_000_002_000, "shutdownReason": "SPINDOWN"}
    )
    assert event.is_shutdown
    assert event.deadline == 1_700_000_002.0
    assert event.shutdown_reason == "spindown"


def test_invoke_event_and_missing_fields() -> None:
    event = Event.from_json({"eventType": "invoke", "deadlineMs": "soon"})
    assert event.kind == "INVOKE" and not event.is_shutdown
    assert event.deadline is None and event.shutdown_reason == ""
