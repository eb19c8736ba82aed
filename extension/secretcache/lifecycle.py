"""Process lifecycle: bind, register, serve, follow Lambda's events, shut down in time.

Start-up order keeps the cold start short (design.md section 2): standard library only until
registered; the listening socket is bound before registering so a handler's early request waits
in the backlog; aiohttp is imported when a request first needs it, and the AWS SDK (with
SECRETCACHE_UPSTREAM=sdk) loads in the background.
Without AWS_LAMBDA_RUNTIME_API it runs standalone until SIGTERM or SIGINT.
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from .extensions_api import ExtensionsApiClient
from .log import log, where
from .vendored import add_vendored_paths

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    import socket
    from collections.abc import Mapping
    from typing import Any

    from .config import Config

PORT_VARIABLE = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
LISTEN_BACKLOG = 1024
#: Time kept in hand before Lambda's SHUTDOWN deadline, for flushing logs and exiting.
SHUTDOWN_MARGIN_SECONDS = 0.3
MAX_SHUTDOWN_SECONDS = 1.0


def _early_port(env: Mapping[str, str]) -> int | None:
    """The port, parsed without the config module so binding happens before registering."""
    raw = (env.get(PORT_VARIABLE) or "").strip() or "2773"
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535:
        return int(raw)
    return None


def bind_loopback(port: int) -> _socket.socket:
    """Listen on 127.0.0.1 only (never 0.0.0.0) before anything else can ask.

    A C-level `_socket` (importing `socket` costs ~5-8 ms before registering); `as_socket`
    wraps it for asyncio once registered.
    """
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def as_socket(raw: _socket.socket) -> socket.socket:
    """The same listening socket as a `socket.socket`, which asyncio requires."""
    import socket

    return socket.socket(fileno=raw.detach())


def _parse_name(argv: list[str]) -> str:
    if "--name" in argv:
        index = argv.index("--name")
        if index + 1 < len(argv) and argv[index + 1]:
            return argv[index + 1]
    return os.path.basename(sys.argv[0]) if sys.argv[0] not in ("", "-m", "-c") else "secretcache"


def _fail(api: ExtensionsApiClient | None, error_type: str, message: str) -> int:
    """Report a start-up failure the way Lambda shows it, then exit non-zero."""
    log.error("init.failed", errorType=error_type, message=message)
    sys.stderr.write(f"secretcache: {message}\n")
    if api is not None:
        try:
            api.init_error(error_type, message)
        except Exception as exc:
            sys.stderr.write(
                f"secretcache: could not report the init error ({type(exc).__name__})\n"
            )
    return 1


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run the extension; returns the process exit status."""
    started = time.monotonic()
    env = os.environ if env is None else env
    name = _parse_name(argv)
    runtime_api = (env.get("AWS_LAMBDA_RUNTIME_API") or "").strip() or None
    api = ExtensionsApiClient(runtime_api) if runtime_api else None

    port = _early_port(env)
    sock: _socket.socket | None = None
    bind_error: OSError | None = None
    if port is not None:
        try:
            sock = bind_loopback(port)
        except OSError as exc:
            bind_error = exc
    if api is not None:
        try:
            api.register(name)
        except Exception as exc:
            sys.stderr.write(f"secretcache: registration failed ({exc})\n")
            return 1
    registered = time.monotonic()

    # Only what registering needs runs before it; the vendored paths matter from here on.
    unsupported = add_vendored_paths()
    if unsupported is not None:
        return _fail(api, "Extension.UnsupportedRuntime", unsupported)
    from .config import ConfigError, load_config

    try:
        config = load_config(env)
    except ConfigError as exc:
        return _fail(api, "Extension.ConfigInvalid", str(exc))
    log.set_level(config.log_level)
    log.never_print(config.token)
    if sock is None:
        reason = bind_error.strerror if bind_error is not None else "invalid port"
        return _fail(
            api, "Extension.PortUnavailable", f"cannot listen on 127.0.0.1:{port}: {reason}"
        )

    import asyncio

    try:
        return asyncio.run(_serve(config, as_socket(sock), api, name, started, registered))
    except Exception as exc:
        message = f"the extension stopped unexpectedly ({type(exc).__name__})"
        log.error("extension.crashed", error=type(exc).__name__, where=where(exc))
        if api is not None:
            try:
                api.exit_error("Extension.Crashed", message)
            except Exception:
                log.error("exit_error.report_failed")
        return 1


