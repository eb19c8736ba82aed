"""Whether the extension is ready and whether it is shutting down, shared by both HTTP paths."""

from __future__ import annotations


class Status:
    """`ready`: the SDK has loaded and the prefetch is done. `closing`: SHUTDOWN has arrived."""

    __slots__ = ("closing", "ready")

    def __init__(self) -> None:
        self.ready = False
        self.closing = False
