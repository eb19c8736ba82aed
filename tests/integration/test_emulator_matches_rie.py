"""Our emulator (tools.emulator) against AWS's RIE, seen by the same probe extension.

The probe registers, records every answer and event it gets, and, at SHUTDOWN, whether the
runtime (its sibling process) is still alive. Where our emulator deliberately differs from RIE
because Lambda does (the INVOKE event's ``tracing``, ``accountId`` on request), the test says
so; everything else must match. tools/rie/README.md lists every difference found.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tools.emulator import LambdaEmulator, default_python
from tools.rie import RieSandbox

PROBE = """#!{python} -S
import http.client, json, os, sys
out = open({record!r}, "a")

def note(**kw):
    out.write(json.dumps(kw) + "\\n")
    out.flush()

def runtime_alive():
    me = os.getpid()
    parent = os.getppid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{{pid}}/stat").read()
            cmd = open(f"/proc/{{pid}}/cmdline", "rb").read()
        except OSError:
            continue
        if int(pid) != me and int(stat.rsplit(")", 1)[1].split()[1]) == parent and (
            b"awslambdaric" in cmd or b"runtime_bootstrap" in cmd
        ):
            return True
    return False

note(kind="env", names=sorted(os.environ))
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))

def call(method, path, body=None, headers=None):
    conn.request(method, "/2020-01-01/extension" + path, body=body, headers=headers or {{}})
    r = conn.getresponse()
    return r.status, {{k.lower(): v for k, v in r.getheaders()}}, r.read()

status, headers, body = call("POST", "/register", json.dumps({{"events": ["INVOKE", "SHUTDOWN"]}}),
                             {{"Lambda-Extension-Name": "probe"}})
note(kind="register", status=status, body=json.loads(body),
     has_id="lambda-extension-identifier" in headers)
ext_id = headers["lambda-extension-identifier"]
while True:
    status, headers, body = call(
        "GET", "/event/next", headers={{"Lambda-Extension-Identifier": ext_id}}
    )
    event = json.loads(body)
    note(kind="event", status=status, event=event, runtime_alive=runtime_alive())
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""

HANDLER = "def handler(event, context):\n    return {'echo': event}\n"


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _report_fields(lines: list[str]) -> list[list[str]]:
    """The field names of each REPORT line (values dropped)."""
    return [
        [re.sub(r":.*", "", field) for field in line.rstrip("\t").split("\t")]
        for line in lines
        if line.startswith("REPORT RequestId: ")
    ]


@pytest.fixture
def probe_layer(tmp_path: Path) -> tuple[Path, Path, Path]:
    opt, task, record = tmp_path / "opt", tmp_path / "task", tmp_path / "probe.jsonl"
    (opt / "extensions").mkdir(parents=True)
    task.mkdir()
    probe = opt / "extensions" / "probe"
    probe.write_text(PROBE.format(python=default_python(), record=str(record)))
    probe.chmod(0o755)
    (task / "app.py").write_text(HANDLER)
    return opt, task, record


def _run_rie(opt: Path, task: Path, record: Path) -> tuple[list[dict[str, Any]], list[str]]:
    with RieSandbox(task, "app.handler", layer=opt, extension_python=None) as rie:
        assert rie.invoke({"n": 1}).payload == {"echo": {"n": 1}}
        assert rie.invoke({"n": 2}).payload == {"echo": {"n": 2}}
        assert rie.stop().exit_code == 0
    return _records(record), [ln.text for ln in rie.logs.lines("sandbox")]


def _run_ours(opt: Path, task: Path, record: Path) -> tuple[list[dict[str, Any]], list[str]]:
    with LambdaEmulator(opt, task, "app.handler", python=None) as emu:
        emu.init()
        assert emu.invoke({"n": 1}).payload == {"echo": {"n": 1}}
        assert emu.invoke({"n": 2}).payload == {"echo": {"n": 2}}
        assert not emu.shutdown().killed
    return _records(record), [ln.text for ln in emu.logs.lines("sandbox")]


def test_our_emulator_matches_rie_as_an_extension_sees_it(rie_layer, probe_layer):
    opt, task, record = probe_layer
    rie_seen, rie_lines = _run_rie(opt, task, record)
    record.unlink()
    ours_seen, our_lines = _run_ours(opt, task, record)

    def kinds(seen: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [r for r in seen if r["kind"] == kind]

    # register: same status, header and body fields
    (rie_reg,), (our_reg,) = kinds(rie_seen, "register"), kinds(ours_seen, "register")
    assert rie_reg["status"] == our_reg["status"] == 200
    assert rie_reg["has_id"] and our_reg["has_id"]
    assert rie_reg["body"].keys() == our_reg["body"].keys()
    assert rie_reg["body"]["handler"] == our_reg["body"]["handler"] == "app.handler"

    # events: two INVOKEs then SHUTDOWN, the runtime already gone at SHUTDOWN in both
    rie_events, our_events = kinds(rie_seen, "event"), kinds(ours_seen, "event")
    assert [e["event"]["eventType"] for e in rie_events] == ["INVOKE", "INVOKE", "SHUTDOWN"]
    assert [e["event"]["eventType"] for e in our_events] == ["INVOKE", "INVOKE", "SHUTDOWN"]
    rie_invoke, our_invoke = rie_events[0]["event"], our_events[0]["event"]
    assert our_invoke.keys() - rie_invoke.keys() == {"tracing"}  # Lambda sends it; RIE does not
    assert rie_invoke.keys() <= our_invoke.keys()
    assert rie_events[-1]["event"].keys() == our_events[-1]["event"].keys()
    assert not rie_events[-1]["runtime_alive"] and not our_events[-1]["runtime_alive"]
    assert all(e["runtime_alive"] for e in rie_events[:2] + our_events[:2])

    # the extension's environment: every standard Lambda variable RIE gives, ours gives too
    (rie_env,), (our_env,) = kinds(rie_seen, "env"), kinds(ours_seen, "env")
    lambda_vars = {n for n in rie_env["names"] if n.startswith(("AWS_", "LAMBDA_", "_"))}
    rie_only = {
        "AWS_LAMBDA_METADATA_API",  # RIE's metadata endpoint: not emulated (README)
        "AWS_LAMBDA_METADATA_TOKEN",
        "AWS_LAMBDA_FUNCTION_TIMEOUT",  # RIE's own setting (RieSandbox gives it), passed on
    }
    assert lambda_vars - rie_only <= set(our_env["names"])

    # the platform's own log lines: START, END, REPORT with the same fields
    for lines in (rie_lines, our_lines):
        assert sum(ln.startswith("START RequestId: ") for ln in lines) == 2
        assert sum(ln.startswith("END RequestId: ") for ln in lines) == 2
    assert _report_fields(rie_lines) == _report_fields(our_lines)
