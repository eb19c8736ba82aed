"""AWS's arm64 RIE (``aws-lambda-rie-arm64``) on this x86_64 machine, under qemu-aarch64-static.

qemu is called explicitly (no binfmt_misc): it runs RIE itself, and the shebang of each arm64
script names it, so the extension and the runtime below are arm64 static busybox under qemu.
qemu does not follow ``execve``, so an arm64 program cannot start another arm64 program
(RIE can start x86_64 ones: the kernel runs those). Hence the secretcache extension in the
read test is today's layer on the host's x86_64 Python: RIE is arm64, the extension is not.
When the layer carries its own arm64 interpreter (issue 11), ``layer_dir("arm64")`` names it and
its launcher must be started under qemu as these scripts are (see tools/rie/README.md).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tools.rie import RieSandbox, unavailable_reason
from tools.rie.arm64 import fetch

from .conftest import HANDLERS

EXTENSION = """#!{qemu} {sh}
api=http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension
id=$(wget -S -q -O /dev/null --header "Lambda-Extension-Name: bbext" \\
  --post-data '{{"events": ["INVOKE", "SHUTDOWN"]}}' "$api/register" 2>&1 \\
  | sed -n 's/.*Lambda-Extension-Identifier: *\\([0-9a-f-]*\\).*/\\1/p')
echo "bbext registered as $id on $(uname -m)"
while :; do
  event=$(wget -q -O - -T 900 --header "Lambda-Extension-Identifier: $id" "$api/event/next")
  echo "bbext event ${{event%%,*}}"
  case $event in *SHUTDOWN*) echo "bbext stopping"; exit 0;; esac
done
"""

RUNTIME = """#!{qemu} {sh}
api=http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime
work=$(mktemp -d)
while :; do
  id=$(wget -S -q -O "$work/event" -T 900 "$api/invocation/next" 2>&1 \\
    | sed -n 's/.*Lambda-Runtime-Aws-Request-Id: *\\([0-9a-f-]*\\).*/\\1/p')
  body="{{\\"arch\\": \\"$(uname -m)\\", \\"event\\": $(cat "$work/event")}}"
  wget -q -O /dev/null --post-data "$body" "$api/invocation/$id/response"
done
"""


@pytest.fixture(scope="module")
def arm64_rie(rie_layer: Path) -> None:
    """qemu-aarch64-static and busybox (arm64), fetched once; skips where RIE-arm64 cannot run."""
    try:
        fetch()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.skip(f"arm64 RIE tier skipped: could not fetch qemu-user-static/busybox: {exc}")
    reason = unavailable_reason("arm64")
    if reason is not None:
        pytest.skip(f"arm64 RIE tier skipped: {reason}")


def _write_script(path: Path, template: str, qemu: Path, sh: Path) -> None:
    path.write_text(template.format(qemu=qemu, sh=sh))
    path.chmod(0o755)


def test_arm64_rie_runs_an_arm64_extension_and_runtime_through_init_invoke_shutdown(
    arm64_rie, tmp_path: Path
):
    qemu, busybox = fetch()
    sh = tmp_path / "bin" / "sh"  # busybox runs the applet its argv[0] names
    sh.parent.mkdir()
    sh.symlink_to(busybox)
    opt, task = tmp_path / "opt", tmp_path / "task"
    (opt / "extensions").mkdir(parents=True)
    task.mkdir()
    _write_script(opt / "extensions" / "bbext", EXTENSION, qemu, sh)
    _write_script(task / "bootstrap", RUNTIME, qemu, sh)

    with RieSandbox(
        task, "bootstrap", layer=opt, arch="arm64", extension_python=None,
        runtime_argv=["/var/task/bootstrap"],
    ) as rie:  # fmt: skip
        first = rie.invoke({"n": 1})
        second = rie.invoke({"n": 2})
        assert first.ok and first.payload == {"arch": "aarch64", "event": {"n": 1}}, rie.logs.text()
        assert second.payload == {"arch": "aarch64", "event": {"n": 2}}
        stopped = rie.stop()
    assert not stopped.killed and stopped.exit_code == 0
    out = rie.logs.text("sandbox")
    assert "on aarch64" in out
    assert out.count('bbext event {"eventType":"INVOKE"') == 2
    assert 'bbext event {"eventType":"SHUTDOWN"' in out and "bbext stopping" in out
    assert rie.inits()[0].registered_at.get("bbext") is not None


def test_arm64_rie_serves_a_secret_read_end_to_end_through_the_layer(
    arm64_rie, rie_layer: Path, moto_server, seeded_aws
):
    secret = f"arm64/{uuid.uuid4().hex[:8]}"
    moto_server.client("secretsmanager").create_secret(Name=secret, SecretString="from-arm64")
    with RieSandbox(
        HANDLERS, "client_handler.handler", {**seeded_aws.function_env(), "SECRET_ID": secret},
        layer=rie_layer, endpoint_url=moto_server.url, arch="arm64",
    ) as rie:  # fmt: skip
        result = rie.invoke({"action": "secret"})
        assert result.ok, rie.logs.text()[-3000:]
        assert result.payload == {"secret": "from-arm64"}
        assert rie.stop().exit_code == 0
    assert rie.inits()[0].registered_at.get("secretcache") is not None
