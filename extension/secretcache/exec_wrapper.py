"""The exec wrapper: resolve ``{{resolve:...}}`` references in the environment, exec the runtime.

Lambda runs ``$AWS_LAMBDA_EXEC_WRAPPER <runtime command line>`` instead of the runtime itself;
the layer's ``/opt/secretcache/exec-wrapper`` runs the launcher with ``--exec-wrapper <runtime
command line>``, which starts the interpreter on :func:`main` here. The references of every
variable are fetched from the running extension over HTTP on 127.0.0.1, as any client would (the
extension binds its socket before it registers, and Lambda starts the runtime only after every
extension registered), all at once (envresolve.py). The values go only into the environment given
to ``execve``, so only the runtime's ``/proc/<pid>/environ`` ever holds them. Messages name
variables and references, never a value.

Standard library only and no asyncio: it runs on the critical path of every cold start.
"""

from __future__ import annotations

import os
import sys
import time

if sys.version_info < (3, 10):  # noqa: UP036
    # The launcher may have found an older python3 (not a Lambda Python runtime): one clear line
    # instead of a traceback from the modules below.
    sys.stderr.write(
        "secretcache: the exec wrapper needs Python 3.10 or newer; found "
        f"{sys.version_info[0]}.{sys.version_info[1]}\n"
    )
    sys.exit(1)

from .envrefs import has_reference
from .envresolve import TIMEOUT_VARIABLE, resolve_environment
from .loopback_http import http_call

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Mapping

ERROR_TYPE = "Secretcache.EnvReferenceFailed"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
ON_ERROR_VARIABLE = "SECRETCACHE_ENV_ON_ERROR"
DEFAULT_TIMEOUT_MS = 8000


class SettingsError(ValueError):
    """An invalid SECRETCACHE_ENV_* option."""


class Settings:
    """The wrapper's options, read from the environment once (a plain class: no dataclasses
    import on the cold-start path)."""

    __slots__ = ("leave_unresolved", "log_level", "port", "runtime_api", "timeout", "token")

    def __init__(
        self,
        *,
        port: int,
        token: str | None,
        leave_unresolved: bool,
        timeout: float,
        runtime_api: str | None,
        log_level: str,
    ) -> None:
        self.port = port
        self.token = token
        self.leave_unresolved = leave_unresolved
        self.timeout = timeout
        self.runtime_api = runtime_api
        self.log_level = log_level


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build the options; raise :class:`SettingsError` naming the variable on a bad value."""
    raw_port = (env.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT") or "").strip() or "2773"
    if not (raw_port.isascii() and raw_port.isdigit() and 1 <= int(raw_port) <= 65535):
        raise SettingsError("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT must be a port (1-65535)")
    on_error = (env.get(ON_ERROR_VARIABLE) or "fail").strip().lower()
    if on_error not in ("fail", "leave"):
        raise SettingsError(f"{ON_ERROR_VARIABLE} must be fail or leave")
    raw_timeout = (env.get(TIMEOUT_VARIABLE) or "").strip() or str(DEFAULT_TIMEOUT_MS)
    if not (raw_timeout.isascii() and raw_timeout.isdigit() and 1 <= int(raw_timeout) <= 600000):
        raise SettingsError(f"{TIMEOUT_VARIABLE} must be milliseconds (1-600000)")
    level = (env.get("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL") or "info").strip().lower()
    return Settings(
        port=int(raw_port),
        token=env.get("AWS_SESSION_TOKEN") or None,
        leave_unresolved=on_error == "leave",
        timeout=int(raw_timeout) / 1000.0,
        runtime_api=(env.get("AWS_LAMBDA_RUNTIME_API") or "").strip() or None,
        log_level=level if level in ("debug", "info", "warn", "error", "none") else "info",
    )


def report_init_error(runtime_api: str | None, message: str) -> None:
    """Tell Lambda why INIT failed (POST /runtime/init/error), as a runtime would; best effort."""
    if not runtime_api:
        return
    import json

    host, _, port = runtime_api.rpartition(":")
    body = json.dumps({"errorMessage": message, "errorType": ERROR_TYPE, "stackTrace": []})
    try:
        http_call(
            (host, int(port)),
            "POST",
            "/2018-06-01/runtime/init/error",
            {"Lambda-Runtime-Function-Error-Type": ERROR_TYPE},
            body.encode(),
            time.monotonic() + 2.0,
        )
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"secretcache: could not report the init error ({type(exc).__name__})\n")


def initial_environment(path: str = "/proc/self/environ") -> dict[bytes, bytes]:
    """The environment this process was started with, as the launcher passed it on.

    Not ``os.environ``: the interpreter may have added to it before any of our code ran (PEP 538
    sets ``LC_CTYPE=C.UTF-8`` when the locale is C or missing), and that must not reach the
    runtime. The kernel keeps the block ``execve`` received, which ``setenv`` never rewrites.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environb)
    env: dict[bytes, bytes] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name and name not in env:  # the first of duplicates, as getenv() reads
            env[name] = value
    return env


def _exec_runtime(
    argv: list[str], environb: dict[bytes, bytes], resolved: Mapping[str, str]
) -> int:
    for name, value in resolved.items():
        environb[os.fsencode(name)] = value.encode("utf-8")
    try:
        # The runtime's own command line, as Lambda gave it to the wrapper: nothing to quote.
        os.execvpe(argv[0], argv, environb)  # noqa: S606
    except OSError as exc:
        sys.stderr.write(f"secretcache: cannot exec the runtime {argv[0]}: {exc.strerror}\n")
    return 127


def main(argv: list[str]) -> int:
    """``[--] RUNTIME ARG...``: resolve, then exec the runtime; returns only on failure."""
    started = time.monotonic()
    environb = initial_environment()
    env = {os.fsdecode(k): os.fsdecode(v) for k, v in environb.items()}
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write("secretcache: the exec wrapper needs the runtime's command line\n")
        return 2
    if not any(has_reference(v) for v in env.values()):
        return _exec_runtime(argv, environb, {})
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        message = f"secretcache: {exc}"
        sys.stderr.write(message + "\n")
        report_init_error(env.get("AWS_LAMBDA_RUNTIME_API"), message)
        return 1
    deadline = started + settings.timeout
    headers = {TOKEN_HEADER: settings.token or ""}

    def fetch(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        return http_call(("127.0.0.1", settings.port), method, target, headers, body, deadline)

    outcome = resolve_environment(env, fetch, missing_token=settings.token is None)
    from .log import log

    log.set_level(settings.log_level)
    if settings.token:
        log.never_print(settings.token)
    if outcome.failures and not settings.leave_unresolved:
        for line in outcome.failures:
            sys.stderr.write(f"secretcache: cannot resolve {line}\n")
        sys.stderr.flush()
        first = f"secretcache: cannot resolve {outcome.failures[0]}"
        more = len(outcome.failures) - 1
        report_init_error(
            settings.runtime_api, first + (f" (and {more} more variables)" if more else "")
        )
        return 1
    for line in outcome.failures:
        sys.stderr.write(f"secretcache: left unresolved ({ON_ERROR_VARIABLE}=leave): {line}\n")
    log.info(
        "env.resolved",
        variables=len(outcome.resolved),
        unresolved=len(outcome.failures),
        references=outcome.references,
        requests=outcome.requests,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    sys.stdout.flush()
    sys.stderr.flush()
    return _exec_runtime(argv, environb, outcome.resolved)
