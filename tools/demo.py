"""The demo behind ``./build.sh demo``: the example function with the layer on AWS's own emulator.

Starts moto server (the local stand-in for AWS) seeded with example secrets, runs
``examples/app.py`` (``app.handler``) with the built layer under AWS's Runtime Interface Emulator
(RIE, the code ``sam local`` runs; see ``tools/rie``), invokes it cold and warm, and prints what
it read (masked) and the figures: the extension's exec -> register and exec -> ready times (from
RIE's log, 1 ms resolution), INIT and invoke durations, a cache miss and a cache hit timed from
this process with a raw ``http.client`` request, and the SHUTDOWN time. Where RIE cannot start
(no ``unshare``, not root, no aws-sam-cli) it says why and runs on our own emulator
(``tools.emulator``) instead; ``--emulator ours`` asks for that.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli import interrupts_as_exit
from .emulator import InitError, LambdaEmulator
from .emulator.records import LogCapture
from .layer import REPO, layer_dir

EXAMPLES = REPO / "examples"
TEMPLATE = REPO / "template.yaml"

# What the demo puts into moto. The example reads these through the extension.
SECRET_NAME = "demo/db-password"
SECRET_VALUE = "Tr0ub4dor&3-horse"
PARAMETER_NAME = "/demo/api-key"
PARAMETER_VALUE = "ak-7f3c9e21b5d04a68"
KMS_PLAINTEXT = b"envelope-data-key-0123456789abcdef"


def mask(value: object) -> str:
    """``********(16 chars)``: shows that a value arrived, never the value."""
    return f"********({len(str(value))} chars)"


def _seed(moto: Any) -> dict[str, str]:
    """Create the example's resources; returns the function environment that names them."""
    sm, ssm, kms = (moto.client(s) for s in ("secretsmanager", "ssm", "kms"))
    sm.create_secret(Name=SECRET_NAME, SecretString=SECRET_VALUE)
    ssm.put_parameter(Name=PARAMETER_NAME, Value=PARAMETER_VALUE, Type="SecureString")
    key = kms.create_key(Description="secretcache demo envelope key")["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=KMS_PLAINTEXT)["CiphertextBlob"]
    return {
        "SECRET_ID": SECRET_NAME,
        "PARAMETER_NAME": PARAMETER_NAME,
        "CIPHERTEXT_B64": base64.b64encode(blob).decode(),
        "KMS_KEY_ID": key["Arn"],
    }


def _template_environment() -> dict[str, str]:
    """The example function's plain-string environment in template.yaml (TTLs, log level...).

    Values that are CloudFormation expressions (``!Ref``, ``!Sub``...) name deployed resources;
    the demo replaces those with the resources it seeded into moto.
    """
    if not TEMPLATE.is_file():
        return {}
    try:
        import yaml
    except ImportError:
        return {}

    class _Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
        return {"__tag__": suffix}

    _Loader.add_multi_constructor("!", _any_tag)
    try:
        doc = yaml.load(TEMPLATE.read_text(), Loader=_Loader)
    except yaml.YAMLError:
        return {}
    variables: dict[str, object] = {}
    glob = (doc.get("Globals") or {}).get("Function") or {}
    variables.update(((glob.get("Environment") or {}).get("Variables")) or {})
    for resource in (doc.get("Resources") or {}).values():
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function":
            props = resource.get("Properties") or {}
            variables.update(((props.get("Environment") or {}).get("Variables")) or {})
            break
    return {k: str(v) for k, v in variables.items() if isinstance(v, (str, int, float, bool))}


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed_gets(port: int, token: str, path: str, count: int) -> list[float]:
    """Microseconds per GET on one kept-alive connection, as a handler's client would do."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"X-Aws-Parameters-Secrets-Token": token}
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            times.append((time.perf_counter() - start) * 1e6)
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
    finally:
        conn.close()
    return times


def _print_payload(payload: Any, secrets_: set[str], indent: str = "    ") -> None:
    if isinstance(payload, dict):
        for key, value in payload.items():
            if isinstance(value, (dict, list)):
                print(f"{indent}{key}:")
                _print_payload(value, secrets_, indent + "  ")
            else:
                shown = mask(value) if str(value) in secrets_ else value
                print(f"{indent}{key}: {shown}")
    else:
        print(f"{indent}{payload}")


def _init_read(lines: list[str]) -> float | None:
    """``read_ms`` of the example's reads at import, from the line it prints during INIT."""
    for text in lines:
        with contextlib.suppress(ValueError, SyntaxError):
            record = ast.literal_eval(text)
            if isinstance(record, dict) and record.get("phase") == "init":
                return float(record["read_ms"])
    return None


@dataclass
class Figures:
    """What the demo prints, from whichever emulator ran the function."""

    exec_to_register_ms: float | None
    exec_to_ready_ms: float | None
    init_ms: float | None
    init_reads_ms: float | None
    invokes: list[tuple[str, float | None, object]] = field(default_factory=list)
    misses_us: list[float] = field(default_factory=list)
    hits_us: list[float] = field(default_factory=list)
    shutdown_ms: float | None = None
    shutdown_how: str = ""


def _time_reads(port: int, token: str, figures: Figures) -> None:
    path = f"/secretsmanager/get?secretId={SECRET_NAME}"
    figures.misses_us = _timed_gets(port, token, path + "&refreshNow=true", 5)
    _timed_gets(port, token, path, 20)  # warm the connection path
    figures.hits_us = sorted(_timed_gets(port, token, path, 500))


def _ms(value: float | None, width: int = 8, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"


def _print_figures(figures: Figures, source: str) -> None:
    print(f"\nFigures (this machine, loopback, moto as AWS; {source}):")
    print(f"  extension exec -> register     {_ms(figures.exec_to_register_ms)} ms")
    print(f"  extension exec -> ready        {_ms(figures.exec_to_ready_ms)} ms")
    print(f"  INIT (extension + runtime)     {_ms(figures.init_ms)} ms")
    if figures.init_reads_ms is not None:
        print(
            f"  the 3 reads during INIT        {figures.init_reads_ms:8.1f} ms"
            "  (misses, handler's view)"
        )
    for label, duration_ms, read_ms in figures.invokes:
        reads = f"  (its 3 reads: {read_ms} ms)" if read_ms is not None else ""
        print(f"  {label} invoke                    {_ms(duration_ms)} ms{reads}")
    misses, hits = figures.misses_us, figures.hits_us
    print(
        f"  cache miss (refreshNow=true)   {statistics.median(misses) / 1000:8.2f} ms"
        f"  (median of {len(misses)}, raw http.client)"
    )
    print(
        f"  cache hit                      {statistics.median(hits):8.0f} us"
        f"  (median of {len(hits)}; p99 {hits[int(len(hits) * 0.99) - 1]:.0f} us)"
    )
    print(
        f"  SHUTDOWN                       {_ms(figures.shutdown_ms)} ms ({figures.shutdown_how})"
    )


def _stop_unless_ok(label: str, ok: bool, error: str, logs: LogCapture) -> None:
    """A failed demo invoke ends the demo with everything the sandbox logged."""
    if not ok:
        print(f"{label} invoke failed: {error}")
        print(logs.text(), file=sys.stderr)
        raise SystemExit(1)


def _show_reads(payload: object) -> None:
    print("\nWhat the function read on its cold invoke (values masked):")
    _print_payload(payload, {SECRET_VALUE, PARAMETER_VALUE, KMS_PLAINTEXT.decode()})


def _read_ms(payload: object) -> object:
    return payload.get("read_ms") if isinstance(payload, dict) else None


def run_on_rie(env: dict[str, str], port: int, moto_url: str, verbose: bool) -> Figures | None:
    """The example on AWS's Runtime Interface Emulator; None if RIE could not start."""
    from tools.rie import RieError, RieSandbox, rie_binary
    from tools.rie.rie_log import invoke_durations

    rie = RieSandbox(
        EXAMPLES,
        "app.handler",
        env,
        layer=layer_dir(),
        endpoint_url=moto_url,
        function_name="secretcache-demo",
        echo=verbose,
    )
    try:
        rie.start()
    except RieError as exc:
        rie.close()
        print(f"  AWS's emulator could not start: {exc}")
        return None
    with contextlib.closing(rie):
        print(
            f"Lambda emulator: AWS's Runtime Interface Emulator ({rie_binary()}), "
            f"invoke API on 127.0.0.1:{rie.port}, extension port {port}"
        )
        results = [("cold", rie.invoke({})), ("warm", rie.invoke({}))]
        for label, result in results:
            _stop_unless_ok(label, result.ok, f"{result.error_type}: {result.payload!r}", rie.logs)
        _show_reads(results[0][1].payload)
        # RIE logs each invoke's RTDONE line as it answers: give its log a moment to arrive
        deadline = time.monotonic() + 5
        while True:
            durations = invoke_durations(line.text for line in rie.logs.lines("rie"))
            if len(durations) >= len(results) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        (init, *_) = rie.inits()
        figures = Figures(
            exec_to_register_ms=init.exec_to_register_ms("secretcache"),
            exec_to_ready_ms=init.exec_to_ready_ms("secretcache"),
            init_ms=init.duration_ms,
            init_reads_ms=_init_read([line.text for line in rie.logs.lines("sandbox")]),
            invokes=[
                (label, durations[n] if n < len(durations) else None, _read_ms(result.payload))
                for n, (label, result) in enumerate(results)
            ],
        )
        _time_reads(port, rie.session_token, figures)
        stopped = rie.stop()
        clean = any(r.get("event") == "extension.stopped" for r in rie.extension_log())
        figures.shutdown_ms = stopped.duration_ms
        figures.shutdown_how = (
            "RIE SIGKILLed" if stopped.killed else f"exit {stopped.exit_code}"
        ) + ("; the extension logged extension.stopped" if clean else "")
    return figures


def run_on_our_emulator(
    env: dict[str, str], port: int, moto_url: str, layer: Path, verbose: bool
) -> Figures:
    """The example on our own emulator (tools.emulator)."""
    with LambdaEmulator(
        layer,
        EXAMPLES,
        "app.handler",
        env,
        endpoint_url=moto_url,
        function_name="secretcache-demo",
        echo=verbose,
    ) as emu:
        print(
            f"Lambda emulator: ours (tools.emulator), Runtime/Extensions API on "
            f"{emu.runtime_api}, extension port {port}"
        )
        try:
            init = emu.init()
        except InitError as exc:
            print(f"INIT failed: {exc.error_type}: {exc.message}", file=sys.stderr)
            print(emu.logs.text(), file=sys.stderr)
            raise SystemExit(1) from None
        results = [("cold", emu.invoke({})), ("warm", emu.invoke({}))]
        for label, result in results:
            _stop_unless_ok(label, result.ok, f"{result.error_type}: {result.error}", emu.logs)
        _show_reads(results[0][1].payload)
        ext = init.extensions["secretcache"]
        figures = Figures(
            exec_to_register_ms=ext.exec_to_register_ms,
            exec_to_ready_ms=ext.exec_to_ready_ms,
            init_ms=init.duration_ms,
            init_reads_ms=_init_read([ln.text for ln in emu.logs.lines("runtime", "stdout")]),
            invokes=[
                (label, result.duration_ms, _read_ms(result.payload)) for label, result in results
            ],
        )
        _time_reads(port, emu.session_token, figures)
        stopped = emu.shutdown().extensions.get("secretcache")
        if stopped is not None:
            figures.shutdown_ms = stopped.after_ms
            figures.shutdown_how = "SIGKILLed" if stopped.killed else f"exit {stopped.exit_code}"
    return figures


def run(args: argparse.Namespace) -> int:
    if not (EXAMPLES / "app.py").is_file():
        print(f"demo: {EXAMPLES / 'app.py'} is missing (the example function)", file=sys.stderr)
        return 1
    if not (layer_dir() / "extensions").is_dir():
        print("demo: building the layer (./build.sh layer)...", file=sys.stderr)
        subprocess.run([str(REPO / "build.sh"), "layer"], cwd=REPO, check=True)

    from tools.moto_server import MotoServer
    from tools.rie import unavailable_reason

    with contextlib.ExitStack() as stack:
        print("Starting moto server (local stand-in for AWS)...")
        moto = MotoServer()
        stack.callback(moto.stop)
        moto.start()
        seeded = _seed(moto)
        print(f"  {moto.url}: secret {SECRET_NAME}, SecureString {PARAMETER_NAME}, a KMS key")

        port = 2773 if _port_is_free(2773) else _free_port()
        env = {**_template_environment(), **seeded}
        env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] = str(port)

        figures = None
        reason = "--emulator ours was asked for" if args.emulator == "ours" else None
        reason = reason or unavailable_reason()
        if reason is None:
            figures = run_on_rie(env, port, moto.url, args.verbose)
            reason = "it failed to start (above)"
        if figures is None:
            print(
                f"Falling back to our own emulator (tools.emulator): AWS's RIE not used: {reason}"
            )
            figures = run_on_our_emulator(env, port, moto.url, layer_dir(), args.verbose)
            _print_figures(figures, "our emulator")
        else:
            _print_figures(figures, "AWS's Runtime Interface Emulator")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    parser.add_argument(
        "--emulator",
        choices=("rie", "ours"),
        default="rie",
        help="rie (default): AWS's Runtime Interface Emulator; ours: tools.emulator",
    )
    parser.add_argument("--verbose", action="store_true", help="echo every process's output")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    with interrupts_as_exit():
        try:
            return run(args)
        except KeyboardInterrupt:
            print("\ninterrupted; everything stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
