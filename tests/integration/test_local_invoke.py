"""``./build.sh local-invoke``: a user's own function with the layer under AWS's RIE."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import REPO

FUNCTION = """
import os
from secretcache_client import get_parameter, get_secret

def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"user": event["user"], "secret": get_secret(os.environ["SECRET_ID"]),
            "key": get_parameter(os.environ["PARAM"])}
"""


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    code = tmp_path / "fn"
    code.mkdir()
    (code / "app.py").write_text(FUNCTION)
    return code


def local_invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.local_invoke", "--quiet", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_the_function_against_an_embedded_moto_seeded_from_a_file(
    rie_layer, function_dir: Path, tmp_path: Path
):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "secrets": {"local/db": "pw-local"},
                "parameters": {"/local/key": {"value": "k-local", "type": "SecureString"}},
            }
        )
    )
    event = tmp_path / "event.json"
    event.write_text('{"user": "alice"}')
    done = local_invoke(
        "--code", str(function_dir), "--handler", "app.handler", "--seed", str(seed),
        "--event", str(event), "--invokes", "2",
        "--env", "SECRET_ID=local/db", "--env", "PARAM=/local/key",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers == [{"user": "alice", "secret": "pw-local", "key": "k-local"}] * 2


def test_runs_against_the_endpoint_named_and_fails_on_a_function_error(
    rie_layer, function_dir: Path, moto_server
):
    name = f"named/{uuid.uuid4().hex[:8]}"
    moto_server.client("secretsmanager").create_secret(Name=name, SecretString="pw-named")
    moto_server.client("ssm").put_parameter(Name=f"/{name}", Value="k-named", Type="String")
    env = ["--env", f"SECRET_ID={name}", "--env", f"PARAM=/{name}"]
    common = ["--code", str(function_dir), "--endpoint", moto_server.url, *env]

    done = local_invoke(*common, "--event", '{"user": "bob"}')
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"user": "bob", "secret": "pw-named", "key": "k-named"}
    assert "moto server (AWS stand-in)" not in done.stderr  # none was started

    failed = local_invoke(*common, "--event", '{"fail": true}')
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errorType"] == "RuntimeError"
    assert "invoke 1 failed: RuntimeError" in failed.stderr
