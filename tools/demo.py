"""The demo behind ``./build.sh demo``: the example function with the layer on the emulator.

Starts moto server (the local stand-in for AWS) seeded with example secrets, runs
``examples/app.py`` (``app.handler``) with the built layer on the local Lambda emulator, invokes it
cold and warm, and prints what it read (masked) and the figures: the extension's exec -> register
and exec -> ready times (from the emulator's phase records), a cache miss and a cache hit timed
from this process with a raw ``http.client`` request, and the invoke durations.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .emulator import InitError, LambdaEmulator

REPO = Path(__file__).resolve().parents[1]
LAYER_ZIP = REPO / "dist" / "secretcache-layer.zip"
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


def _init_read(emu: LambdaEmulator) -> float | None:
    """``read_ms`` of the example's reads at import, from the line it prints during INIT."""
    for line in emu.logs.lines("runtime", "stdout"):
        with contextlib.suppress(ValueError, SyntaxError):
            record = ast.literal_eval(line.text)
            if isinstance(record, dict) and record.get("phase") == "init":
                return float(record["read_ms"])
    return None


@contextlib.contextmanager
def _interrupts_as_exit() -> Iterator[None]:
    """Ctrl-C or SIGTERM unwind through the with-blocks, so every process is stopped."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    if not (EXAMPLES / "app.py").is_file():
        print(f"demo: {EXAMPLES / 'app.py'} is missing (the example function)", file=sys.stderr)
        return 1
    layer = Path(args.layer)
    if not layer.exists():
        print("demo: building the layer (./build.sh layer)...", file=sys.stderr)
        subprocess.run([str(REPO / "build.sh"), "layer"], cwd=REPO, check=True)

    from tools.moto_server import MotoServer

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
        emu = stack.enter_context(
            LambdaEmulator(
                layer,
                EXAMPLES,
                "app.handler",
                env,
                endpoint_url=moto.url,
                function_name="secretcache-demo",
                echo=args.verbose,
            )
        )
        print(
            f"Lambda emulator: Runtime/Extensions API on {emu.runtime_api}, extension port {port}"
        )

        try:
            init = emu.init()
        except InitError as exc:
            print(f"INIT failed: {exc.error_type}: {exc.message}", file=sys.stderr)
            print(emu.logs.text(), file=sys.stderr)
            return 1
        cold = emu.invoke({})
        warm = emu.invoke({})
        for label, result in (("cold", cold), ("warm", warm)):
            if not result.ok:
                print(f"{label} invoke failed: {result.error_type}: {result.error}")
                print(emu.logs.text(), file=sys.stderr)
                return 1

        secret_values = {SECRET_VALUE, PARAMETER_VALUE, KMS_PLAINTEXT.decode()}
        print("\nWhat the function read on its cold invoke (values masked):")
        _print_payload(cold.payload, secret_values)
        at_init = _init_read(emu)

        token = emu.session_token
        path = f"/secretsmanager/get?secretId={SECRET_NAME}"
        misses = _timed_gets(port, token, path + "&refreshNow=true", 5)
        _timed_gets(port, token, path, 20)  # warm the connection path
        hits = _timed_gets(port, token, path, 500)

        ext = init.extensions["secretcache"]
        down = emu.shutdown()
        stopped = down.extensions.get("secretcache")

        print("\nFigures (this machine, loopback, moto as AWS):")
        print(f"  extension exec -> register     {ext.exec_to_register_ms:8.1f} ms")
        print(f"  extension exec -> ready        {ext.exec_to_ready_ms:8.1f} ms")
        print(f"  INIT (extension + runtime)     {init.duration_ms:8.1f} ms")
        if at_init is not None:
            print(f"  the 3 reads during INIT        {at_init:8.1f} ms  (misses, handler's view)")
        for label, result in (("cold", cold), ("warm", warm)):
            read_ms = result.payload.get("read_ms") if isinstance(result.payload, dict) else None
            reads = f"  (its 3 reads: {read_ms} ms)" if read_ms is not None else ""
            print(f"  {label} invoke                    {result.duration_ms:8.1f} ms{reads}")
        print(
            f"  cache miss (refreshNow=true)   {statistics.median(misses) / 1000:8.2f} ms"
            f"  (median of {len(misses)}, raw http.client)"
        )
        hits.sort()
        print(
            f"  cache hit                      {statistics.median(hits):8.0f} us"
            f"  (median of {len(hits)}; p99 {hits[int(len(hits) * 0.99) - 1]:.0f} us)"
        )
        if stopped is not None:
            how = "SIGKILLed" if stopped.killed else f"exit {stopped.exit_code}"
            print(f"  SHUTDOWN                       {stopped.after_ms or 0:8.1f} ms ({how})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    parser.add_argument("--layer", default=str(LAYER_ZIP))
    parser.add_argument("--verbose", action="store_true", help="echo every process's output")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    with _interrupts_as_exit():
        try:
            return run(args)
        except KeyboardInterrupt:
            print("\ninterrupted; everything stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
