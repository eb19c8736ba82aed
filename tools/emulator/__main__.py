"""Run a handler with a layer on the emulator by hand.

    python -m tools.emulator --layer dist/secretcache-layer.zip --code examples \\
        --handler app.handler --event '{}' --invokes 2 --moto --env SECRETS_MANAGER_TTL=5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from tools.cli import parse_env

from .emulator import LambdaEmulator
from .records import InitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--layer", default="dist/secretcache-layer.zip", help="layer zip or dir")
    parser.add_argument("--code", required=True, help="the function's code directory")
    parser.add_argument("--handler", default="app.handler")
    parser.add_argument("--event", default="{}", help="JSON event for every invoke")
    parser.add_argument("--invokes", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--endpoint-url", help="AWS_ENDPOINT_URL for the sandbox")
    parser.add_argument("--moto", action="store_true", help="start a moto server as AWS")
    parser.add_argument("--quiet", action="store_true", help="do not echo process output")
    args = parser.parse_args(argv)

    event: Any = json.loads(args.event)
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint_url
        if args.moto:
            from tools.moto_server import MotoServer

            moto = MotoServer().start()
            stack.callback(moto.stop)
            endpoint = moto.url
            print(f"moto server: {endpoint}", file=sys.stderr)
        emu = stack.enter_context(
            LambdaEmulator(
                args.layer,
                args.code,
                args.handler,
                parse_env(args.env, "tools.emulator"),
                endpoint_url=endpoint,
                echo=not args.quiet,
            )
        )
        try:
            report = emu.init()
        except InitError as exc:
            print(f"INIT failed: {exc.error_type}: {exc.message}", file=sys.stderr)
            return 1
        print(f"INIT {report.duration_ms:.1f} ms (runtime init {report.runtime_init_ms:.1f} ms)")
        for name, rec in report.extensions.items():
            print(
                f"  extension {name}: exec->register {rec.exec_to_register_ms:.1f} ms, "
                f"exec->ready {rec.exec_to_ready_ms:.1f} ms"
            )
        status = 0
        for n in range(args.invokes):
            result = emu.invoke(event)
            label = "cold" if n == 0 else "warm"
            print(
                f"INVOKE {n + 1} ({label}) {result.duration_ms:.1f} ms "
                f"(until extensions done {result.total_ms:.1f} ms)"
            )
            if result.ok:
                print(json.dumps(result.payload, indent=2))
            else:
                status = 1
                print(f"  error {result.error_type}: {json.dumps(result.error)}")
                if emu.state != "ready":
                    break
        down = emu.shutdown()
        for name, ext in down.extensions.items():
            print(
                f"SHUTDOWN {name}: exit {ext.exit_code} after "
                f"{(ext.after_ms or 0):.1f} ms{' (SIGKILLed)' if ext.killed else ''}"
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
