"""One Lambda execution environment: extension processes, a runtime process, and the lifecycle.

The lifecycle follows Lambda's documented one:
INIT = extensions exec and register -> runtime starts and imports the handler -> the runtime and
every extension call ``next`` (10 s budget); INVOKE = the event goes to the runtime and to every
extension registered for INVOKE, and ends when the runtime has answered and every such extension
has called ``event/next`` again; SHUTDOWN = SIGTERM to the runtime, a SHUTDOWN event to the
extensions, SIGKILL for whatever is still running at the deadline (2 s).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .api import LambdaApiServer, Reply, error_reply
from .records import (
    EmulatorError,
    ExtensionRecord,
    InitError,
    InitReport,
    InvokeResult,
    LogCapture,
    LogLine,
    PhaseLog,
    ProcessExit,
    ShutdownReport,
)

BOOTSTRAP = Path(__file__).with_name("runtime_bootstrap.py")
ACCOUNT_ID = "123456789012"
RUNTIME = "runtime"
SANDBOX = "sandbox"
_USE_DEFAULT = object()
#: How long the runtime gets after SIGTERM before it is killed and the extensions get SHUTDOWN.
RUNTIME_STOP_SECONDS = 0.3


#: Where Debian's libfaketime package puts its preload library (any architecture).
LIBFAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
#: Variables SnapStart does not set (credentials come from the container endpoint; the log group
#: and stream are not known when the snapshot is taken).
SNAPSTART_UNSET = (
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
)


def libfaketime() -> str | None:
    """The libfaketime preload library (Debian's ``libfaketime``), or None if not installed."""
    import glob

    found = sorted(glob.glob(LIBFAKETIME_GLOB))
    return found[0] if found else None


def default_python() -> str:
    """The real interpreter behind this one (never a pyenv shim): our /var/lang/bin/python3."""
    candidates = [getattr(sys, "_base_executable", None), sys.executable]
    base_bin = Path(sys.base_prefix) / "bin"
    candidates.append(str(base_bin / f"python{sys.version_info[0]}.{sys.version_info[1]}"))
    for cand in candidates:
        if cand and "/shims/" not in os.path.realpath(cand) and os.access(cand, os.X_OK):
            return cand
    raise EmulatorError("no real Python interpreter found to stand in for /var/lang/bin/python3")


def path_without_python(bin_dir: Path, search: str = "/usr/local/bin:/usr/bin:/bin") -> str:
    """A PATH for a runtime without Python: symlinks to every tool in ``search`` except python*."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for directory in search.split(":"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                name = entry.name
                if re.match(r"python|pypy|pip|pydoc|idle", name) or (bin_dir / name).exists():
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file() and os.access(entry.path, os.X_OK):
                        (bin_dir / name).symlink_to(entry.path)
    return str(bin_dir)


def unpack_layer(layer_zip: Path, opt: Path, *, read_only: bool = True) -> None:
    """Unzip a layer as Lambda does into /opt, keeping the exec bit (and symlinks).

    ``read_only``: drop every write bit afterwards, as Lambda's /opt is read-only (so Python
    cannot cache a missing .pyc there, exactly as on Lambda).
    """
    opt.mkdir(parents=True, exist_ok=True)
    root = opt.resolve()
    with zipfile.ZipFile(layer_zip) as zf:
        for info in zf.infolist():
            target = opt / info.filename
            if not target.resolve().is_relative_to(root):
                raise EmulatorError(f"layer entry escapes /opt: {info.filename}")
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                target.symlink_to(zf.read(info).decode())
                continue
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if mode & 0o777:
                target.chmod(mode & 0o777)
    if read_only:
        _set_writable(opt, False)


def _set_writable(tree: Path, writable: bool) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            new = (mode | stat.S_IWUSR) if writable else (mode & ~0o222)
            os.chmod(path, stat.S_IMODE(new))


def remove_tree(tree: Path) -> None:
    """rmtree that also removes a read-only unpacked layer."""
    with contextlib.suppress(OSError):
        _set_writable(tree, True)
    shutil.rmtree(tree, ignore_errors=True)


_SHARED_LAYERS: dict[tuple[str, int, int], Path] = {}
_SHARED_LOCK = threading.Lock()


def shared_layer(layer_zip: Path) -> Path:
    """The zip unpacked (read-only) once per process and shared by every emulator using it.

    Unpacking a 30 MB layer takes seconds; Lambda's /opt is read-only, so sharing it is faithful.
    Keyed by path, size and mtime, so a rebuilt zip is unpacked again.
    """
    st = layer_zip.stat()
    key = (str(layer_zip.resolve()), st.st_size, st.st_mtime_ns)
    with _SHARED_LOCK:
        opt = _SHARED_LAYERS.get(key)
        if opt is None or not opt.is_dir():
            opt = Path(tempfile.mkdtemp(prefix="lambda-opt-")) / "opt"
            unpack_layer(layer_zip, opt)
            _SHARED_LAYERS[key] = opt
            atexit.register(remove_tree, opt.parent)
        return opt


@dataclass
class _Process:
    source: str
    proc: subprocess.Popen[bytes]
    readers: list[threading.Thread]
    exited_at: float | None = None
    exit_code: int | None = None
    killed: bool = False

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


@dataclass
class _Extension:
    record: ExtensionRecord
    process: _Process | None = None
    ext_id: str | None = None
    queue: deque[bytes] = field(default_factory=deque)
    outstanding: bool = False  # an event was delivered and next was not called again yet
    waiting: bool = False  # blocked in event/next right now

    @property
    def name(self) -> str:
        return self.record.name

    def idle(self) -> bool:
        return self.waiting and not self.queue and not self.outstanding


@dataclass
class _Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    trace_id: str
    started_at: float
    delivered_at: float | None = None
    responded_at: float | None = None
    kind: str | None = None  # "response" | "error"
    error_type: str = ""
    body: bytes = b""


class LambdaEmulator:
    """One Lambda execution environment running a layer's extensions and a Python handler.

    Use as a context manager; ``init()`` then ``invoke()`` any number of times; ``shutdown()``
    (or leaving the ``with`` block) ends it. See the package docstring for every option.
    """

    def __init__(
        self,
        layer: str | os.PathLike[str] | None,
        code_dir: str | os.PathLike[str],
        handler: str = "app.handler",
        env: Mapping[str, str | None] | None = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        function_name: str = "secretcache-function",
        memory_mb: int = 128,
        function_timeout: float = 30.0,
        init_timeout: float = 10.0,
        shutdown_timeout: float = 2.0,
        python: Any = _USE_DEFAULT,
        runtime_python: str | None = None,
        runtime_site_packages: bool = False,
        runtime_command: list[str] | None = None,
        honour_exec_wrapper: bool = True,
        session_token: str | None = None,
        echo: bool | Callable[[LogLine], None] = False,
        workdir: str | os.PathLike[str] | None = None,
        share_layer: bool = True,
        snapstart: bool = False,
        movable_clock: bool = False,
    ) -> None:
        self.code_dir = Path(code_dir).resolve()
        self.handler = handler
        self.function_env = dict(env or {})
        self.endpoint_url = endpoint_url
        self.region = region
        self.function_name = function_name
        self.memory_mb = memory_mb
        self.function_timeout = function_timeout
        self.init_timeout = init_timeout
        self.shutdown_timeout = shutdown_timeout
        self.python: str | None = default_python() if python is _USE_DEFAULT else python
        self.runtime_python = runtime_python or default_python()
        self.runtime_site_packages = runtime_site_packages
        self.runtime_command = runtime_command
        self.honour_exec_wrapper = honour_exec_wrapper
        self.session_token = session_token or secrets.token_urlsafe(32)
        self.function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function_name}"
        self._echo = echo
        self.snapstart = snapstart
        self._clock_offset = 0.0
        self._faketime: str | None = None
        if movable_clock:
            self._faketime = libfaketime()
            if self._faketime is None:
                raise EmulatorError(
                    "movable_clock needs libfaketime (Debian package libfaketime): not installed"
                )

        self.phases = PhaseLog()
        self.logs = LogCapture()
        self.extensions: dict[str, ExtensionRecord] = {}
        self._exts: dict[str, _Extension] = {}
        self._ext_by_id: dict[str, _Extension] = {}
        self._runtime: _Process | None = None
        self._procs: list[_Process] = []  # every process spawned, extensions first
        self._runtime_ready_at: float | None = None
        self._runtime_exec_at: float | None = None
        self._runtime_queue: deque[_Invocation] = deque()
        self._invocations: dict[str, _Invocation] = {}
        self._failure: tuple[str, str, str] | None = None
        self._state = "new"
        self._frozen = False
        self._closing = False
        self._cond = threading.Condition()
        self._shutdown_report: ShutdownReport | None = None
        self.init_report: InitReport | None = None
        self._reported_init = False

        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lambda-emulator-"))
        self.clock_file = self.workdir / "wall-clock-offset"
        if self._faketime is not None:
            self.clock_file.write_text("+0\n")
        if layer is None:
            self.opt = self.workdir / "opt"
            self.opt.mkdir(parents=True, exist_ok=True)
        elif Path(layer).is_dir():
            self.opt = Path(layer).resolve()
        elif share_layer:
            self.opt = shared_layer(Path(layer))
        else:
            self.opt = self.workdir / "opt"
            unpack_layer(Path(layer), self.opt)
        self._server = LambdaApiServer(self)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="lambda-api", daemon=True
        )
        self._server_thread.start()
        self.runtime_api = self._server.address
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)

    # ------------------------------------------------------------------ public API

    def __enter__(self) -> LambdaEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> str:
        """new, init, ready, failed, shutting_down or shutdown."""
        return self._state

    @property
    def environment(self) -> dict[str, str]:
        """The environment every extension process receives (the runtime adds PYTHONPATH)."""
        return self._base_env()

    def pid(self, source: str) -> int | None:
        """The pid of an extension (by file name) or of ``"runtime"``."""
        if source == RUNTIME:
            return self._runtime.proc.pid if self._runtime else None
        ext = self._exts.get(source)
        return ext.process.proc.pid if ext and ext.process else None

    def init(self) -> InitReport:
        """Run INIT; raise :class:`InitError` (after shutting the sandbox down) if it fails."""
        with self._cond:
            if self._state != "new":
                raise EmulatorError(f"init() on a sandbox that is {self._state}")
            self._state = "init"
        start = time.monotonic()
        self.phases.add(SANDBOX, "init.start", start)
        deadline = start + self.init_timeout
        ext_dir = self.opt / "extensions"
        paths = sorted(ext_dir.iterdir()) if ext_dir.is_dir() else []
        for path in paths:
            if path.is_file() and os.access(path, os.X_OK):
                self._start_extension(path)

        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    self._init_failure() is not None or all(e.ext_id for e in self._exts.values())
                ),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            failure = self._init_failure()
            if failure is None and not ok:
                waiting = [e.name for e in self._exts.values() if not e.ext_id]
                failure = (
                    "Sandbox.Timedout",
                    f"INIT did not finish within {self.init_timeout:g} s: "
                    f"extension(s) {', '.join(waiting)} never registered",
                    SANDBOX,
                )
        if failure is None:
            self._start_runtime()
            with self._cond:
                ok = self._cond.wait_for(
                    lambda: (
                        self._init_failure() is not None
                        or (
                            self._runtime_ready_at is not None
                            and all(e.record.ready_at is not None for e in self._exts.values())
                        )
                    ),
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                failure = self._init_failure()
                if failure is None and not ok:
                    waiting = [e.name for e in self._exts.values() if e.record.ready_at is None]
                    if self._runtime_ready_at is None:
                        waiting.append("the runtime")
                    failure = (
                        "Sandbox.Timedout",
                        f"INIT did not finish within {self.init_timeout:g} s: "
                        f"still waiting for {', '.join(waiting)} to call next",
                        SANDBOX,
                    )
        end = time.monotonic()
        if failure is not None:
            error_type, message, source = failure
            self.phases.add(SANDBOX, "init.error", end, error_type=error_type, message=message)
            with self._cond:
                self._state = "failed"
            self.shutdown(reason="failure")
            raise InitError(error_type, message, source)
        with self._cond:
            self._state = "ready"
        self.phases.add(SANDBOX, "init.end", end)
        assert self._runtime_exec_at is not None and self._runtime_ready_at is not None
        self.init_report = InitReport(
            duration_ms=(end - start) * 1000.0,
            runtime_init_ms=(self._runtime_ready_at - self._runtime_exec_at) * 1000.0,
            extensions=dict(self.extensions),
        )
        return self.init_report

    def invoke(self, event: Any = None, *, timeout: float | None = None) -> InvokeResult:
        """Deliver one INVOKE; thaws a frozen sandbox first, as Lambda does."""
        if self._state != "ready":
            raise EmulatorError(f"cannot invoke: the sandbox is {self._state}")
        if self._frozen:
            self.thaw()
        payload = event if isinstance(event, bytes) else json.dumps(event or {}).encode()
        budget = self.function_timeout if timeout is None else timeout
        start = time.monotonic()
        inv = _Invocation(
            request_id=str(uuid.uuid4()),
            payload=payload,
            deadline_ms=int(time.time() * 1000 + budget * 1000),
            trace_id=f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent="
            f"{secrets.token_hex(8)};Sampled=0",
            started_at=start,
        )
        event_body = json.dumps(
            {
                "eventType": "INVOKE",
                "deadlineMs": inv.deadline_ms,
                "requestId": inv.request_id,
                "invokedFunctionArn": self.function_arn,
                "tracing": {"type": "X-Amzn-Trace-Id", "value": inv.trace_id},
            }
        ).encode()
        self._platform_line(f"START RequestId: {inv.request_id} Version: $LATEST")
        with self._cond:
            targets = [e for e in self._exts.values() if "INVOKE" in e.record.events]
            self._invocations[inv.request_id] = inv
            self._runtime_queue.append(inv)
            for ext in targets:
                ext.queue.append(event_body)
            self.phases.add(SANDBOX, "invoke.start", start, request_id=inv.request_id)
            self._cond.notify_all()

            def finished() -> bool:
                return self._invoke_failure() is not None or (
                    inv.responded_at is not None and all(e.idle() for e in targets)
                )

            ok = self._cond.wait_for(finished, timeout=budget)
            failure = self._invoke_failure()
        end = time.monotonic()
        if failure is None and not ok:
            failure = ("Sandbox.Timedout", f"Task timed out after {budget:.2f} seconds", "timeout")
        self.phases.add(SANDBOX, "invoke.end", end, request_id=inv.request_id)
        self._report_lines(inv, ((inv.responded_at or end) - start) * 1000.0)
        if failure is not None:
            error_type, message, reason = failure
            with self._cond:
                self._state = "failed"
            self.shutdown(reason="timeout" if reason == "timeout" else "failure")
            return InvokeResult(
                request_id=inv.request_id,
                ok=False,
                payload=None,
                error_type=error_type,
                error=message,
                duration_ms=((inv.responded_at or end) - start) * 1000.0,
                total_ms=(end - start) * 1000.0,
                started_at=start,
                responded_at=inv.responded_at,
                ended_at=end,
            )
        assert inv.responded_at is not None
        decoded = _decode(inv.body)
        is_error = inv.kind == "error"
        reported_type: str | None = None
        if is_error:
            from_body = decoded.get("errorType") if isinstance(decoded, dict) else None
            reported_type = inv.error_type or (str(from_body) if from_body else "Unhandled")
        return InvokeResult(
            request_id=inv.request_id,
            ok=not is_error,
            payload=None if is_error else decoded,
            error_type=reported_type,
            error=decoded if is_error else None,
            duration_ms=(inv.responded_at - start) * 1000.0,
            total_ms=(end - start) * 1000.0,
            started_at=start,
            responded_at=inv.responded_at,
            ended_at=end,
        )

    def freeze(self) -> None:
        """SIGSTOP every process of the sandbox, as Lambda freezes it between invocations."""
        if self._frozen:
            return
        for process in self._all_processes():
            process.signal(signal.SIGSTOP)
        self._frozen = True
        self.phases.add(SANDBOX, "freeze", time.monotonic())

    def thaw(self) -> None:
        """SIGCONT every process frozen by :meth:`freeze`."""
        if not self._frozen:
            return
        for process in self._all_processes():
            process.signal(signal.SIGCONT)
        self._frozen = False
        self.phases.add(SANDBOX, "thaw", time.monotonic())

    def snapshot(self) -> None:
        """SnapStart: INIT is over, the snapshot is taken: every process stops (SIGSTOP) where it
        is, extensions blocked in the ``event/next`` that INIT ended with."""
        if not self.snapstart:
            raise EmulatorError("snapshot() needs LambdaEmulator(..., snapstart=True)")
        if self._state != "ready" or self.phases.first("invoke.start") is not None:
            raise EmulatorError("snapshot() is taken right after init(), before any invoke")
        self.freeze()
        self.phases.add(SANDBOX, "snapshot", time.monotonic())

    def restore(self, after_seconds: float = 0.0) -> None:
        """SnapStart: resume the snapshot ``after_seconds`` later by the wall clock.

        As a restored microVM, the processes' wall clock jumps ahead while their monotonic clock
        does not (``movable_clock=True``: libfaketime moves CLOCK_REALTIME only, extensions
        only; the runtime's clock stays, as libfaketime breaks absolute monotonic sleeps).
        The next ``invoke()`` is the first event the extensions receive after INIT.
        """
        if not self._frozen or self.phases.first("snapshot") is None:
            raise EmulatorError("restore() follows snapshot()")
        if after_seconds:
            if self._faketime is None:
                raise EmulatorError("moving the wall clock needs movable_clock=True")
            self._clock_offset += after_seconds
            self.clock_file.write_text(f"+{self._clock_offset:.3f}\n")
        self.phases.add(SANDBOX, "restore", time.monotonic(), after_seconds=after_seconds)
        self.thaw()

    def shutdown(self, reason: str = "spindown") -> ShutdownReport:
        """SIGTERM the runtime, send SHUTDOWN to extensions, SIGKILL survivors at the deadline."""
        if self._shutdown_report is not None:
            return self._shutdown_report
        if self._frozen:
            self.thaw()
        start = time.monotonic()
        deadline = start + self.shutdown_timeout
        deadline_ms = int(time.time() * 1000 + self.shutdown_timeout * 1000)
        self.phases.add(SANDBOX, "shutdown.start", start, reason=reason)
        with self._cond:
            self._state = "shutting_down"
        self._stop_runtime(deadline)
        body = json.dumps(
            {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms}
        ).encode()
        with self._cond:
            targets = [
                e
                for e in self._exts.values()
                if "SHUTDOWN" in e.record.events and e.process and e.process.alive
            ]
            for ext in targets:
                ext.queue.append(body)
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: (
                    all(e.process is not None and not e.process.alive for e in targets)
                    and (self._runtime is None or not self._runtime.alive)
                ),
                timeout=max(0.0, deadline - time.monotonic()),
            )
        for process in self._all_processes():
            if process.alive:
                process.killed = True
                process.signal(signal.SIGKILL)
                self.phases.add(process.source, "shutdown.killed", time.monotonic())
        for process in self._all_processes():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=5)
            for reader in process.readers:
                reader.join(timeout=2)
        # the watcher threads record exits; give them a moment to catch up
        with self._cond:
            self._cond.wait_for(lambda: all(not p.alive for p in self._all_processes()), timeout=2)
        end = time.monotonic()
        self.phases.add(SANDBOX, "shutdown.end", end, reason=reason)

        def exit_of(process: _Process) -> ProcessExit:
            after = None if process.exited_at is None else (process.exited_at - start) * 1000.0
            return ProcessExit(process.source, process.exit_code, after, process.killed)

        self._shutdown_report = ShutdownReport(
            reason=reason,
            deadline_ms=self.shutdown_timeout * 1000.0,
            duration_ms=(end - start) * 1000.0,
            extensions={
                e.name: exit_of(e.process) for e in self._exts.values() if e.process is not None
            },
            runtime=exit_of(self._runtime) if self._runtime is not None else None,
        )
        with self._cond:
            self._state = "shutdown"
            self._closing = True
            self._cond.notify_all()
        return self._shutdown_report

    def _stop_runtime(self, deadline: float) -> None:
        """End the runtime before the extensions hear SHUTDOWN, as Lambda and RIE both do.

        SIGTERM, then SIGKILL if it has not exited within RUNTIME_STOP_SECONDS (RIE kills it at
        once; Lambda gives a runtime with extensions a SIGTERM first).
        """
        runtime = self._runtime
        if runtime is None or not runtime.alive:
            return
        runtime.signal(signal.SIGTERM)
        limit = min(deadline, time.monotonic() + RUNTIME_STOP_SECONDS)
        with self._cond:
            self._cond.wait_for(
                lambda: not runtime.alive, timeout=max(0.0, limit - time.monotonic())
            )
        if runtime.alive:
            runtime.killed = True
            runtime.signal(signal.SIGKILL)
            self.phases.add(RUNTIME, "shutdown.killed", time.monotonic())

    def close(self) -> None:
        """Shut down if still running, stop the API server and remove the temporary /opt."""
        if self._state not in ("new", "shutdown") or any(p.alive for p in self._all_processes()):
            self.shutdown(reason="spindown")
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        if self._own_workdir:
            remove_tree(self.workdir)

    # ------------------------------------------------------------------ processes

    def _base_env(self) -> dict[str, str]:
        version = _python_version(self.runtime_python)
        env = {
            "PATH": f"/usr/local/bin:/usr/bin:/bin:{self.opt}/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "HOME": str(self.workdir / "home"),
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "LAMBDA_RUNTIME_DIR": str(BOOTSTRAP.parent),
            "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": self.session_token,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"2024/01/01/[$LATEST]{secrets.token_hex(16)}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
            "_HANDLER": self.handler,
            # /opt and /var/task are read-only on Lambda, so Python cannot cache bytecode there;
            # as root here the mode bits would not stop it, so say it to every Python process
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.snapstart:
            env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
            for name in SNAPSTART_UNSET:
                env.pop(name, None)
        if self.python:
            # A Python runtime: its interpreter on PATH (the layer's launcher no longer looks
            # for one: it runs its bundled interpreter unless the function sets SECRETCACHE_PYTHON).
            env["PATH"] = f"{Path(self.python).parent}:{env['PATH']}"
        else:
            env["PATH"] = path_without_python(self.workdir / "bin-no-python")
        (self.workdir / "home").mkdir(exist_ok=True)
        for key, value in self.function_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        wrapper = env.get("AWS_LAMBDA_EXEC_WRAPPER", "")
        if wrapper.startswith("/opt/"):
            # The layer is unpacked here, not at /opt: point the variable where /opt is.
            env["AWS_LAMBDA_EXEC_WRAPPER"] = str(self.opt / wrapper[len("/opt/") :])
        return env

    def _spawn(self, source: str, argv: list[str], env: dict[str, str]) -> _Process:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(self.code_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: freeze/kill reach its children too
        )
        readers = [
            threading.Thread(target=self._read_stream, args=(source, name, stream), daemon=True)
            for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        process = _Process(source, proc, readers)
        self._procs.append(process)
        for reader in readers:
            reader.start()
        threading.Thread(target=self._watch, args=(process,), daemon=True).start()
        return process

    def _platform_line(self, text: str) -> None:
        """A line Lambda itself writes to the function's log (source ``"sandbox"``)."""
        line = LogLine(time.monotonic(), SANDBOX, "stdout", text)
        self.logs.add(line)
        if callable(self._echo):
            self._echo(line)
        elif self._echo:
            print(f"[{SANDBOX} stdout] {text}", file=sys.stderr, flush=True)

    def _report_lines(self, inv: _Invocation, duration_ms: float) -> None:
        """END and REPORT, in the layout RIE writes them (Init Duration on the first REPORT).

        Max Memory Used is the peak RSS (VmHWM) of the runtime and the extensions added up.
        """
        self._platform_line(f"END RequestId: {inv.request_id}")
        fields = [f"REPORT RequestId: {inv.request_id}"]
        if not self._reported_init and self.init_report is not None:
            fields.append(f"Init Duration: {self.init_report.duration_ms:.2f} ms")
        self._reported_init = True
        peak_kib = sum(_peak_rss_kib(p.proc.pid) for p in self._all_processes() if p.alive)
        fields += [
            f"Duration: {duration_ms:.2f} ms",
            f"Billed Duration: {math.ceil(duration_ms)} ms",
            f"Memory Size: {self.memory_mb} MB",
            f"Max Memory Used: {math.ceil(peak_kib / 1024)} MB",
        ]
        self._platform_line("\t".join(fields) + "\t")

    def _read_stream(self, source: str, stream_name: str, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = LogLine(
                time.monotonic(), source, stream_name, raw.decode(errors="replace").rstrip("\n")
            )
            self.logs.add(line)
            if callable(self._echo):
                self._echo(line)
            elif self._echo:
                print(f"[{source} {stream_name}] {line.text}", file=sys.stderr, flush=True)
        stream.close()

    def _watch(self, process: _Process) -> None:
        code = process.proc.wait()
        now = time.monotonic()
        with self._cond:
            process.exited_at = now
            process.exit_code = code
            ext = self._exts.get(process.source)
            if ext is not None:
                ext.record.exited_at = now
                ext.record.exit_code = code
                ext.record.killed = process.killed
            self.phases.add(process.source, "exit", now, exit_code=code, killed=process.killed)
            self._cond.notify_all()

    def _start_extension(self, path: Path) -> None:
        record = ExtensionRecord(name=path.name, path=str(path))
        ext = _Extension(record)
        with self._cond:
            self._exts[path.name] = ext
            self.extensions[path.name] = record
        record.exec_at = time.monotonic()
        self.phases.add(path.name, "extension.exec", record.exec_at, path=str(path))
        env = self._base_env()
        if self._faketime is not None:
            env.update(
                LD_PRELOAD=self._faketime,
                FAKETIME_TIMESTAMP_FILE=str(self.clock_file),
                FAKETIME_NO_CACHE="1",
                FAKETIME_DONT_FAKE_MONOTONIC="1",
            )
        try:
            ext.process = self._spawn(path.name, [str(path)], env)
        except OSError as exc:
            with self._cond:
                self._failure = (
                    "Extension.LaunchError",
                    f"cannot exec {path.name}: {exc}",
                    path.name,
                )
                self._cond.notify_all()
            return
        record.pid = ext.process.proc.pid

    def _start_runtime(self) -> None:
        env = self._base_env()
        version = _python_version(self.runtime_python)
        paths = [
            str(self.code_dir),
            str(self.opt / "python" / "lib" / f"python{version}" / "site-packages"),
            str(self.opt / "python"),
        ]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        if self.runtime_command is not None:
            argv = list(self.runtime_command)
        else:
            argv = [self.runtime_python]
            if not self.runtime_site_packages:
                argv.append("-S")  # the handler sees its code, /opt/python and the stdlib only
            argv.append(str(BOOTSTRAP))
        wrapper = env.get("AWS_LAMBDA_EXEC_WRAPPER")
        if wrapper and self.honour_exec_wrapper:
            # As the managed runtimes' bootstrap does: the wrapper gets the runtime's command line.
            argv = [wrapper, *argv]
        self._runtime_exec_at = time.monotonic()
        self.phases.add(RUNTIME, "runtime.exec", self._runtime_exec_at)
        self._runtime = self._spawn(RUNTIME, argv, env)

    def _all_processes(self) -> list[_Process]:
        return list(self._procs)

    # ------------------------------------------------------------------ failure rules (lock held)

    def _init_failure(self) -> tuple[str, str, str] | None:
        if self._failure is not None:
            return self._failure
        for ext in self._exts.values():
            if ext.process is not None and not ext.process.alive:
                stage = "registering" if ext.ext_id is None else "INIT finished"
                return (
                    "Extension.Crash",
                    f"extension {ext.name!r} exited with code {ext.process.exit_code} "
                    f"before {stage}",
                    ext.name,
                )
        if self._runtime is not None and not self._runtime.alive:
            return (
                "Runtime.ExitError",
                f"the runtime exited with code {self._runtime.exit_code} during INIT",
                RUNTIME,
            )
        return None

    def _invoke_failure(self) -> tuple[str, str, str] | None:
        if self._failure is not None:
            return self._failure
        for ext in self._exts.values():
            if ext.process is not None and not ext.process.alive:
                return (
                    "Extension.Crash",
                    f"extension {ext.name!r} exited with code {ext.process.exit_code}",
                    "failure",
                )
        if self._runtime is not None and not self._runtime.alive:
            return (
                "Runtime.ExitError",
                f"the runtime exited with code {self._runtime.exit_code}",
                "failure",
            )
        return None

    # ------------------------------------------------------------------ Sandbox protocol (HTTP)

    def register(self, name: str, body: bytes, headers: dict[str, str]) -> Reply:
        now = time.monotonic()
        try:
            events = json.loads(body or b"{}").get("events", [])
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise ValueError
        except (ValueError, AttributeError):
            return error_reply(400, "InvalidRequest", 'body must be {"events": [...]}')
        bad = [e for e in events if e not in ("INVOKE", "SHUTDOWN")]
        if bad:
            return error_reply(400, "Extension.InvalidEvent", f"unknown event types {bad}")
        with self._cond:
            if self._state != "init" or self._runtime is not None:
                return error_reply(
                    403, "Extension.InvalidStateTransition", "register is allowed only in INIT"
                )
            ext = self._exts.get(name)
            if ext is None or ext.ext_id is not None:
                files = ", ".join(sorted(self._exts)) or "none"
                why = (
                    "is already registered" if ext else f"matches no file in extensions/ ({files})"
                )
                message = f"extension name {name!r} {why}"
                self.phases.add(name or "?", "extension.register_rejected", now, message=message)
                self._failure = ("Extension.InvalidExtensionName", message, name)
                self._cond.notify_all()
                return error_reply(403, "Extension.InvalidExtensionName", message)
            ext.ext_id = str(uuid.uuid4())
            self._ext_by_id[ext.ext_id] = ext
            ext.record.registered_at = now
            ext.record.registered_name = name
            ext.record.events = tuple(events)
            self.phases.add(name, "extension.register", now, events=list(events))
            self._cond.notify_all()
        reply = {
            "functionName": self.function_name,
            "functionVersion": "$LATEST",
            "handler": self.handler,
        }
        if "accountid" in headers.get("lambda-extension-accept-feature", "").lower():
            reply["accountId"] = ACCOUNT_ID
        return Reply(200, reply, {"Lambda-Extension-Identifier": ext.ext_id})

    def extension_next(self, extension_id: str) -> Reply:
        now = time.monotonic()
        with self._cond:
            ext = self._ext_by_id.get(extension_id)
            if ext is None:
                return error_reply(
                    403, "Extension.UnknownExtensionIdentifier", "unknown extension identifier"
                )
            if ext.record.ready_at is None:
                ext.record.ready_at = now
                self.phases.add(ext.name, "extension.ready", now)
            if ext.outstanding:
                ext.outstanding = False
                self.phases.add(ext.name, "extension.next", now)
            ext.waiting = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: bool(ext.queue) or self._closing)
            ext.waiting = False
            if not ext.queue:
                return error_reply(500, "Emulator.Closed", "the sandbox is gone")
            body = ext.queue.popleft()
            ext.outstanding = True
            event_type = json.loads(body)["eventType"]
            self.phases.add(ext.name, "extension.event", time.monotonic(), event=event_type)
        return Reply(200, body, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    def extension_error(self, kind: str, extension_id: str, error_type: str, body: bytes) -> Reply:
        now = time.monotonic()
        message = _error_message(body)
        with self._cond:
            ext = self._ext_by_id.get(extension_id)
            if ext is None:
                return error_reply(
                    403, "Extension.UnknownExtensionIdentifier", "unknown extension identifier"
                )
            error_type = error_type or "Extension.Unknown"
            if kind == "init":
                ext.record.init_error = (error_type, message)
                self.phases.add(ext.name, "extension.init_error", now, error_type=error_type)
                if self._state == "init" and self._failure is None:
                    self._failure = (error_type, message, ext.name)
            else:
                ext.record.exit_error = (error_type, message)
                self.phases.add(ext.name, "extension.exit_error", now, error_type=error_type)
                if self._failure is None:
                    self._failure = (error_type, message, ext.name)
            self._cond.notify_all()
        return Reply(202, {"status": "OK"})

    def runtime_next(self) -> Reply:
        now = time.monotonic()
        with self._cond:
            if self._runtime_ready_at is None:
                self._runtime_ready_at = now
                self.phases.add(RUNTIME, "runtime.init_end", now)
            self._cond.notify_all()
            self._cond.wait_for(lambda: bool(self._runtime_queue) or self._closing)
            if not self._runtime_queue:
                return error_reply(500, "Emulator.Closed", "the sandbox is gone")
            inv = self._runtime_queue.popleft()
            inv.delivered_at = time.monotonic()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": inv.trace_id,
        }
        return Reply(200, inv.payload, headers)

    def runtime_result(self, request_id: str, kind: str, error_type: str, body: bytes) -> Reply:
        now = time.monotonic()
        with self._cond:
            inv = self._invocations.get(request_id)
            if inv is None or inv.delivered_at is None:
                return error_reply(400, "InvalidRequestID", f"unknown request id {request_id}")
            if inv.responded_at is not None:
                return error_reply(
                    400, "InvalidStateTransition", "the invocation already has a result"
                )
            inv.responded_at, inv.kind, inv.error_type, inv.body = now, kind, error_type, body
            self.phases.add(RUNTIME, f"invoke.{kind}", now, request_id=request_id)
            self._cond.notify_all()
        return Reply(202, {"status": "OK"})

    def runtime_init_error(self, error_type: str, body: bytes) -> Reply:
        now = time.monotonic()
        message = _error_message(body)
        with self._cond:
            error_type = error_type or "Runtime.Unknown"
            self.phases.add(RUNTIME, "runtime.init_error", now, error_type=error_type)
            if self._failure is None:
                self._failure = (error_type, message, RUNTIME)
            self._cond.notify_all()
        return Reply(202, {"status": "OK"})


def _kill_all(processes: list[_Process]) -> None:
    """Last resort (garbage collection or interpreter exit): leave no process behind."""
    with contextlib.suppress(Exception):
        for process in list(processes):
            if process.alive:
                process.signal(signal.SIGCONT)
                process.signal(signal.SIGKILL)


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


def _error_message(body: bytes) -> str:
    decoded = _decode(body)
    if isinstance(decoded, dict):
        return str(decoded.get("errorMessage") or decoded.get("message") or decoded)
    return "" if decoded is None else str(decoded)


def _python_version(python: str) -> str:
    match = re.search(r"python(3\.\d+)", os.path.basename(os.path.realpath(python)))
    return match.group(1) if match else f"{sys.version_info[0]}.{sys.version_info[1]}"


def _peak_rss_kib(pid: int) -> int:
    """A process's peak resident set (VmHWM) in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
