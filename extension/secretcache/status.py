"""Whether the extension is ready and whether it is shutting down, shared by both HTTP paths."""

from __future__ import annotations


class Status:
    """`ready`: the SDK has loaded and the prefetch is done. `closing`: SHUTDOWN has arrived."""

    __slots__ = ("closing", "ready")

    def __init__(self) -> None:
        self.ready = False
        self.closing = False

    def health_body(self, upstream_loaded: bool) -> bytes:
        """What `GET /health` answers (both HTTP paths): no names, no configuration."""
        if self.ready and upstream_loaded:
            return b'{"status": "ok"}'
        return b'{"status": "starting"}'
