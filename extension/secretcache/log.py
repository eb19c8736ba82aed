"""Structured logging: one JSON object per line on stdout.

Callers pass named fields, never free text built from values, and the token is scrubbed from
every line as a last line of defence, so a secret cannot reach a log by accident.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40, "none": 100}


def where(exc: BaseException) -> str:
    """`file.py:line in function` of the innermost frame: where it failed, never what it held."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name}"


class Logger:
    """A minimal JSON-lines logger; cheaper to import than `logging` and safe by construction."""

    def __init__(self, level: str = "info", stream: TextIO | None = None) -> None:
        self.threshold = LEVELS[level]
        self._stream = stream
        self._scrub: tuple[str, ...] = ()

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    def never_print(self, *sensitive: str) -> None:
        """Register strings (the token) that are replaced by `***` if they ever reach a line.

        Strings under 8 characters are not scrubbed: they would mangle ordinary words, and no
        real session token is that short.
        """
        self._scrub = tuple(s for s in (*self._scrub, *sensitive) if len(s) >= 8)

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self.threshold:
            return
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "level": level.upper(),
            "logger": "secretcache",
            "event": event,
        }
        record.update(fields)
        import json  # not at module import: the first line comes after registering

        line = json.dumps(record, default=str, separators=(",", ":"))
        for s in self._scrub:
            if s in line:
                line = line.replace(s, "***")
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warn(self, event: str, **fields: Any) -> None:
        self._emit("warn", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


log = Logger()
