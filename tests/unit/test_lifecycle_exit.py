"""The process ends promptly at shutdown even with a thread stuck in the default executor."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.extension_process import REPO

#: A coroutine that leaves a thread blocked for good in the default executor (as a DNS lookup
#: stuck in getaddrinfo does), then returns; the process must still exit at once.
PROGRAM = """
import asyncio, threading
from secretcache.lifecycle import exit_now, run_event_loop

async def main() -> int:
    asyncio.get_running_loop().run_in_executor(None, threading.Event().wait)
    await asyncio.sleep(0.05)
    return 3

exit_now(run_event_loop(main()))
"""


def test_exit_does_not_wait_for_a_stuck_executor_thread() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={"PYTHONPATH": str(REPO / "extension")},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 3, done.stderr
    # Lambda allows 2 s from SHUTDOWN to exit; a correctness bound, with room for a busy machine.
    assert time.monotonic() - started < 5
