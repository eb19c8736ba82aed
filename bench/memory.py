"""Resident memory of a process, read from /proc (Linux): one reading, or a sampler over time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def rss_kib(pid: int) -> int | None:
    """VmRSS of the process in KiB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Reads VmRSS every ``interval`` seconds in a thread, once ``find_pid()`` gives a pid.

    Used to know the RSS at a past instant (the moment the extension called event/next), which
    cannot be read afterwards because the SDK keeps loading in the background.
    """

    def __init__(self, find_pid: Callable[[], int | None], interval: float = 0.002) -> None:
        self._find_pid = find_pid
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int]] = []  # (time.monotonic(), KiB)
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        deadline = time.monotonic() + 60.0
        pid = None
        while pid is None and not self._stop.is_set() and time.monotonic() < deadline:
            pid = self._find_pid()
            if pid is None:
                time.sleep(0.0005)
        while pid is not None and not self._stop.is_set() and time.monotonic() < deadline:
            kib = rss_kib(pid)
            if kib is None:
                return
            self.samples.append((time.monotonic(), kib))
            time.sleep(self._interval)

    def at(self, t: float) -> int | None:
        """The last sample taken at or before ``t``."""
        before = [kib for when, kib in self.samples if when <= t]
        return before[-1] if before else None
