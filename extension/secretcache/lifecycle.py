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

from .extensions_api import Event, ExtensionsApiClient
from .log import log, where
from .vendored import add_vendored_paths

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    import socket
    from collections.abc import Coroutine, Mapping
    from typing import Any

    from .config import Config

PORT_VARIABLE = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
LISTEN_BACKLOG = 1024
#: Time kept in hand before Lambda's SHUTDOWN deadline, for flushing logs and exiting.
SHUTDOWN_MARGIN_SECONDS = 0.3
MAX_SHUTDOWN_SECONDS = 1.0
#: How long tasks still running after the main coroutine returned get to finish cancelling.
LEFTOVER_TASK_SECONDS = 0.1


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

    try:
        extension = Extension(config, as_socket(sock), api, name, started, registered)
        return run_event_loop(extension.serve())
    except Exception as exc:
        message = f"the extension stopped unexpectedly ({type(exc).__name__})"
        log.error("extension.crashed", error=type(exc).__name__, where=where(exc))
        if api is not None:
            try:
                api.exit_error("Extension.Crashed", message)
            except Exception:
                log.error("exit_error.report_failed")
        return 1


class Extension:
    """The running extension: named phases, state in fields (the shape of uvicorn's `Server`).

    `startup()` builds the cache, backends, read core and listener, serves on the pre-bound
    socket and warms up; `run()` follows Lambda's events (or signals, standalone) until SHUTDOWN
    or a failure; `shutdown()` closes everything within Lambda's deadline.
    """

    def __init__(
        self,
        config: Config,
        sock: socket.socket,
        api: ExtensionsApiClient | None,
        name: str,
        started: float,
        registered: float,
    ) -> None:
        import asyncio

        self.config = config
        self.sock = sock
        self.api = api
        self.name = name
        self.started = started
        self.registered = registered
        self.should_exit = asyncio.Event()
        self.failure: str | None = None
        self.shutdown_deadline: float | None = None
        self.last_emf = time.monotonic()
        self.runners: list[Any] = []
        self.warm_task: Any = None
        self.restore_task: Any = None
        self.aiohttp_task: Any = None
        #: SnapStart: the next event is the first after INIT, so a restore has happened.
        self.awaiting_first_event = config.snapstart
        self._restoring = False

    async def serve(self) -> int:
        """Run every phase; returns the process exit status."""
        failed = await self.startup()
        if failed is not None:
            return failed
        await self.run()
        return await self.shutdown()

    def fail(self, message: str) -> None:
        """Stop with a failure (reported to Lambda as exit/error)."""
        if self.failure is None:
            self.failure = message
        self.should_exit.set()

    # Start-up -----------------------------------------------------------------------------------

    async def startup(self) -> int | None:
        """Serve, then warm up; returns an exit status if start-up failed (init/error sent)."""
        import asyncio

        from .cache import TtlCache
        from .fastpath import FastPath
        from .query import allowed_hosts
        from .reads import Reads, cache_policies
        from .status import Status
        from .upstream import make_backends

        config = self.config
        loop = asyncio.get_running_loop()
        _quiet_library_loggers(loop)
        if config.random_seed is not None:
            import random

            random.seed(config.random_seed)
        self.cache = TtlCache(
            max_entries=config.cache_size if config.cache_enabled else 0,
            max_bytes=config.cache_max_bytes,
            policies=cache_policies(config),
            on_stale=_log_stale,
        )
        self.backends = make_backends(config)
        self.backends.call_observer = self.cache.metrics.record_upstream
        self.backends.start_loading()
        self.reads = Reads(config, self.cache, self.backends)
        self.status = Status()
        self.restore_state = self.cache.metrics.snapstart
        self.restore_state.snapstart = config.snapstart
        self.status.snapstart = self.restore_state
        self.cache.on_clock_jump = self._clock_jumped
        self.cache.watch_restore = config.snapstart
        self.listener = FastPath(
            self.reads,
            self.status,
            token=config.token,
            allowed_hosts=allowed_hosts(config.port),
            max_connections=config.max_client_connections,
            request_timeout=config.request_timeout,
        )
        self.server = await loop.create_server(
            self.listener.protocol_factory, sock=self.sock, backlog=LISTEN_BACKLOG
        )
        listening = time.monotonic()
        log.info(
            "extension.started",
            name=self.name,
            config=config.describe(),
            msToRegister=round((self.registered - self.started) * 1000, 1),
            msToListen=round((listening - self.started) * 1000, 1),
        )
        self.listener.load_handoff = self._start_aiohttp

        # SnapStart: INIT ends in a snapshot, restored later (maybe much later) into many
        # sandboxes at once. Unless told to keep secrets in it, store nothing until the first
        # event, which follows the restore, and warm the prefetch list then (`on_event`).
        self.cache.holding = config.snapstart and not config.snapstart_prefetch
        self.restore_state.holding = self.cache.holding
        if config.prefetch and not self.cache.holding:
            # Prefetched values must be in the cache before INIT ends: warm up before event/next.
            # Reads that arrive meanwhile (the handler's INIT) wait for the prefetch, then hit.
            self.reads.begin_prefetch()
            try:
                failures = await self._warm_up()
            except Exception as exc:
                return _fail(
                    self.api, "Extension.SdkLoadFailed", f"the AWS SDK failed to load ({exc})"
                )
            if failures and config.prefetch_required:
                item, error = failures[0]
                message = (
                    f"SECRETCACHE_PREFETCH item {item.label} failed ({error}) "
                    "and SECRETCACHE_PREFETCH_REQUIRED=true"
                )
                return _fail(self.api, "Extension.PrefetchFailed", message)
            self.status.ready = True
        else:
            # Nothing to warm now: report ready and let the SDK load off the critical path.
            if config.prefetch:
                log.info("prefetch.deferred", reason="snapstart", items=len(config.prefetch))
            self.warm_task = loop.create_task(self._warm_up_in_background())
        return None

    def _start_aiohttp(self) -> None:
        """Load aiohttp (in a thread) when the first request the fast path does not serve comes."""
        import asyncio

        self.aiohttp_task = asyncio.get_running_loop().create_task(
            _start_aiohttp(self.reads, self.status, self.listener, self.runners)
        )
        self.aiohttp_task.add_done_callback(self._aiohttp_started)

    def _aiohttp_started(self, task: Any) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fail(f"aiohttp failed to load ({type(task.exception()).__name__})")

    async def _warm_up(self) -> list[Any]:
        """Wait for the SDK, create the clients, then run the prefetch list (unless deferred)."""
        from .prefetch import run_prefetch

        await self.backends.wait_loaded()
        await self.backends.warm()
        if self.config.upstream == "sdk":  # the lean client allocates nothing worth trimming
            release_freed_memory()
        log.info("sdk.loaded", msSinceStart=round((time.monotonic() - self.started) * 1000, 1))
        if self.cache.holding:
            return []  # SnapStart: the prefetch runs after the restore
        return await run_prefetch(self.reads, self.config.prefetch)

    async def _prefetch_after_restore(self, delay: float) -> None:
        """After a restore: warm the prefetch list after `delay` (random, up to the jitter), so
        sandboxes restored together do not all call AWS in the same instant."""
        import asyncio

        from .prefetch import run_prefetch

        await asyncio.sleep(delay)
        try:
            await self.backends.wait_loaded()
        except Exception as exc:
            log.warn("prefetch.failed", reason="sdk", error=type(exc).__name__)
            return
        await run_prefetch(self.reads, self.config.prefetch)

    async def _warm_up_in_background(self) -> None:
        try:
            await self._warm_up()
        except Exception as exc:
            self.fail(f"the AWS SDK failed to load ({exc})")
            return
        self.status.ready = True

    # Running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow Lambda's events (standalone: SIGTERM/SIGINT) until it is time to stop."""
        import asyncio
        import signal
        import threading

        loop = asyncio.get_running_loop()
        self.last_emf = time.monotonic()  # the metrics interval counts from ready
        if self.api is not None:
            threading.Thread(
                target=self._follow_events,
                args=(self.api, loop),
                name="secretcache-events",
                daemon=True,
            ).start()
            log.info(
                "extension.ready", msSinceStart=round((time.monotonic() - self.started) * 1000, 1)
            )
        else:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.should_exit.set)
        await self.should_exit.wait()

    def _follow_events(self, api: ExtensionsApiClient, loop: Any) -> None:
        """In a thread: event/next blocks (and Lambda freezes us there)."""
        while True:
            try:
                event = api.next_event()
            except Exception as exc:
                loop.call_soon_threadsafe(self.fail, f"event/next failed ({type(exc).__name__})")
                return
            loop.call_soon_threadsafe(self.on_event, event)
            if event.is_shutdown:
                return

    def on_event(self, event: Event) -> None:
        if self.awaiting_first_event:
            # SnapStart: INIT's event/next returns only after a restore. A request may have seen
            # the restore first (its clock jump); reading the clock lets a jump be seen now.
            self.awaiting_first_event = False
            self.cache.clock()
            if self.restore_state.restores == 0:
                from .restore import FIRST_EVENT

                self.restore(FIRST_EVENT, None, closing=event.is_shutdown)
        if event.is_shutdown:
            self.shutdown_deadline = event.deadline
            log.info("extension.shutdown", reason=event.shutdown_reason)
            self.should_exit.set()
        elif time.monotonic() - self.last_emf >= self.config.metrics_interval:
            self.emit_metrics()

    def _clock_jumped(self, seconds: float) -> None:
        """The cache's clock saw a restore-sized wall-clock jump (on the request path, maybe
        before our event thread has seen the first event); the cache has expired its entries."""
        from .restore import CLOCK_JUMP

        self.restore(CLOCK_JUMP, seconds, expired=True)

    def restore(
        self, reason: str, clock_jump: float | None, *, expired: bool = False, closing: bool = False
    ) -> None:
        """After a restore, nothing from before the snapshot is trusted: entries are expired
        (kept for stale-on-error), pooled upstream connections dropped, credentials re-read,
        random state reseeded, and the prefetch list warmed after a random delay."""
        if self._restoring:
            return  # expiring reads the clock, which may report the same restore
        self._restoring = True
        try:
            import asyncio
            import random

            from .restore import reseed_random

            self.cache.holding = False
            self.cache.watch_restore = False  # a process is restored at most once
            self.restore_state.holding = False
            if not expired:
                self.cache.expire_all()
            self.backends.after_restore()
            reseed_random()
            self.restore_state.record(reason, clock_jump)
            delay: float | None = None
            if self.config.prefetch and not closing and not self.status.closing:
                delay = random.uniform(0.0, self.config.snapstart_jitter)
                if self.restore_task is not None:
                    self.restore_task.cancel()
                self.restore_task = asyncio.get_running_loop().create_task(
                    self._prefetch_after_restore(delay)
                )
            self.restore_state.prefetch_delay = delay
            log.info(
                "snapstart.restored",
                reason=reason,
                clockJumpSeconds=None if clock_jump is None else round(clock_jump, 3),
                expiredEntries=len(self.cache),
                prefetch=len(self.config.prefetch),
                prefetchDelayMs=None if delay is None else round(delay * 1000, 1),
            )
        finally:
            self._restoring = False

    def emit_metrics(self) -> None:
        if self.config.metrics == "emf":
            from .metrics import emf_line

            line = emf_line(self.cache, self.config.metrics_namespace, self.config.function_name)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self.last_emf = time.monotonic()

    # Shutdown -----------------------------------------------------------------------------------

    async def shutdown(self) -> int:
        """Stop serving within Lambda's deadline; returns the exit status."""
        import asyncio

        self.status.closing = True
        for task in (self.warm_task, self.restore_task):
            if task is not None:
                task.cancel()
        budget = MAX_SHUTDOWN_SECONDS
        if self.shutdown_deadline is not None:
            remaining = self.shutdown_deadline - time.time() - SHUTDOWN_MARGIN_SECONDS
            budget = min(budget, max(0.05, remaining))
        try:
            await asyncio.wait_for(self._close(), budget)
        except (asyncio.TimeoutError, Exception) as exc:
            log.warn("extension.shutdown_incomplete", error=type(exc).__name__)
        self.emit_metrics()
        if self.failure is not None:
            log.error("extension.failed", message=self.failure)
            if self.api is not None:
                try:
                    self.api.exit_error("Extension.Failed", self.failure)
                except Exception:
                    log.error("exit_error.report_failed")
            return 1
        log.info("extension.stopped")
        return 0

    async def _close(self) -> None:
        """Stop accepting, close connections, cancel background loads, close the SDK clients."""
        self.server.close()
        self.listener.close_connections()
        if self.aiohttp_task is not None:
            self.aiohttp_task.cancel()
        for runner in self.runners:
            await runner.cleanup()
        await self.cache.close()
        await self.backends.close()


def _log_stale(key: Any, error: Any, age: float) -> None:
    log.warn(
        "cache.stale_served",
        service=str(key.service),
        errorType=error.error_type,
        ageSeconds=round(age, 1),
    )


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on a new event loop and close it without joining executor threads.

    `asyncio.run` waits for the default executor's threads at the end, so one DNS lookup stuck in
    getaddrinfo would hold the process past Lambda's 2 s shutdown deadline (issue 12, defect 6).
    Leftover tasks are cancelled and given a moment; the executor is shut down without waiting,
    and `exit_now` then ends the process without the interpreter's own join of those threads.
    """
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftover = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover, timeout=LEFTOVER_TASK_SECONDS))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # shuts the default executor down with wait=False


def exit_now(status: int) -> None:
    """Flush our output and end the process at once.

    A normal interpreter exit joins every executor thread (concurrent.futures registers that
    at import), which is exactly the wait `run_event_loop` avoids.
    """
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


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