async def _serve(
    config: Config,
    sock: socket.socket,
    api: ExtensionsApiClient | None,
    name: str,
    started: float,
    registered: float,
) -> int:
    import asyncio
    import signal
    import threading

    from .cache import TtlCache
    from .fastpath import FastPath
    from .metrics import emf_line
    from .prefetch import run_prefetch
    from .query import allowed_hosts
    from .reads import Reads
    from .status import Status
    from .upstream import make_backends

    loop = asyncio.get_running_loop()
    _quiet_library_loggers(loop)

    def on_stale(key: Any, error: Any, age: float) -> None:
        log.warn(
            "cache.stale_served",
            service=key.service,
            errorType=error.error_type,
            ageSeconds=round(age, 1),
        )

    cache = TtlCache(
        max_entries=config.cache_size if config.cache_enabled else 0,
        max_bytes=config.cache_max_bytes,
        max_stale=config.max_stale_seconds,
        on_stale=on_stale,
    )
    backends = make_backends(config)
    backends.call_observer = cache.record_upstream
    backends.start_loading()
    reads = Reads(config, cache, backends)
    status = Status()
    listener = FastPath(
        reads,
        status,
        token=config.token,
        allowed_hosts=allowed_hosts(config.port),
        max_connections=config.max_client_connections,
    )
    server = await loop.create_server(listener.protocol_factory, sock=sock, backlog=LISTEN_BACKLOG)
    listening = time.monotonic()
    log.info(
        "extension.started",
        name=name,
        config=config.describe(),
        msToRegister=round((registered - started) * 1000, 1),
        msToListen=round((listening - started) * 1000, 1),
    )
    runners: list[Any] = []
    aiohttp_tasks: list[asyncio.Task[None]] = []

    stop = asyncio.Event()
    failure: list[str] = []

    def aiohttp_started(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failure.append(f"aiohttp failed to load ({type(task.exception()).__name__})")
            stop.set()

    def start_aiohttp() -> None:
        """Load aiohttp (in a thread) when the first request the fast path does not serve comes."""
        task = loop.create_task(_start_aiohttp(reads, status, listener, runners))
        task.add_done_callback(aiohttp_started)
        aiohttp_tasks.append(task)

    listener.load_handoff = start_aiohttp

    async def warm_up() -> list[Any]:
        """Wait for the SDK, create the clients, then run the prefetch list."""
        await backends.wait_loaded()
        await backends.warm()
        if config.upstream == "sdk":  # the lean client allocates nothing worth trimming
            release_freed_memory()
        log.info("sdk.loaded", msSinceStart=round((time.monotonic() - started) * 1000, 1))
        return await run_prefetch(reads, config.prefetch)

    if config.prefetch:
        # Prefetched values must be in the cache before INIT ends: warm up before event/next.
        # Reads that arrive meanwhile (the handler's INIT) wait for the prefetch, then hit.
        reads.begin_prefetch()
        try:
            failures = await warm_up()
        except Exception as exc:
            return _fail(api, "Extension.SdkLoadFailed", f"the AWS SDK failed to load ({exc})")
        if failures and config.prefetch_required:
            item, error = failures[0]
            message = (
                f"SECRETCACHE_PREFETCH item {item.label} failed ({error}) "
                "and SECRETCACHE_PREFETCH_REQUIRED=true"
            )
            return _fail(api, "Extension.PrefetchFailed", message)
        status.ready = True
    else:
        # Nothing to warm: report ready now and let the SDK load off the critical path.
        async def warm_up_in_background() -> None:
            try:
                await warm_up()
            except Exception as exc:
                failure.append(f"the AWS SDK failed to load ({exc})")
                stop.set()
                return
            status.ready = True

        warm_task = loop.create_task(warm_up_in_background())

    shutdown_deadline: list[float] = []
    last_emf = [time.monotonic()]

    def emit_metrics() -> None:
        if config.metrics == "emf":
            sys.stdout.write(emf_line(cache, config.metrics_namespace, config.function_name) + "\n")
            sys.stdout.flush()
            last_emf[0] = time.monotonic()

    if api is not None:

        def on_event(event: dict[str, Any]) -> None:
            kind = str(event.get("eventType", "")).upper()
            if kind == "SHUTDOWN":
                deadline_ms = event.get("deadlineMs")
                if isinstance(deadline_ms, (int, float)):
                    shutdown_deadline.append(deadline_ms / 1000.0)
                log.info("extension.shutdown", reason=str(event.get("shutdownReason", "")).lower())
                stop.set()
            elif time.monotonic() - last_emf[0] >= config.metrics_interval:
                emit_metrics()

        def on_failure(message: str) -> None:
            failure.append(message)
            stop.set()

        def follow_events() -> None:
            while True:
                try:
                    event = api.next_event()
                except Exception as exc:
                    loop.call_soon_threadsafe(
                        on_failure, f"event/next failed ({type(exc).__name__})"
                    )
                    return
                loop.call_soon_threadsafe(on_event, event)
                if str(event.get("eventType", "")).upper() == "SHUTDOWN":
                    return

        threading.Thread(target=follow_events, name="secretcache-events", daemon=True).start()
        log.info("extension.ready", msSinceStart=round((time.monotonic() - started) * 1000, 1))
    else:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    await stop.wait()
    status.closing = True
    if not config.prefetch:
        warm_task.cancel()
    budget = MAX_SHUTDOWN_SECONDS
    if shutdown_deadline:
        budget = min(
            budget, max(0.05, shutdown_deadline[0] - time.time() - SHUTDOWN_MARGIN_SECONDS)
        )
    try:
        await asyncio.wait_for(
            _close(server, listener, aiohttp_tasks, runners, cache, backends), budget
        )
    except (asyncio.TimeoutError, Exception) as exc:
        log.warn("extension.shutdown_incomplete", error=type(exc).__name__)
    emit_metrics()
    if failure:
        log.error("extension.failed", message=failure[0])
        if api is not None:
            try:
                api.exit_error("Extension.Failed", failure[0])
            except Exception:
                log.error("exit_error.report_failed")
        return 1
    log.info("extension.stopped")
    return 0


def release_freed_memory() -> None:
    """Hand the heap that loading the SDK freed back to the OS (~1.7-2.5 MiB of idle RSS).

    Parsing botocore's models allocates and frees a lot once; glibc keeps freed memory mapped,
    and it would count against the function's memory for the sandbox's life. Best effort: a libc
    without malloc_trim (not glibc) is left alone.
    """
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        return


def _quiet_library_loggers(loop: Any) -> None:
    """aiohttp and asyncio log tracebacks (with request bytes) to stderr; send them to ours."""
    import logging

    for name in ("aiohttp", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = False

    def on_loop_error(_: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is None:
            log.error("loop.error", error="unknown")
        else:
            log.error("loop.error", error=type(exc).__name__, where=where(exc))

    loop.set_exception_handler(on_loop_error)


async def _start_aiohttp(reads: Any, status: Any, listener: Any, runners: list[Any]) -> None:
    """Import aiohttp off the event loop, then let the listener hand connections to it."""
    import asyncio
    import threading

    loaded = asyncio.get_running_loop().create_future()

    def import_web() -> None:
        try:
            import aiohttp.web  # noqa: F401  (the import is the work)
        except Exception as exc:
            loaded.get_loop().call_soon_threadsafe(loaded.set_exception, exc)
        else:
            loaded.get_loop().call_soon_threadsafe(loaded.set_result, None)

    threading.Thread(target=import_web, name="secretcache-aiohttp", daemon=True).start()
    await loaded
    from aiohttp import web

    from .server import handoff_factory, make_app

    runner = web.AppRunner(
        make_app(reads, status), access_log=None, handle_signals=False, shutdown_timeout=0.25
    )
    await runner.setup()
    runners.append(runner)
    listener.enable_handoff(handoff_factory(runner.server))


async def _close(
    server: Any,
    listener: Any,
    aiohttp_tasks: list[Any],
    runners: list[Any],
    cache: Any,
    backends: Any,
) -> None:
    """Stop accepting, close connections, cancel background loads, close the SDK clients."""
    server.close()
    listener.close_connections()
    for task in aiohttp_tasks:
        task.cancel()
    for runner in runners:
        await runner.cleanup()
    await cache.close()
    await backends.close()
