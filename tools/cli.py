"""Command-line pieces the tools share."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def interrupts_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every process a tool started is stopped."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_env(pairs: list[str], prog: str) -> dict[str, str]:
    """``["K=V", ...]`` from repeated ``--env`` options; exits with a message naming a bad one."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{prog}: --env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env
