"""One function with a layer, run by AWS's Runtime Interface Emulator in a private mount namespace.

Inside ``unshare -m --propagation private`` (nothing leaks to the host's mounts) a tmpfs goes
over ``/var``; the function's code is bind-mounted read-only at ``/var/task``, the layer at
``/opt`` and the runtime interface client at ``/var/runtime``; then RIE is exec'd with the
runtime command (``python -m awslambdaric <handler>``). RIE listens only on loopback: its invoke
API on ``127.0.0.1:<free port>`` and its Runtime/Extensions API on another free loopback port.
The network namespace is the host's, so the extension's port is reachable from the caller.

RIE starts INIT at the first invoke (as Lambda does for an on-demand cold start) and never
before; a failed INIT is retried at the next invoke. SIGTERM makes it send SHUTDOWN to the
extensions (2 s deadline) and exit.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tools.emulator.records import LogCapture, LogLine
from tools.layer import layer_dir
from tools.net import free_port

from .host import emulator_prefix, make_runtime_dir, rie_binary, unavailable_reason
from .rie_log import InitTimeline, init_timelines

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
#: Sources of captured lines: RIE's stdout carries the function's and every extension's output
#: (one stream, as in CloudWatch); its stderr carries RIE's own log.
SANDBOX, RIE = "sandbox", "rie"

# Runs inside the new mount namespace: $1 code dir, $2 layer dir, $3 runtime dir, then the command.
_NAMESPACE_SCRIPT = """set -eu
task=$1 opt=$2 runtime=$3
shift 3
mount -t tmpfs -o mode=0755,size=64m secretcache-rie /var
mkdir -p /var/task /var/runtime /var/tmp
chmod 1777 /var/tmp
mount --bind "$task" /var/task
mount -o remount,bind,ro /var/task
mount --bind "$opt" /opt
mount -o remount,bind,ro /opt
mount --bind "$runtime" /var/runtime
mount -o remount,bind,ro /var/runtime
cd /var/task
exec "$@"
"""


class RieError(Exception):
    """RIE could not start here, or was used wrongly."""


@dataclass(frozen=True)
class RieInvoke:
    """One answer of RIE's invoke API.

    RIE answers 200 for a function error too (with the runtime's ``errorType``/``errorMessage``
    body and no ``X-Amz-Function-Error`` header), and 502 when INIT failed or the sandbox broke:
    an empty body for an extension's failure, the runtime's error when it posted one.
    """

    status: int
    body: bytes
    headers: dict[str, str]
    duration_ms: float  # request sent -> whole response read, as the caller saw it

    @property
    def payload(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return self.body.decode(errors="replace")

    @property
    def error_type(self) -> str | None:
        payload = self.payload
        if self.status != 200:
            return f"HTTP {self.status}"
        if isinstance(payload, dict) and {"errorType", "errorMessage"} <= payload.keys():
            return str(payload["errorType"])
        return None

    @property
    def ok(self) -> bool:
        return self.error_type is None


@dataclass(frozen=True)
class RieStop:
    """How RIE ended after SIGTERM."""

    exit_code: int | None
    duration_ms: float  # SIGTERM -> RIE exited (it waits for the extensions' SHUTDOWN)
    killed: bool  # did not exit within the timeout and was SIGKILLed


class RieSandbox:
    """AWS's RIE running ``handler`` from ``code_dir`` with a layer at /opt.

    ``with RieSandbox("examples", "app.handler", env, endpoint_url=moto.url) as rie:``
    ``rie.invoke({})`` (the first one runs INIT), ``rie.stop()``; ``rie.logs`` holds every line
    (source ``"sandbox"``: function and extensions; ``"rie"``: RIE's own log),
    ``rie.inits()`` the INIT timelines read from RIE's log.

    ``layer``: the unpacked layer directory (default: the built one, :func:`tools.layer.layer_dir`).
    ``extension_python``: given to the layer's launcher as ``SECRETCACHE_PYTHON`` (the override
    of its bundled interpreter; a python3.13, since the layer ships cp313 dependencies only);
    None (the default) gives none, as on Lambda. ``runtime_argv``: the runtime
    command (default ``<python> -S -m awslambdaric <handler>``; ``isolated=False`` drops ``-S``
    so the handler also sees that interpreter's site-packages). ``session_token``: the
    function's ``AWS_SESSION_TOKEN``, which is the extension's token (random by default).
    ``credentials``: AWS key pair for the sandbox (default moto's testing/testing).
    """

    def __init__(
        self,
        code_dir: str | os.PathLike[str],
        handler: str = "app.handler",
        env: Mapping[str, str | None] | None = None,
        *,
        layer: str | os.PathLike[str] | None = None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        function_name: str = "secretcache-function",
        memory_mb: int = 128,
        timeout_s: int = 30,
        session_token: str | None = None,
        credentials: tuple[str, str] = ("testing", "testing"),
        python: str | None = None,
        extension_python: str | None = None,
        isolated: bool = True,
        runtime_argv: list[str] | None = None,
        arch: str = "x86_64",
        echo: bool | Callable[[LogLine], None] = False,
    ) -> None:
        from tools.emulator import default_python

        self.code_dir = Path(code_dir).resolve()
        self.layer = Path(layer).resolve() if layer is not None else layer_dir(arch)
        self.handler = handler
        self.arch = arch
        self.function_name = function_name
        self.session_token = session_token or secrets.token_urlsafe(32)
        self.python = python or default_python()
        self.extension_python = extension_python
        self.logs = LogCapture()
        self._echo = echo
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._stopped: RieStop | None = None
        self._invokes = 0
        self._finalizer: weakref.finalize[[int], RieSandbox] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="secretcache-rie-"))
        self.port = free_port()
        self.runtime_api_port = free_port()
        version = self._python_version()
        self.runtime_argv = runtime_argv or [
            self.python,
            *(["-S"] if isolated else []),
            "-m",
            "awslambdaric",
            handler,
        ]
        self.environment = self._environment(
            env or {}, endpoint_url, region, memory_mb, timeout_s, credentials, version
        )

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RieSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 15.0) -> RieSandbox:
        """Start RIE and wait until its invoke API accepts connections (INIT comes later)."""
        reason = unavailable_reason(self.arch)
        if reason is not None:
            raise RieError(f"RIE cannot run here: {reason}")
        binary = rie_binary(self.arch)
        assert binary is not None
        if not (self.layer / "extensions").is_dir():
            raise RieError(
                f"{self.layer} is not an unpacked layer (no extensions/): ./build.sh layer"
            )
        if not self.code_dir.is_dir():
            raise RieError(f"the function's code directory {self.code_dir} does not exist")
        runtime = make_runtime_dir(self._workdir)
        argv = [
            "unshare", "-m", "--propagation", "private",
            "sh", "-c", _NAMESPACE_SCRIPT, "rie-namespace",
            str(self.code_dir), str(self.layer), str(runtime),
            *(emulator_prefix(self.arch) or []), str(binary), "--log-level", "debug",
            "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
            "--runtime-api-address", f"127.0.0.1:{self.runtime_api_port}",
            *self.runtime_argv,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv,
            env=self.environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # last resort if this object is dropped or the interpreter exits without stop()
        self._finalizer = weakref.finalize(self, _kill_group, self._proc.pid)
        for source, stream in ((SANDBOX, self._proc.stdout), (RIE, self._proc.stderr)):
            reader = threading.Thread(target=self._read, args=(source, stream), daemon=True)
            reader.start()
            self._readers.append(reader)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                for reader in self._readers:
                    reader.join(timeout=2)
                raise RieError(
                    f"RIE exited with {self._proc.returncode} before listening: "
                    + (self.logs.text(RIE)[-2000:] or "(no output)")
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.02)
        self.close()
        raise RieError(f"RIE did not listen on 127.0.0.1:{self.port} within {timeout:g} s")

    def invoke(self, event: Any = None, *, timeout: float = 60.0) -> RieInvoke:
        """POST one event to RIE's invoke API (the first one runs INIT first)."""
        if self._proc is None or self._proc.poll() is not None:
            raise RieError("RIE is not running")
        body = event if isinstance(event, bytes) else json.dumps({} if event is None else event)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            started = time.perf_counter()
            conn.request(
                "POST", INVOKE_PATH, body=body, headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            data = response.read()
            elapsed = (time.perf_counter() - started) * 1000.0
            headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        self._invokes += 1
        self._await_invoke_logged(self._invokes)
        return RieInvoke(response.status, data, headers, elapsed)

    def stop(self, timeout: float = 5.0) -> RieStop:
        """SIGTERM RIE (SHUTDOWN to the extensions) and wait; SIGKILL it past ``timeout``."""
        if self._stopped is not None:
            return self._stopped
        if self._proc is None:
            raise RieError("RIE was never started")
        family = _descendants(self._proc.pid)
        started = time.monotonic()
        killed = False
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            code = self._proc.wait(10)
        elapsed = (time.monotonic() - started) * 1000.0
        for pid in family:  # nothing of the sandbox outlives RIE
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for reader in self._readers:
            reader.join(timeout=5)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._stopped = RieStop(code, elapsed, killed)
        return self._stopped

    def close(self) -> None:
        """Stop RIE if it runs and remove the temporary files."""
        if self._proc is not None and self._stopped is None:
            self.stop()
        import shutil

        shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------------ what happened

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def processes(self) -> dict[int, str]:
        """Every process below RIE (the runtime, the extensions): pid -> command line."""
        if self._proc is None:
            return {}
        found = {}
        for pid in _descendants(self._proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
        return found

    def inits(self) -> list[InitTimeline]:
        """Every INIT RIE ran, read from its log."""
        return init_timelines(line.text for line in self.logs.lines(RIE))

    def extension_log(self, logger: str = "secretcache") -> list[dict[str, Any]]:
        """The JSON lines one extension wrote (its lines share RIE's stdout with the function's)."""
        records = []
        for line in self.logs.lines(SANDBOX):
            if not line.text.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line.text)
                if isinstance(record, dict) and record.get("logger") == logger:
                    records.append(record)
        return records

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str | None:
        """The first captured line matching ``predicate``, waiting for it up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.logs.lines():
                if predicate(line.text):
                    return line.text
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    # ------------------------------------------------------------------ internals

    def _await_invoke_logged(self, count: int, timeout: float = 2.0) -> None:
        """Wait until RIE's log, read by another thread, shows ``count`` invokes started.

        RIE logs the whole INIT before ``INVOKE START``, and both before it answers; waiting for
        the line here makes ``inits()`` right after ``invoke()`` see all of them.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started = sum("INVOKE START(" in ln.text for ln in self.logs.lines(RIE))
            if started >= count:
                return
            time.sleep(0.01)

    def _python_version(self) -> str:
        done = subprocess.run(
            [self.python, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    def _environment(
        self,
        env: Mapping[str, str | None],
        endpoint_url: str | None,
        region: str,
        memory_mb: int,
        timeout_s: int,
        credentials: tuple[str, str],
        version: str,
    ) -> dict[str, str]:
        """What RIE gets; it hands it on to the runtime and to every extension."""
        home = self._workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        result = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "HOME": str(home),  # never the host's ~/.aws
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": credentials[0],
            "AWS_SECRET_ACCESS_KEY": credentials[1],
            "AWS_SESSION_TOKEN": self.session_token,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
            "_HANDLER": self.handler,
            "PYTHONPATH": ":".join(
                [
                    "/var/task",
                    f"/opt/python/lib/python{version}/site-packages",
                    "/opt/python",
                    "/var/runtime",
                ]
            ),
            # /opt and /var/task are read-only, as on Lambda: no bytecode cache there
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if endpoint_url:
            result["AWS_ENDPOINT_URL"] = endpoint_url
        if isinstance(self.extension_python, str):
            result["SECRETCACHE_PYTHON"] = self.extension_python
        for key, value in env.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = value
        return result

    def _read(self, source: str, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            text = raw.decode(errors="replace").rstrip("\n")
            line = LogLine(
                time.monotonic(), source, "stdout" if source == SANDBOX else "stderr", text
            )
            self.logs.add(line)
            if callable(self._echo):
                self._echo(line)
            elif self._echo:
                print(f"[{source}] {text}", file=sys.stderr, flush=True)
        stream.close()


def _kill_group(pid: int) -> None:
    """SIGKILL RIE's process group and everything below RIE."""
    for child in _descendants(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found
