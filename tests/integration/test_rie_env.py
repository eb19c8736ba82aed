"""Secrets as environment variables under AWS's RIE: awslambdaric, Node.js and a shell bootstrap.

RIE runs the runtime's command line itself and no exec wrapper (on Lambda, the managed runtime's
bootstrap script does that), so these tests start the runtime the way that bootstrap would:
``/opt/secretcache/exec-wrapper <python> -S -m awslambdaric <handler>``. The Node.js function
and the shell ``provided``-style bootstrap (tests/integration/env_functions) run with no python3
on PATH: the layer's bundled interpreter runs the extension and the wrapper. Node's entry point is
``exec-wrapper node runtime.js``; the shell bootstrap re-execs itself through the wrapper (README,
"Runtimes"). Skipped, with one line saying why, where RIE cannot run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.env_world import WRAPPER, EnvWorld, seed_env_world
from tools.emulator import path_without_python
from tools.moto_server import MotoServer
from tools.net import http_request
from tools.rie import RieSandbox

from .conftest import SeededAws
from .test_rie import TOKEN_HEADER, metrics

HANDLER = "env_handler.handler"
FUNCTIONS = Path(__file__).with_name("env_functions")
MISSING = "{{resolve:secretsmanager:rie-env-no-such-secret}}"


def references(seeded: SeededAws) -> dict[str, str]:
    return {
        "AWS_LAMBDA_EXEC_WRAPPER": WRAPPER,
        "DB_PASSWORD": f"{{{{resolve:secretsmanager:{seeded.secret_id}}}}}",
        "API_KEY": f"key={{{{secretcache:ssm-secure:{seeded.secure_param}}}}}",
        "FLAG_V1": f"{{{{resolve:ssm:{seeded.labeled_param}:1}}}}",
        "KMS_PLAIN": "{{resolve:kms:CIPHERTEXT_B64}}",
    }


def wrapped(rie_sandbox: Callable[..., RieSandbox], env: dict[str, str]) -> RieSandbox:
    """A sandbox whose runtime command goes through the wrapper, as a managed bootstrap does."""
    from tools.emulator import default_python

    python = default_python()
    argv = [WRAPPER, python, "-S", "-m", "awslambdaric", HANDLER]
    return rie_sandbox("env_handler", env, runtime_argv=argv, python=python)


def test_the_wrapper_resolves_references_before_awslambdaric_starts(
    rie_sandbox: Callable[..., RieSandbox], seeded_aws: SeededAws
) -> None:
    rie = wrapped(rie_sandbox, references(seeded_aws))
    result = rie.invoke({"names": ["DB_PASSWORD", "API_KEY", "FLAG_V1", "KMS_PLAIN"]})
    assert result.ok, (result.status, result.payload, rie.logs.text()[-3000:])
    assert result.payload["env"] == {
        "DB_PASSWORD": seeded_aws.secret_value,
        "API_KEY": f"key={seeded_aws.secure_value}",
        "FLAG_V1": seeded_aws.labeled_value,
        "KMS_PLAIN": seeded_aws.kms_plaintext,
    }
    logs = rie.logs.text()
    assert '"event":"env.resolved"' in logs
    for value in (seeded_aws.secret_value, seeded_aws.secure_value, seeded_aws.kms_plaintext):
        assert value not in logs


def test_a_missing_secret_fails_init_with_the_wrappers_error(
    rie_sandbox: Callable[..., RieSandbox], seeded_aws: SeededAws
) -> None:
    rie = wrapped(rie_sandbox, {**references(seeded_aws), "MISSING": MISSING})
    assert_init_fails_naming_missing(rie)


def assert_init_fails_naming_missing(rie: RieSandbox) -> None:
    """The first invoke's INIT fails with the wrapper's one line about ``MISSING``."""
    result = rie.invoke({"names": ["MISSING"]})
    # RIE answers a failed INIT with 502; the body is what the wrapper posted to /init/error.
    assert result.status == 502, (result.status, result.payload, rie.logs.text()[-3000:])
    line = f"secretcache: cannot resolve MISSING: {MISSING}: not found (ResourceNotFoundException)"
    assert result.payload["errorType"] == "Secretcache.EnvReferenceFailed"
    assert result.payload["errorMessage"] == line
    assert rie.wait_for_line(lambda text: text == line) is not None, rie.logs.text()[-3000:]


def test_rie_itself_runs_no_exec_wrapper(
    rie_sandbox: Callable[..., RieSandbox], seeded_aws: SeededAws
) -> None:
    """Why the tests above put the wrapper in the command line: AWS_LAMBDA_EXEC_WRAPPER alone
    does nothing under RIE (README: a container image's entry point must run it)."""
    env = references(seeded_aws)
    rie = rie_sandbox("env_handler", env)
    result = rie.invoke({"names": ["DB_PASSWORD"]})
    assert result.ok, (result.status, result.payload)
    assert result.payload["env"] == {"DB_PASSWORD": env["DB_PASSWORD"]}


# ---------------------------------------------------------------- Node.js and a shell bootstrap


@pytest.fixture(scope="module")
def env_world(moto_server: MotoServer, seeded_aws: SeededAws) -> EnvWorld:
    return seed_env_world(moto_server, seeded_aws)


@dataclass(frozen=True)
class NonPythonFunction:
    """A function of tests/integration/env_functions and how its entry point runs the wrapper."""

    code_dir: Path
    module: str  # of _HANDLER
    argv: list[str]  # what RIE runs, as the sandbox sees it (the code is at /var/task)
    names: list[str]  # the variables its answer shows


def non_python_function(kind: str, world: EnvWorld) -> NonPythonFunction:
    """Node: ``exec-wrapper node runtime.js``; shell: the bootstrap, which runs the wrapper."""
    if kind == "node":
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is not installed (.ci/run installs Debian's nodejs when missing)")
        argv = [WRAPPER, node, "/var/task/runtime.js"]
        return NonPythonFunction(FUNCTIONS / "node", "index", argv, sorted(world.expected))
    if shutil.which("curl") is None:
        pytest.skip("the shell bootstrap talks to the Runtime API with curl (not installed)")
    names = ["API_KEY", "DB_URL", "KMS_WITH_CONTEXT"]  # what the bootstrap answers
    return NonPythonFunction(FUNCTIONS / "shell", "function", ["/var/task/bootstrap"], names)


def start_without_python(
    rie_sandbox: Callable[..., RieSandbox],
    function: NonPythonFunction,
    env: dict[str, str],
    bin_dir: Path,
) -> RieSandbox:
    """RIE running ``function`` with no python3 on PATH and no SECRETCACHE_PYTHON, as on Lambda."""
    path = path_without_python(bin_dir)
    assert shutil.which("python3", path=path) is None
    rie = rie_sandbox(
        function.module,
        {**env, "PATH": path},
        code_dir=function.code_dir,
        runtime_argv=function.argv,
    )
    assert "SECRETCACHE_PYTHON" not in rie.environment
    return rie


@pytest.mark.parametrize("kind", ["node", "shell"])
def test_a_non_python_function_started_through_the_wrapper_gets_resolved_values(
    rie_sandbox: Callable[..., RieSandbox], env_world: EnvWorld, kind: str, tmp_path: Path
) -> None:
    function = non_python_function(kind, env_world)
    rie = start_without_python(rie_sandbox, function, env_world.env, tmp_path / "bin")
    result = rie.invoke({"names": function.names})
    assert result.ok, (result.status, result.payload, rie.logs.text()[-3000:])
    assert result.payload == {name: env_world.expected[name] for name in function.names}
    (init,) = rie.inits()
    assert init.fatal_error is None and "secretcache" in init.ready_at

    # A later HTTP read of a secret the wrapper resolved is served from the cache.
    before = metrics(rie)["secretsmanager"]
    port = int(rie.environment["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"])
    read = http_request(
        port,
        "GET",
        f"/secretsmanager/get?secretId={env_world.plain_secret_id}",
        headers={TOKEN_HEADER: rie.session_token},
    )
    assert read.status == 200, read.body
    assert read.json()["SecretString"] == env_world.expected["PLAIN_SECRET"]  # type: ignore[index]
    after = metrics(rie)["secretsmanager"]
    assert after["hits"] == before["hits"] + 1
    assert after["upstreamCalls"] == before["upstreamCalls"]

    rie.stop()
    logs = rie.logs.text()
    assert '"event":"env.resolved"' in logs
    for value in env_world.values():
        if value != env_world.expected["UNTOUCHED"]:
            assert value not in logs


@pytest.mark.parametrize("kind", ["node", "shell"])
def test_a_missing_secret_fails_a_non_python_functions_init_naming_the_variable(
    rie_sandbox: Callable[..., RieSandbox], env_world: EnvWorld, kind: str, tmp_path: Path
) -> None:
    function = non_python_function(kind, env_world)
    env = {**env_world.env, "MISSING": MISSING}
    rie = start_without_python(rie_sandbox, function, env, tmp_path / "bin")
    assert_init_fails_naming_missing(rie)
    rie.stop()
    logs = rie.logs.text()
    for value in env_world.values():
        if value != env_world.expected["UNTOUCHED"]:
            assert value not in logs
