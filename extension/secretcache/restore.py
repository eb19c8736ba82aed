"""SnapStart restores: what was seen (for /health and /metrics) and fresh random state.

Under SnapStart, INIT ends in a snapshot that Lambda restores, possibly much later, into many
sandboxes at once. A restore is seen two ways (lifecycle.py acts on the first to come): the
first event after INIT (event/next returns only after the restore), and on the request path a
wall-clock jump ahead of the monotonic clock (cache.SandboxClock), which a request can meet
before our event thread has seen that event. A process is restored at most once: each sandbox
is a new copy of the snapshot, and none is snapshotted again. Nothing here holds a name or a
value.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

#: Why a restore was recognised.
FIRST_EVENT = "first-event"
CLOCK_JUMP = "clock-jump"


class RestoreState:
    """SnapStart as /health and /metrics show it: whether INIT's reads are held out of the cache,
    how many restores were seen, and the last one."""

    __slots__ = (
        "holding",
        "last_at",
        "last_clock_jump",
        "last_reason",
        "prefetch_delay",
        "restores",
        "snapstart",
    )

    def __init__(self, snapstart: bool = False) -> None:
        self.snapstart = snapstart
        self.holding = False
        self.restores = 0
        self.last_reason: str | None = None
        #: Unix time (after the restore's clock step) the last restore was recognised.
        self.last_at: float | None = None
        self.last_clock_jump: float | None = None
        self.prefetch_delay: float | None = None

    @property
    def shown(self) -> bool:
        """Worth a /health field: SnapStart is on."""
        return self.snapstart

    def record(self, reason: str, clock_jump: float | None) -> None:
        self.restores += 1
        self.last_reason = reason
        self.last_at = time.time()
        self.last_clock_jump = clock_jump

    def as_dict(self) -> dict[str, Any]:
        last: dict[str, Any] | None = None
        if self.last_reason is not None:
            last = {
                "reason": self.last_reason,
                "at": _iso(self.last_at),
                "clockJumpSeconds": None
                if self.last_clock_jump is None
                else round(self.last_clock_jump, 3),
                "prefetchDelayMs": None
                if self.prefetch_delay is None
                else round(self.prefetch_delay * 1000, 1),
            }
        return {
            "enabled": self.snapstart,
            "holding": self.holding,
            "restores": self.restores,
            "lastRestore": last,
        }


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def reseed_random() -> None:
    """New random state after a restore (AWS's SnapStart uniqueness rule).

    Every sandbox restored from one snapshot starts with the snapshot's random state, so without
    this they would all draw the same prefetch delay and the same TTL jitter. The kernel's
    entropy is mixed with both clocks and the pid in case it was restored too.
    """
    extra = f"{time.time_ns()}:{time.perf_counter_ns()}:{os.getpid()}".encode()
    random.seed(os.urandom(32) + extra)
