"""Functions that are not Python, with no python3 on their PATH, reading through the layer.

On the local Lambda emulator: the real layer zip (its extension on the bundled interpreter)
and a runtime process in another language: Node.js with fetch (as nodejs22.x), a shell
bootstrap with curl (as provided.al2023), and Java on a runtime-API loop. The emulator's own
runtime is Python, so the runtime process is swapped for each language's here.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.emulator import LambdaEmulator
from tools.emulator.emulator import RUNTIME
from tools.moto_server import MotoServer
from tools.net import free_port

from .conftest import SeededAws

FUNCTIONS = Path(__file__).with_name("functions")


class ForeignRuntimeEmulator(LambdaEmulator):
    """The emulator with the function's runtime process given as argv (any language)."""

    def __init__(self, *args: object, runtime_argv: list[str], **kwargs: object) -> None:
        self.runtime_argv = runtime_argv
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _start_runtime(self) -> None:
        env = self._base_env()
        self._runtime_exec_at = time.monotonic()
        self.phases.add(RUNTIME, "runtime.exec", self._runtime_exec_at)
        self._runtime = self._spawn(RUNTIME, self.runtime_argv, env)


@pytest.fixture
def foreign_sandbox(
    layer_zip: Path, moto_server: MotoServer, seeded_aws: SeededAws
) -> Iterator[Callable[..., LambdaEmulator]]:
    made: list[LambdaEmulator] = []

    def make(code: Path, handler: str, argv: list[str], **options: object) -> LambdaEmulator:
        env = {
            **seeded_aws.function_env(),
            "SECRETCACHE_PYTHON": None,
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
        }
        emu = ForeignRuntimeEmulator(
            layer_zip,
            code,
            handler,
            env,
            endpoint_url=moto_server.url,
            python=None,  # no python3 on the PATH of the extension or the function
            runtime_argv=argv,
            **options,
        )
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


def assert_no_python_on_path(emu: LambdaEmulator) -> None:
    path = emu.environment["PATH"]
    for name in ("python3", "python", "python3.13"):
        assert shutil.which(name, path=path) is None, name
    assert "SECRETCACHE_PYTHON" not in emu.environment


def run_twice(emu: LambdaEmulator) -> tuple[dict[str, Any], dict[str, Any]]:
    emu.init()
    cold, warm = emu.invoke({}), emu.invoke({})
    assert cold.ok, (cold.error, emu.logs.text())
    assert warm.ok, warm.error
    report = emu.shutdown()
    assert report.extensions["secretcache"].exit_code == 0
    return cold.payload, warm.payload


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return found


def test_node_function_reads_with_fetch(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    node = tool("node")
    code = FUNCTIONS / "node"
    emu = foreign_sandbox(code, "index.handler", [node, str(code / "runtime.mjs")])
    assert_no_python_on_path(emu)
    cold, warm = run_twice(emu)
    for payload in (cold, warm):
        assert payload["secret"] == seeded_aws.secret_value
        assert payload["secure_string"] == seeded_aws.secure_value
        assert payload["kms_plaintext"] == seeded_aws.kms_plaintext
        assert payload["runtime"].startswith("node v")


def test_provided_shell_bootstrap_reads_with_curl(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    tool("curl")
    code = FUNCTIONS / "shell"
    emu = foreign_sandbox(code, "handler", [str(code / "bootstrap")])
    assert_no_python_on_path(emu)
    cold, warm = run_twice(emu)
    for payload in (cold, warm):
        assert payload["secret_response"]["SecretString"] == seeded_aws.secret_value
        assert payload["parameter_response"]["Parameter"]["Value"] == seeded_aws.secure_value


def test_java_function_reads_with_java_net_http(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    java = tool("java")
    tool("javac")  # java runs a single source file through the JDK's compiler
    code = FUNCTIONS / "java"
    emu = foreign_sandbox(
        code,
        "Handler",
        [java, "-Xshare:auto", "-XX:TieredStopAtLevel=1", str(code / "Handler.java")],
        init_timeout=60.0,
    )
    assert_no_python_on_path(emu)
    cold, warm = run_twice(emu)
    for payload in (cold, warm):
        assert payload["secret_response"]["SecretString"] == seeded_aws.secret_value
        assert payload["parameter_response"]["Parameter"]["Value"] == seeded_aws.secure_value
        assert payload["runtime"].startswith("java ")


def test_node_function_gets_a_clear_error_for_a_missing_secret(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    node = tool("node")
    code = FUNCTIONS / "node"
    emu = foreign_sandbox(code, "index.handler", [node, str(code / "runtime.mjs")])
    emu.function_env["SECRET_ID"] = "no-such-secret"
    emu.init()
    result = emu.invoke({})
    assert not result.ok
    assert "HTTP 404" in str(result.error)
    assert seeded_aws.secret_value not in emu.logs.text()
    assert emu.session_token not in emu.logs.text()


# --------------------------------------------------------------------------- the examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def masked(value: str) -> str:
    return f"******** (str, {len(value)} chars)"


def test_example_node_function_reads_during_init_and_invoke(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    node = tool("node")
    code = EXAMPLES / "node"
    emu = foreign_sandbox(code, "index.handler", [node, str(FUNCTIONS / "node" / "runtime.mjs")])
    emu.function_env["PARAMETER_NAME"] = seeded_aws.secure_param
    assert_no_python_on_path(emu)
    cold, warm = run_twice(emu)
    for payload in (cold, warm):
        assert payload["phase"] == "invoke"
        assert payload["secret"] == masked(seeded_aws.secret_value)
        assert payload["secure_string"] == masked(seeded_aws.secure_value)
        assert (
            payload["kms_plaintext"] == f"******** (bytes, {len(seeded_aws.kms_plaintext)} chars)"
        )
    runtime_log = emu.logs.text("runtime")
    assert "phase: 'init'" in runtime_log
    for value in seeded_aws.expected().values():
        assert value not in emu.logs.text()


def shell_example(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> LambdaEmulator:
    """examples/shell (a provided.al2023-style bootstrap using curl), reading the seeded items."""
    tool("curl")
    code = EXAMPLES / "shell"
    emu = foreign_sandbox(code, "bootstrap", [str(code / "bootstrap")])
    emu.function_env["PARAMETER_NAME"] = seeded_aws.secure_param
    return emu


def test_example_shell_function_reads_with_curl(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    emu = shell_example(foreign_sandbox, seeded_aws)
    assert_no_python_on_path(emu)
    cold, warm = run_twice(emu)
    for payload in (cold, warm):
        assert payload == {
            "phase": "invoke",
            "secret": masked(seeded_aws.secret_value),
            "secure_string": masked(seeded_aws.secure_value),
        }


def test_example_shell_function_reports_a_missing_secret_without_values(
    foreign_sandbox: Callable[..., LambdaEmulator], seeded_aws: SeededAws
) -> None:
    emu = shell_example(foreign_sandbox, seeded_aws)
    emu.function_env["SECRET_ID"] = "no-such-secret"
    emu.init()
    result = emu.invoke({})
    assert not result.ok
    assert "secretcache: /secretsmanager/get:" in emu.logs.text("runtime", "stderr")
    for value in seeded_aws.expected().values():
        assert value not in emu.logs.text()
