"""What the emulator observed: phase records, captured log lines, and the reports it returns.

Every timestamp is ``time.monotonic()`` seconds. On Linux that clock is system-wide, so a value a
handler or extension records with its own ``time.monotonic()`` is directly comparable to these.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class EmulatorError(Exception):
    """The emulator was used wrongly (e.g. invoke before init) or its sandbox is gone."""


class InitError(EmulatorError):
    """INIT failed: an extension or the runtime reported an error, crashed, or ran out of time.

    ``error_type`` is what Lambda would report (the ``Lambda-Extension-Function-Error-Type`` /
    ``Lambda-Runtime-Function-Error-Type`` header, or ``Extension.Crash``, ``Sandbox.Timedout``...).
    """

    def __init__(self, error_type: str, message: str, source: str = "") -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.source = source


@dataclass(frozen=True)
class Phase:
    """One lifecycle step, e.g. ``Phase(t, "secretcache", "extension.register", {...})``."""

    t: float
    source: str
    name: str
    detail: dict[str, Any] = field(default_factory=dict)


class PhaseLog:
    """Thread-safe, append-only list of :class:`Phase` with small query helpers."""

    def __init__(self) -> None:
        self._items: list[Phase] = []
        self._lock = threading.Lock()

    def add(self, source: str, name: str, t: float, **detail: Any) -> Phase:
        phase = Phase(t, source, name, detail)
        with self._lock:
            self._items.append(phase)
        return phase

    def all(self, name: str | None = None, source: str | None = None) -> list[Phase]:
        with self._lock:
            items = list(self._items)
        return [
            p
            for p in items
            if (name is None or p.name == name) and (source is None or p.source == source)
        ]

    def first(self, name: str, source: str | None = None) -> Phase | None:
        found = self.all(name, source)
        return found[0] if found else None

    def last(self, name: str, source: str | None = None) -> Phase | None:
        found = self.all(name, source)
        return found[-1] if found else None

    def __iter__(self) -> Iterator[Phase]:
        return iter(self.all())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class LogLine:
    """One line a process wrote; ``source`` is the extension name or ``"runtime"``."""

    t: float
    source: str
    stream: str  # "stdout" | "stderr"
    text: str


class LogCapture:
    """Thread-safe store of every captured :class:`LogLine`."""

    def __init__(self) -> None:
        self._lines: list[LogLine] = []
        self._lock = threading.Lock()

    def add(self, line: LogLine) -> None:
        with self._lock:
            self._lines.append(line)

    def lines(self, source: str | None = None, stream: str | None = None) -> list[LogLine]:
        with self._lock:
            items = list(self._lines)
        return [
            ln
            for ln in items
            if (source is None or ln.source == source) and (stream is None or ln.stream == stream)
        ]

    def text(self, source: str | None = None, stream: str | None = None) -> str:
        return "\n".join(ln.text for ln in self.lines(source, stream))

    def __iter__(self) -> Iterator[LogLine]:
        return iter(self.lines())


@dataclass
class ExtensionRecord:
    """Lifecycle of one external extension process (times in ``time.monotonic()`` seconds)."""

    name: str  # the file name under extensions/
    path: str
    pid: int | None = None
    exec_at: float | None = None  # just before the spawn call
    registered_at: float | None = None
    registered_name: str | None = None
    events: tuple[str, ...] = ()
    ready_at: float | None = None  # first event/next
    init_error: tuple[str, str] | None = None  # (error type, message)
    exit_error: tuple[str, str] | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    killed: bool = False

    @property
    def exec_to_register_ms(self) -> float | None:
        return _ms(self.exec_at, self.registered_at)

    @property
    def exec_to_ready_ms(self) -> float | None:
        return _ms(self.exec_at, self.ready_at)


@dataclass(frozen=True)
class InitReport:
    """The INIT phase as Lambda would bill and log it."""

    duration_ms: float  # init start -> runtime and every extension ready
    runtime_init_ms: float  # runtime exec -> its first invocation/next
    extensions: dict[str, ExtensionRecord]


@dataclass(frozen=True)
class InvokeResult:
    """One invocation. ``payload`` is the decoded JSON response (or raw text if not JSON)."""

    request_id: str
    ok: bool
    payload: Any
    error_type: str | None  # e.g. "Unhandled", "Sandbox.Timedout", "Runtime.ExitError"
    error: Any  # the runtime's error body (decoded) or a message
    duration_ms: float  # invoke start -> runtime response
    total_ms: float  # invoke start -> runtime responded and every extension called next again
    started_at: float
    responded_at: float | None
    ended_at: float


@dataclass(frozen=True)
class ProcessExit:
    """How one process ended during SHUTDOWN."""

    source: str
    exit_code: int | None
    after_ms: float | None  # shutdown start -> exit
    killed: bool  # SIGKILLed by the emulator after the deadline


@dataclass(frozen=True)
class ShutdownReport:
    """The SHUTDOWN phase: every process's exit and who had to be killed."""

    reason: str
    deadline_ms: float
    duration_ms: float
    extensions: dict[str, ProcessExit]
    runtime: ProcessExit | None

    @property
    def killed(self) -> list[str]:
        names = [e.source for e in self.extensions.values() if e.killed]
        if self.runtime is not None and self.runtime.killed:
            names.append(self.runtime.source)
        return names


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) * 1000.0
