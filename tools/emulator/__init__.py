"""A local stand-in for one AWS Lambda execution environment (no Docker, no SAM).

It serves the Extensions API and the Runtime API on one loopback port, unpacks a layer zip into a
temporary ``/opt``, starts every ``extensions/*`` executable with the environment Lambda gives,
runs a real Python handler in a separate runtime process, and records every lifecycle phase with
``time.monotonic()`` timestamps (system-wide on Linux, so figures a handler records itself line up).

Usage::

    from tools.emulator import LambdaEmulator, InitError

    with LambdaEmulator("dist/secretcache-layer.zip", "examples", "app.handler",
                        env={"SECRETS_MANAGER_TTL": "2"},
                        endpoint_url=moto_url) as emu:
        report = emu.init()                  # InitReport; raises InitError(error_type, message)
        report.extensions["secretcache"].exec_to_ready_ms
        result = emu.invoke({"key": "value"})   # InvokeResult(ok, payload, error_type, ...)
        emu.freeze(); time.sleep(3); emu.thaw()  # SIGSTOP / SIGCONT, as Lambda freezes a sandbox
        down = emu.shutdown()                # ShutdownReport: exit codes, who was SIGKILLed
        emu.phases.first("extension.register", "secretcache").t
        emu.logs.text("secretcache", "stdout")

``LambdaEmulator(layer, code_dir, handler="app.handler", env=None, *, ...)``
    ``layer``: the layer zip, an already unpacked directory (used in place), or None. A zip is
    unpacked read-only (Lambda's /opt is read-only) once per process and shared by every
    emulator (``share_layer=False``: a private copy in this emulator's temporary directory).
    ``env``: the function's environment variables (a value of None removes a default one).
    ``endpoint_url``: becomes ``AWS_ENDPOINT_URL`` (moto server). ``region``, ``function_name``,
    ``memory_mb``, ``session_token`` (random by default; the extension's token).
    ``init_timeout`` (10 s), ``shutdown_timeout`` (2 s), ``function_timeout`` (30 s): Lambda's
    budgets, shorter in unit tests.
    ``python``: the interpreter first on every process's ``PATH`` (stand-in for
    ``/var/lang/bin/python3``; default: the real interpreter behind this one). ``python=None``
    emulates a runtime without Python: no python on ``PATH``. (The layer runs its bundled
    interpreter either way; a function sets ``SECRETCACHE_PYTHON`` in ``env`` to override it.)
    ``runtime_python``: interpreter of the runtime process (default: the same real interpreter);
    it runs with ``-S`` and ``PYTHONPATH`` = code dir + ``/opt/python`` unless
    ``runtime_site_packages=True``.
    ``runtime_command``: another runtime's command line (a Node runtime loop, a ``provided``
    bootstrap) instead of the Python runtime. ``AWS_LAMBDA_EXEC_WRAPPER`` in ``env`` is honoured
    as Lambda's managed runtimes do (the wrapper is run with the runtime's command line; a value
    under ``/opt/`` points into the unpacked layer); ``honour_exec_wrapper=False`` for an OS-only
    (``provided``) runtime, where Lambda runs the function's own bootstrap and no wrapper.
    ``echo``: True prints every captured line to stderr; a callable receives each ``LogLine``.
    ``snapstart=True``: SnapStart's environment (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``; no
    ``AWS_SESSION_TOKEN``, key variables, log group or stream: give
    ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` in ``env``)
    and ``snapshot()`` right after ``init()`` (SIGSTOP, as the snapshot ends INIT), then
    ``restore(after_seconds=...)`` (SIGCONT; the next ``invoke()`` is the first event after INIT).
    ``movable_clock=True``: the extensions run under libfaketime (Debian's ``libfaketime``,
    ``CLOCK_REALTIME`` only, read from ``emu.clock_file``), so ``restore(after_seconds=N)`` moves
    their wall clock N seconds ahead while their monotonic clock does not move, as a restored
    microVM's; EmulatorError if libfaketime is not installed.

Lifecycle rules enforced: the registered name must equal the extension's file name
(``Extension.InvalidExtensionName``); an extension that exits during INIT is ``Extension.Crash``;
``/init/error`` from an extension or the runtime fails INIT with its error type; INIT must finish
(every extension and the runtime called ``next``) within ``init_timeout`` (``Sandbox.Timedout``).
An invoke ends when the runtime answered and every extension registered for INVOKE called
``event/next`` again; past ``function_timeout`` it is ``Sandbox.Timedout`` and the sandbox is shut
down with reason ``timeout``. ``shutdown()`` SIGTERMs the runtime, sends SHUTDOWN to extensions
registered for it, and SIGKILLs whatever still runs at the deadline (reported as ``killed``).

Phase names (``emu.phases``; source = extension file name, ``"runtime"`` or ``"sandbox"``):
``init.start``, ``extension.exec``, ``extension.register``, ``extension.ready`` (first
``event/next``), ``extension.init_error``, ``extension.exit_error``, ``extension.event``,
``extension.next``, ``runtime.exec``, ``runtime.init_end`` (first ``invocation/next``),
``runtime.init_error``, ``init.end``/``init.error``, ``invoke.start``, ``invoke.response``/
``invoke.error``, ``invoke.end``, ``freeze``, ``thaw``, ``snapshot``, ``restore``,
``shutdown.start``, ``exit``, ``shutdown.killed``, ``shutdown.end``.

CLI: ``python -m tools.emulator --layer dist/secretcache-layer.zip --code examples
--handler app.handler --event '{}' [--invokes N] [--env K=V ...] [--moto]``.
"""

from .emulator import (
    LambdaEmulator,
    default_python,
    path_without_python,
    shared_layer,
    unpack_layer,
)
from .records import (
    EmulatorError,
    ExtensionRecord,
    InitError,
    InitReport,
    InvokeResult,
    LogLine,
    Phase,
    ProcessExit,
    ShutdownReport,
)

__all__ = [
    "EmulatorError",
    "ExtensionRecord",
    "InitError",
    "InitReport",
    "InvokeResult",
    "LambdaEmulator",
    "LogLine",
    "Phase",
    "ProcessExit",
    "ShutdownReport",
    "default_python",
    "path_without_python",
    "shared_layer",
    "unpack_layer",
]
