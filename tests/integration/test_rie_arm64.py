"""AWS's arm64 RIE (``aws-lambda-rie-arm64``) on this x86_64 machine, under qemu-aarch64-static.

qemu is called explicitly (no binfmt_misc): it runs RIE itself, and the shebang of each arm64
script names it, so the busybox extensions and runtimes below are arm64 static busybox under qemu.
qemu does not follow ``execve``, so an arm64 program cannot start another arm64 program
(RIE can start x86_64 ones: the kernel runs those). The secretcache extension of the arm64 layer
is started by RIE as on Lambda: its launcher (``/bin/sh``, the host's) execs the layer's own
arm64 loader and Python with qemu in front, as ``SECRETCACHE_EXEC_PREFIX`` tells it
(see tools/rie/README.md).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tools.layer import layer_dir
from tools.net import free_port
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


# Reads one secret through the extension on every invoke and answers it with this machine's name.
# Every command is an applet of the arm64 busybox under qemu (an arm64 program cannot exec
# another here, and PATH finds nothing, so no host tool stands in). No `-T`: busybox wget's
# timeout segfaults under this qemu (its default, 900 s, outlasts any invoke anyway).
READING_RUNTIME = """#!{qemu} {sh}
bb() {{ {qemu} {busybox} "$@"; }}
PATH=/nonexistent
api=http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime
work=$(bb mktemp -d)
while :; do
  id=$(bb wget -S -q -O /dev/null "$api/invocation/next" 2>&1 \\
    | bb sed -n 's/.*Lambda-Runtime-Aws-Request-Id: *\\([0-9a-f-]*\\).*/\\1/p')
  if bb wget -q -O "$work/read" \\
    --header "X-Aws-Parameters-Secrets-Token: $AWS_SESSION_TOKEN" \\
    "http://127.0.0.1:$PARAMETERS_SECRETS_EXTENSION_HTTP_PORT/secretsmanager/get?secretId=$SECRET_ID"
  then read=$(bb cat "$work/read")
  else read='"the read failed"'
  fi
  body="{{\\"arch\\": \\"$(bb uname -m)\\", \\"read\\": $read}}"
  bb wget -q -O /dev/null --post-data "$body" "$api/invocation/$id/response"
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


def _write_script(
    path: Path, template: str, qemu: Path, sh: Path, busybox: Path | None = None
) -> None:
    path.write_text(template.format(qemu=qemu, sh=sh, busybox=busybox))
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


def _command_lines(pid: int) -> list[list[str]]:
    """The argv of every process below ``pid`` (parents read from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            queue.append(child)
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            found.append([a.decode(errors="replace") for a in argv if a])
    return found


def test_the_arm64_layers_extension_serves_a_secret_read_under_arm64_rie(
    arm64_rie, moto_server, seeded_aws, tmp_path: Path
):
    """All arm64 but moto: RIE, the layer's own Python running secretcache, a busybox runtime."""
    layer = layer_dir("arm64")
    assert (layer / "secretcache" / "python" / "lib" / "ld-linux-aarch64.so.1").is_file()
    qemu, busybox = fetch()
    sh = tmp_path / "bin" / "sh"
    sh.parent.mkdir()
    sh.symlink_to(busybox)
    task = tmp_path / "task"
    task.mkdir()
    _write_script(task / "bootstrap", READING_RUNTIME, qemu, sh, busybox)
    secret = f"arm64/{uuid.uuid4().hex[:8]}"
    moto_server.client("secretsmanager").create_secret(Name=secret, SecretString="read-on-arm64")
    env = {
        **seeded_aws.function_env(),
        "SECRET_ID": secret,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
        "SECRETCACHE_EXEC_PREFIX": str(qemu),
    }
    with RieSandbox(
        task, "bootstrap", env, layer=layer, endpoint_url=moto_server.url, arch="arm64",
        runtime_argv=["/var/task/bootstrap"],
    ) as rie:  # fmt: skip
        first = rie.invoke({})
        assert first.ok, rie.logs.text()[-3000:]
        extensions = [
            argv for argv in _command_lines(rie._proc.pid) if "/opt/secretcache/app" in argv
        ]
        second = rie.invoke({})
        stopped = rie.stop()
    print(f"arm64 read: {first.payload}")
    assert first.payload["arch"] == "aarch64"
    assert first.payload["read"]["Name"] == secret
    assert first.payload["read"]["SecretString"] == "read-on-arm64"
    assert second.payload["read"]["SecretString"] == "read-on-arm64"
    # the extension is the arm64 layer's loader and Python, under qemu: nothing x86_64 but qemu
    assert extensions, rie.logs.text()[-3000:]
    assert extensions[0][:2] == [
        str(qemu),
        "/opt/secretcache/python/lib/ld-linux-aarch64.so.1",
    ], extensions
    assert "/opt/secretcache/python/bin/python3.13" in extensions[0]
    assert not stopped.killed and stopped.exit_code == 0, rie.logs.text()[-3000:]
    assert rie.inits()[0].registered_at.get("secretcache") is not None
    events = [r.get("event") for r in rie.extension_log()]
    assert events[-2:] == ["extension.shutdown", "extension.stopped"], events
    assert "read-on-arm64" not in rie.logs.text()
    # the runtime's calls came from busybox's wget (GNU wget, the host's, says "Wget/<version>")
    assert "User-Agent:[Wget]" in rie.logs.text("rie")
    assert "User-Agent:[Wget/" not in rie.logs.text("rie")
