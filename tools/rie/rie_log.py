"""Reading RIE's own log (its stderr, ``--log-level debug``): when each INIT step happened.

RIE stamps its lines with the wall clock to the millisecond::

    25 Nov 2026 17:44:55,593 [INFO] (rapid) INIT START(type: on-demand, phase: init)
    25 Nov 2026 17:44:55,637 [INFO] (rapid) External agent secretcache (<id>) registered, ...
    25 Nov 2026 17:44:55,640 [DEBUG] (rapid) API request - GET /2020-01-01/extension/event/next, ...
    25 Nov 2026 17:44:56,681 [INFO] (rapid) INIT REPORT(durationMs: 1088.397000)

so an extension's exec -> register and exec -> ready (its first ``event/next``) can be read off
it, with RIE's own start of INIT standing for the exec (RIE starts the extensions right after).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

_STAMP = re.compile(r"^(\d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2},\d{3}) \[(\w+)\] \(rapid\) (.*)$")
_REGISTERED = re.compile(r"External agent (\S+) \(([0-9a-f-]+)\) registered")
_EVENT_NEXT = re.compile(
    r"GET /2020-01-01/extension/event/next.*Lambda-Extension-Identifier:\[([^\]]+)\]"
)
_INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: ([\d.]+)\)")
_FATAL = re.compile(r"First fatal error stored in appctx: (\S+)")


def parse_line(line: str) -> tuple[float, str, str] | None:
    """(epoch seconds, level, message) of one RIE log line, or None for any other line."""
    match = _STAMP.match(line)
    if match is None:
        return None
    stamp = datetime.strptime(match.group(1), "%d %b %Y %H:%M:%S,%f")
    return stamp.timestamp(), match.group(2), match.group(3)


@dataclass
class InitTimeline:
    """One INIT as RIE logged it (epoch seconds, millisecond resolution)."""

    started_at: float
    registered_at: dict[str, float] = field(default_factory=dict)  # extension name -> time
    ready_at: dict[str, float] = field(default_factory=dict)  # first event/next
    duration_ms: float | None = None  # RIE's INIT REPORT
    fatal_error: str | None = None  # e.g. Extension.InitError

    def exec_to_register_ms(self, name: str) -> float | None:
        at = self.registered_at.get(name)
        return None if at is None else (at - self.started_at) * 1000.0

    def exec_to_ready_ms(self, name: str) -> float | None:
        at = self.ready_at.get(name)
        return None if at is None else (at - self.started_at) * 1000.0


def init_timelines(lines: Iterable[str]) -> list[InitTimeline]:
    """Every INIT in the log, in order (RIE runs INIT again after a failed one)."""
    inits: list[InitTimeline] = []
    names: dict[str, str] = {}  # extension identifier -> name
    for line in lines:
        parsed = parse_line(line)
        if parsed is None:
            continue
        at, _level, message = parsed
        if message.startswith("INIT START("):
            inits.append(InitTimeline(started_at=at))
            continue
        if not inits:
            continue
        current = inits[-1]
        if match := _REGISTERED.search(message):
            names[match.group(2)] = match.group(1)
            current.registered_at.setdefault(match.group(1), at)
        elif match := _EVENT_NEXT.search(message):
            name = names.get(match.group(1))
            if name is not None:
                current.ready_at.setdefault(name, at)
        elif match := _INIT_REPORT.search(message):
            if current.duration_ms is None:
                current.duration_ms = float(match.group(1))
        elif (match := _FATAL.search(message)) and current.fatal_error is None:
            current.fatal_error = match.group(1)
    return inits


_RTDONE = re.compile(r"INVOKE RTDONE\(status: (\w+).*duration: ([\d.]+)ms\)")


def invoke_durations(lines: Iterable[str]) -> list[float]:
    """Milliseconds from RIE handing each invoke to the runtime to the runtime's answer, in order.

    (RIE's ``INVOKE RTDONE`` line; unlike the REPORT line's Duration it never includes INIT.)
    """
    found = []
    for line in lines:
        parsed = parse_line(line)
        if parsed is not None and (match := _RTDONE.search(parsed[2])):
            found.append(float(match.group(2)))
    return found
