"""``./build.sh local-invoke``: your own function with the secretcache layer under AWS's RIE.

Runs the handler in ``--code`` with the built layer at /opt, under AWS's Runtime Interface
Emulator (the code ``sam local invoke`` runs, here without Docker: see ``tools/rie``) and
``python -m awslambdaric`` as the runtime, against an embedded moto server (default) or the AWS
endpoint you name (``--endpoint``, e.g. LocalStack). Prints each invoke's response on stdout and
the function's and the extension's log lines on stderr; exits 0 when every invoke succeeded.

    ./build.sh local-invoke --code examples --handler app.handler --seed seed.json --invokes 2
    ./build.sh local-invoke --code src --handler app.handler --endpoint http://127.0.0.1:4566 \\
        --event event.json --env SECRET_ID=prod/db

``--seed FILE`` (moto only) creates resources first, from JSON::

    {"secrets": {"prod/db": "s3cr3t"},
     "parameters": {"/app/key": "v", "/app/secure": {"value": "v", "type": "SecureString"}}}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli import parse_env
from .emulator.records import LogLine
from .layer import layer_dir
from .rie.sandbox import SANDBOX

EXIT_USAGE = 2
EXIT_NO_RIE = 3


def _read_event(value: str | None) -> bytes:
    """The event: a file's content, a JSON literal, or ``{}``."""
    if value is None:
        return b"{}"
    path = Path(value)
    data = path.read_bytes() if path.is_file() else value.encode()
    try:
        json.loads(data)
    except ValueError as exc:
        raise SystemExit(f"local-invoke: --event is neither a JSON file nor JSON: {exc}") from None
    return data


def seed_moto(moto: Any, seed: dict[str, Any]) -> list[str]:
    """Create the secrets and parameters of a ``--seed`` document; returns what was made."""
    made = []
    sm, ssm = moto.client("secretsmanager"), moto.client("ssm")
    for name, value in (seed.get("secrets") or {}).items():
        sm.create_secret(Name=name, SecretString=str(value))
        made.append(f"secret {name}")
    for name, spec in (seed.get("parameters") or {}).items():
        spec = spec if isinstance(spec, dict) else {"value": spec}
        kind = spec.get("type", "String")
        ssm.put_parameter(Name=name, Value=str(spec["value"]), Type=kind, Overwrite=True)
        made.append(f"{kind} {name}")
    return made


def _credentials(endpoint: str | None) -> tuple[str, str]:
    """moto takes anything; a named endpoint gets the caller's keys if set."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if endpoint and key and secret:
        return key, secret
    return "testing", "testing"


def _echo(*, quiet: bool, verbose: bool) -> Callable[[LogLine], None]:
    """Print the function's and the extension's lines (and RIE's own with ``verbose``)."""

    def echo(line: LogLine) -> None:
        if quiet or (line.source != SANDBOX and not verbose):
            return
        print(line.text if line.source == SANDBOX else f"[rie] {line.text}", file=sys.stderr)

    return echo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./build.sh local-invoke",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--code", required=True, help="the function's code directory (/var/task)")
    parser.add_argument("--handler", default="app.handler", help="module.function")
    parser.add_argument("--event", help="a JSON file or a JSON literal (default {})")
    parser.add_argument("--invokes", type=int, default=1, help="how many times to invoke")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--endpoint", help="AWS_ENDPOINT_URL for the sandbox (default: moto)")
    parser.add_argument("--seed", help="JSON file of secrets/parameters to create in moto")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--layer", help="unpacked layer directory (default: the built one)")
    parser.add_argument("--python", help="the runtime's interpreter (default: this one)")
    parser.add_argument("--timeout", type=int, default=30, help="function timeout, seconds")
    parser.add_argument("--quiet", action="store_true", help="do not echo log lines")
    parser.add_argument("--verbose", action="store_true", help="also echo RIE's own debug log")
    args = parser.parse_args(argv)

    from .rie import RieError, RieSandbox, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        print(f"local-invoke: AWS's RIE cannot run here: {reason}", file=sys.stderr)
        return EXIT_NO_RIE
    code = Path(args.code)
    if not code.is_dir():
        print(f"local-invoke: --code {code} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if args.seed and args.endpoint:
        print("local-invoke: --seed fills the embedded moto; not with --endpoint", file=sys.stderr)
        return EXIT_USAGE
    event = _read_event(args.event)
    env = parse_env(args.env, "local-invoke")

    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint
        if endpoint is None:
            from .moto_server import MotoServer

            moto = MotoServer()
            stack.callback(moto.stop)
            moto.start()
            endpoint = moto.url
            print(f"local-invoke: moto server (AWS stand-in) on {endpoint}", file=sys.stderr)
            if args.seed:
                made = seed_moto(moto, json.loads(Path(args.seed).read_text()))
                print(f"local-invoke: seeded {', '.join(made) or 'nothing'}", file=sys.stderr)
        rie = RieSandbox(
            code,
            args.handler,
            env,
            layer=args.layer or layer_dir(),
            endpoint_url=endpoint,
            region=args.region,
            timeout_s=args.timeout,
            credentials=_credentials(args.endpoint),
            python=args.python or sys.executable,
            isolated=False,  # the handler sees this interpreter's packages (boto3, as on Lambda)
            echo=_echo(quiet=args.quiet, verbose=args.verbose),
        )
        stack.callback(rie.close)
        try:
            rie.start()
        except RieError as exc:
            print(f"local-invoke: {exc}", file=sys.stderr)
            return EXIT_NO_RIE
        status = 0
        for n in range(args.invokes):
            result = rie.invoke(event, timeout=args.timeout + 30)
            body = result.body.decode(errors="replace")
            print(body if body else f'{{"status": {result.status}}}', flush=True)
            if not result.ok:
                status = 1
                print(f"local-invoke: invoke {n + 1} failed: {result.error_type}", file=sys.stderr)
        stopped = rie.stop()
        if stopped.killed:
            print("local-invoke: RIE did not stop within 5 s and was killed", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
