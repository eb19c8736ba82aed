"""Secrets as environment variables: the layer's exec wrapper, end to end on the emulator.

The real built layer, moto server as AWS, and real runtimes: Lambda's Python runtime loop, a
shell ``provided``-style bootstrap and a Node.js runtime loop. Each test checks the values reach
the runtime's environment and nothing else: not the extension's ``/proc/<pid>/environ``, not a
log line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import SeededAws
from tests.support.env_world import FUNCTION_NAME, WRAPPER, EnvWorld, seed_env_world
from tests.support.extension_process import ExtensionProcess
from tests.support.fault_proxy import Fault, FaultProxy
from tools.emulator import InitError, LambdaEmulator, default_python, shared_layer
from tools.moto_server import MotoServer
from tools.net import free_port, http_request

FUNCTIONS = Path(__file__).with_name("env_functions")


@pytest.fixture(scope="module")
def env_world(moto_server: MotoServer, seeded_aws: SeededAws) -> EnvWorld:
    return seed_env_world(moto_server, seeded_aws)


@pytest.fixture
def sandbox(
    layer_zip: Path, moto_server: MotoServer, seeded_aws: SeededAws
) -> Iterator[Callable[..., LambdaEmulator]]:
    """Factory: sandbox(code_dir, env, **options) -> an unstarted emulator on a free port."""
    made: list[LambdaEmulator] = []

    def make(code_dir: Path, env: dict[str, str], **options: object) -> LambdaEmulator:
        function_env = {
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
            **seeded_aws.function_env(),
            **env,
        }
        handler = str(options.pop("handler", "env_handler.handler"))
        endpoint_url = str(options.pop("endpoint_url", moto_server.url))
        emu = LambdaEmulator(
            layer_zip,
            code_dir,
            handler,
            function_env,
            endpoint_url=endpoint_url,
            function_name=FUNCTION_NAME,
            **options,  # type: ignore[arg-type]
        )
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


def environ_of(pid: int | None) -> str:
    assert pid is not None
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


def parse_environ(raw: str) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in raw.split("\0") if entry)


def all_logs(emu: LambdaEmulator) -> str:
    return "\n".join(line.text for line in emu.logs.lines())


def metrics(emu: LambdaEmulator) -> dict[str, dict[str, object]]:
    port = int(emu.function_env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] or 0)
    got = http_request(
        port, "GET", "/metrics", headers={"X-Aws-Parameters-Secrets-Token": emu.session_token}
    )
    assert got.status == 200
    return got.json()["services"]  # type: ignore[index,no-any-return]


def assert_resolved_only_in_runtime(emu: LambdaEmulator, world: EnvWorld) -> None:
    runtime_env = environ_of(emu.pid("runtime"))
    for name, value in world.expected.items():
        assert f"{name}={value}\0" in runtime_env, name
    extension_env = environ_of(emu.pid("secretcache"))
    logs = all_logs(emu)
    for value in world.values():
        if value == world.expected["UNTOUCHED"]:
            continue
        assert value not in extension_env
        assert value not in logs
    assert world.env["DB_URL"] in extension_env  # the extension sees the references only
    # The runtime gets the environment Lambda gave it, the resolved values in place of the
    # references and nothing else: no variable of the launcher's, no option of the wrapper's.
    runtime, extension = parse_environ(runtime_env), parse_environ(extension_env)
    assert set(runtime) == set(extension) | {"PYTHONPATH", "PYTHONUNBUFFERED"}
    for name, value in extension.items():
        if name in ("AWS_LAMBDA_LOG_STREAM_NAME", "PYTHONPATH"):
            continue  # the emulator draws a stream per process; the launcher sets the extension's
        assert runtime[name] == world.expected.get(name, value), name
    assert "secretcache/app" not in runtime["PYTHONPATH"]


HANDLERS = Path(__file__).with_name("handlers")


def test_python_function_gets_resolved_variables_and_nothing_else_does(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    emu = sandbox(HANDLERS, env_world.env)
    emu.init()
    before = metrics(emu)["secretsmanager"]
    event = {"names": sorted(env_world.expected), "read_secret": env_world.plain_secret_id}
    result = emu.invoke(event)
    assert result.ok, result.error
    assert result.payload["env"] == env_world.expected
    assert result.payload["read"] == env_world.expected["PLAIN_SECRET"]
    after = metrics(emu)["secretsmanager"]
    # The handler's read of a secret the wrapper resolved is a cache hit: no new upstream call.
    assert after["hits"] == before["hits"] + 1  # type: ignore[operator]
    assert after["upstreamCalls"] == before["upstreamCalls"]
    # So is a read of a parameter that came in the wrapper's getbatch.
    ssm_before = metrics(emu)["ssm"]
    port = int(env_world.env.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT") or 0) or int(
        emu.function_env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] or 0
    )
    name = env_world.env["API_KEY"].removeprefix("{{resolve:ssm-secure:").removesuffix("}}")
    got = http_request(
        port,
        "GET",
        f"/systemsmanager/parameters/get?name={name}&withDecryption=true",
        headers={"X-Aws-Parameters-Secrets-Token": emu.session_token},
    )
    assert got.status == 200
    ssm_after = metrics(emu)["ssm"]
    assert ssm_after["hits"] == ssm_before["hits"] + 1  # type: ignore[operator]
    assert ssm_after["upstreamCalls"] == ssm_before["upstreamCalls"]
    assert_resolved_only_in_runtime(emu, env_world)
    resolved = [line for line in emu.logs.lines() if '"env.resolved"' in line.text]
    assert len(resolved) == 1 and resolved[0].source == "runtime"
    record = json.loads(resolved[0].text)
    assert record["variables"] == len(env_world.expected) - 1  # UNTOUCHED holds no reference
    assert record["unresolved"] == 0


def test_references_are_fetched_in_one_concurrent_round_of_batch_requests(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    emu = sandbox(HANDLERS, env_world.env)
    emu.init()
    record = next(
        json.loads(line.text) for line in emu.logs.lines() if '"env.resolved"' in line.text
    )
    # One batchget (db, plain, rotated@current), one getbatch per decryption flag, single reads
    # for the two versioned references (AWSPREVIOUS, :1) and one decrypt per KMS reference.
    assert record["requests"] == 1 + 2 + 2 + 2
    assert record["references"] == 12


def test_missing_secret_fails_init_with_one_line_naming_variable_and_reference(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    reference = "{{resolve:secretsmanager:env-no-such-secret/" + uuid.uuid4().hex[:6] + "}}"
    emu = sandbox(HANDLERS, {**env_world.env, "MISSING_SECRET": reference})
    with pytest.raises(InitError) as failed:
        emu.init()
    assert failed.value.error_type == "Secretcache.EnvReferenceFailed"
    assert "MISSING_SECRET" in failed.value.message and reference in failed.value.message
    assert "not found" in failed.value.message
    lines = [line.text for line in emu.logs.lines() if line.text.startswith("secretcache: cannot")]
    assert lines == [
        f"secretcache: cannot resolve MISSING_SECRET: {reference}: "
        "not found (ResourceNotFoundException)"
    ]
    logs = all_logs(emu)
    for value in env_world.values():
        if value != env_world.expected["UNTOUCHED"]:
            assert value not in logs
    assert failed.value.message.count("\n") == 0


def test_malformed_reference_names_the_variable_never_the_value(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    emu = sandbox(HANDLERS, {**env_world.env, "BROKEN": "hunter2-pasted{{resolve:ssm:/a:b:c}}"})
    with pytest.raises(InitError) as failed:
        emu.init()
    assert "BROKEN" in failed.value.message
    assert "malformed reference at character 15" in failed.value.message
    assert "hunter2" not in all_logs(emu) and "hunter2" not in failed.value.message


def test_leave_unresolved_option_keeps_the_reference_and_starts(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    reference = "{{resolve:ssm-secure:/env-no-such-parameter}}"
    env = {
        **env_world.env,
        "MISSING_PARAM": f"prefix-{reference}",
        "SECRETCACHE_ENV_ON_ERROR": "leave",
    }
    emu = sandbox(HANDLERS, env)
    emu.init()
    result = emu.invoke({"names": ["MISSING_PARAM", "API_KEY", "DB_URL"]})
    assert result.ok, result.error
    assert result.payload["env"] == {
        "MISSING_PARAM": f"prefix-{reference}",
        "API_KEY": env_world.expected["API_KEY"],
        "DB_URL": env_world.expected["DB_URL"],
    }
    warned = [line for line in emu.logs.lines() if "left unresolved" in line.text]
    assert [w.text for w in warned] == [
        "secretcache: left unresolved (SECRETCACHE_ENV_ON_ERROR=leave): "
        f"MISSING_PARAM: {reference}: not found (ParameterNotFound)"
    ]


@pytest.mark.parametrize("on_error", ["fail", "leave"])
def test_a_role_without_batch_permissions_resolves_one_by_one_and_names_the_denied_secret(
    sandbox: Callable[..., LambdaEmulator],
    moto_server: MotoServer,
    env_world: EnvWorld,
    seeded_aws: SeededAws,
    on_error: str,
) -> None:
    """IAM denies BatchGetSecretValue to the role, and GetSecretValue on one secret: the wrapper
    asks again secret by secret and reports exactly the denied one (AWS's answers, injected by
    a proxy in front of moto, which enforces no IAM)."""
    denied = f"env-denied-{uuid.uuid4().hex[:6]}"
    moto_server.client("secretsmanager").create_secret(Name=denied, SecretString="denied-V4LU3")
    proxy = FaultProxy(moto_server.port).start()
    try:
        proxy.set_fault(Fault.aws_error(400, "AccessDeniedException"), target="BatchGetSecretValue")
        proxy.set_fault(
            Fault.aws_error(400, "AccessDeniedException"),
            target="GetSecretValue",
            identifier=denied,
        )
        env = {
            "AWS_LAMBDA_EXEC_WRAPPER": WRAPPER,
            "ALLOWED": f"{{{{resolve:secretsmanager:{seeded_aws.secret_id}}}}}",
            "DENIED": f"{{{{resolve:secretsmanager:{denied}}}}}",
            "SECRETCACHE_ENV_ON_ERROR": on_error,
        }
        emu = sandbox(HANDLERS, env, endpoint_url=proxy.url)
        line = (
            f"DENIED: {{{{resolve:secretsmanager:{denied}}}}}: "
            "access denied (AccessDeniedException)"
        )
        if on_error == "fail":
            with pytest.raises(InitError) as failed:
                emu.init()
            assert failed.value.message == f"secretcache: cannot resolve {line}"
        else:
            emu.init()
            result = emu.invoke({"names": ["ALLOWED", "DENIED"]})
            assert result.payload["env"] == {
                "ALLOWED": seeded_aws.secret_value,
                "DENIED": env["DENIED"],
            }
            assert any(line in log.text for log in emu.logs.lines("runtime", "stderr"))
        assert proxy.count("BatchGetSecretValue") >= 1
        assert proxy.count("GetSecretValue", seeded_aws.secret_id) == 1
        assert "denied-V4LU3" not in all_logs(emu)
    finally:
        proxy.stop()


def test_shell_provided_bootstrap_runs_the_wrapper_itself(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the shell bootstrap talks to the Runtime API with curl (not installed)")
    code = FUNCTIONS / "shell"
    emu = sandbox(
        code,
        env_world.env,
        handler="function.handler",
        runtime_command=[str(code / "bootstrap")],
        honour_exec_wrapper=False,  # OS-only runtimes run no wrapper: the bootstrap calls it
    )
    emu.init()
    result = emu.invoke({})
    assert result.ok, result.error
    assert result.payload == {
        "DB_URL": env_world.expected["DB_URL"],
        "API_KEY": env_world.expected["API_KEY"],
        "KMS_WITH_CONTEXT": env_world.expected["KMS_WITH_CONTEXT"],
    }
    assert_resolved_only_in_runtime(emu, env_world)


def test_node_function_gets_resolved_variables(
    sandbox: Callable[..., LambdaEmulator], env_world: EnvWorld
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (.ci/run installs Debian's nodejs when missing)")
    code = FUNCTIONS / "node"
    emu = sandbox(
        code,
        env_world.env,
        handler="index.handler",
        runtime_command=[node, str(code / "runtime.js")],
    )
    emu.init()
    result = emu.invoke({"names": sorted(env_world.expected)})
    assert result.ok, result.error
    assert result.payload == env_world.expected
    assert_resolved_only_in_runtime(emu, env_world)
    assert os.path.basename(Path(f"/proc/{emu.pid('runtime')}/exe").resolve()).startswith("node")


def run_layer_wrapper(layer_zip: Path, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """The layer's exec wrapper run by hand on ``env -0``: the environment the runtime gets."""
    wrapper = shared_layer(layer_zip) / "secretcache" / "exec-wrapper"
    done = subprocess.run(
        [str(wrapper), "/usr/bin/env", "-0"],
        env={"PATH": "/usr/bin:/bin", "SECRETCACHE_PYTHON": default_python(), **env},
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return parse_environ(done.stdout.decode("utf-8", "surrogateescape"))


def test_the_runtime_gets_the_environment_unchanged_when_nothing_is_referenced(
    layer_zip: Path, tmp_path: Path
) -> None:
    """The wrapper's own interpreter may add to its environment (PEP 538 sets LC_CTYPE under a
    C locale); none of that, and none of the launcher's variables, may reach the runtime. The one
    addition is PWD, which a POSIX shell exports (as Lambda's own bootstrap scripts do)."""
    env = {"LANG": "C", "ODD": "bytes \xe9 and = signs"}
    got = run_layer_wrapper(layer_zip, tmp_path, env)
    assert got == {
        "PATH": "/usr/bin:/bin",
        "SECRETCACHE_PYTHON": default_python(),
        **env,
        "PWD": str(tmp_path),
    }


def test_modules_in_the_function_code_never_shadow_the_wrappers_imports(
    layer_zip: Path,
    tmp_path: Path,
    start_extension: Callable[..., ExtensionProcess],
    seeded_aws: SeededAws,
) -> None:
    """The runtime's working directory is the function's code (/var/task); a json.py there must
    not replace the standard library's in the wrapper. The extension runs elsewhere, standalone,
    as it would outside Lambda; the wrapper is the layer's, run by hand."""
    extension = start_extension()
    for module in ("json", "re", "enum"):
        (tmp_path / f"{module}.py").write_text(f"raise SystemExit('imported ./{module}.py')\n")
    env = {
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port),
        "AWS_SESSION_TOKEN": extension.token,
        "API_KEY": f"{{{{resolve:ssm-secure:{seeded_aws.secure_param}}}}}",
    }
    assert run_layer_wrapper(layer_zip, tmp_path, env)["API_KEY"] == seeded_aws.secure_value


def test_an_interpreter_older_than_3_10_fails_with_one_line(
    layer_zip: Path, tmp_path: Path
) -> None:
    """Before the layer carries its own Python, the launcher may find an old python3 on a
    non-Python runtime: the wrapper says so in one line, no traceback."""
    import glob

    old = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.[6-9].*/bin/python3.[6-9]")))
    if not old:
        pytest.skip("no Python older than 3.10 on this machine")
    wrapper = shared_layer(layer_zip) / "secretcache" / "exec-wrapper"
    done = subprocess.run(
        [str(wrapper), "/usr/bin/env"],
        env={"PATH": "/usr/bin:/bin", "SECRETCACHE_PYTHON": old[-1], "X": "{{resolve:ssm:/a}}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("secretcache: the exec wrapper needs Python 3.10 or newer")
    assert done.stderr.count("\n") == 1
