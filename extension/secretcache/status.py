"""Whether the extension is ready and whether it is shutting down, shared by both HTTP paths."""

from __future__ import annotations

from typing import Any

from .restore import RestoreState


class Status:
    """`ready`: the SDK has loaded and the prefetch is done. `closing`: SHUTDOWN has arrived.
    `snapstart`: the restores seen (the same object /metrics shows)."""

    __slots__ = ("closing", "ready", "snapstart")

    def __init__(self) -> None:
        self.ready = False
        self.closing = False
        self.snapstart = RestoreState()

    def health(self, ready: bool) -> dict[str, Any]:
        """The /health body: no token, no names, no configuration; SnapStart's state when on."""
        body: dict[str, Any] = {"status": "ok" if ready else "starting"}
        if self.snapstart.shown:
            body["snapStart"] = self.snapstart.as_dict()
        return body
