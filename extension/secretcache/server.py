"""aiohttp app factory: routes, the token and Host checks, and error rendering in one middleware.

Handlers only parse the request, call `Reads`, and write the stored bytes. The Secrets Manager
Agent's routes (`/v1/<id>`, `/ping`, and `/secretsmanager/get` under SECRETCACHE_COMPAT=agent)
get the Agent's statuses and `{"__type", "message"}` errors; every other route keeps ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import metrics as metrics_module
from .errors import (
    BadRequest,
    Forbidden,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestLineTooLong,
    RequestTimeout,
    SecretcacheError,
    ServiceUnavailable,
    Unauthorized,
    agent_error,
)
from .json_body import json_body
from .log import log, where
from .query import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    OPEN_PATHS,
    TOKEN_HEADERS,
    Pairs,
    agent_route,
    allowed_hosts,
    forwarded_error,
    parse_query_string,
    token_matches,
)
from .read_requests import (
    DecryptRead,
    ParameterRead,
    ParametersRead,
    PathRead,
    Read,
    SecretRead,
    SecretsRead,
)
from .reads import Reads, Response
from .status import Status

#: aiohttp's parser limits: a request line, and one header field. They differ so a parse error
#: says which was too long (414 or 431); the middleware bounds the whole head.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = MAX_HEADER_BYTES
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerState:
    """What the handlers share; one per app."""

    def __init__(self, reads: Reads, status: Status) -> None:
        self.reads = reads
        self.status = status
        self.config = reads.config
        self.token = reads.config.token.encode("utf-8")
        self.allowed_hosts = allowed_hosts(reads.config.port)
        self.agent_secret_get = reads.config.compat == "agent"

    def agent_route(self, path: str) -> bool:
        """Whether `path` answers as the Secrets Manager Agent does (its statuses and errors)."""
        return agent_route(path, self.agent_secret_get)


STATE = web.AppKey("state", ServerState)


def json_response(
    body: bytes, status: int = 200, extra: dict[str, str] | None = None
) -> web.Response:
    headers = JSON_HEADERS if extra is None else {**JSON_HEADERS, **extra}
    return web.Response(body=body, status=status, headers=headers)


def error_response(error: SecretcacheError, *, agent: bool = False) -> web.Response:
    """Errors raised before the core answers (parsing, access checks, aiohttp's own)."""
    if agent:
        status, body = agent_error(error)
        return json_response(body, status)
    return json_response(error.to_body(), error.status)


_HTTP_ERRORS: dict[int, Callable[[], SecretcacheError]] = {
    404: lambda: NotFound(
        "unknown path: see the README for the endpoints", error_type="UnknownPath"
    ),
    405: lambda: MethodNotAllowed("method not allowed for this path"),
    413: lambda: PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes"),
}


def headers_too_large() -> SecretcacheError:
    return HeadersTooLarge(f"request line and headers over {MAX_HEADER_BYTES} bytes")


def parse_error(status: int, exc: BaseException | None) -> SecretcacheError:
    """Our JSON error for a request aiohttp could not parse: an oversized head is 431 or 414."""
    from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

    if isinstance(exc, LineTooLong) and len(exc.args) > 1:
        if exc.args[1] == MAX_FIELD_SIZE:
            return headers_too_large()
        return RequestLineTooLong(f"request line over {MAX_LINE_SIZE} bytes")
    if isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        return headers_too_large()
    error = http_error(status)
    if exc is not None:
        error.message = f"malformed HTTP request ({type(exc).__name__})"
    return error


def http_error(status: int) -> SecretcacheError:
    """Our JSON error for a status aiohttp produced (routing, body size, malformed HTTP)."""
    make = _HTTP_ERRORS.get(status)
    error = make() if make else BadRequest("malformed HTTP request", error_type="BadRequest")
    error.status = status if 400 <= status < 500 else 400
    return error


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as a JSON error; never a stack trace, never a value."""
    try:
        return await handler(request)
    except SecretcacheError as exc:
        if exc.status >= 500:
            log.warn(
                "request.failed", path=request.path, status=exc.status, errorType=exc.error_type
            )
        elif log.enabled("debug"):
            log.debug(
                "request.rejected", path=request.path, status=exc.status, errorType=exc.error_type
            )
        error: SecretcacheError = exc
    except web.HTTPException as exc:
        error = http_error(exc.status)
    except ConnectionError:
        # The client went away mid-request (e.g. mid-body): its doing, not ours; nobody reads this.
        log.debug("request.aborted", path=request.path)
        error = BadRequest("the client closed the connection", error_type="Aborted")
    except Exception as exc:
        log.error(
            "request.internal_error", path=request.path, error=type(exc).__name__, where=where(exc)
        )
        error = SecretcacheError("internal error", error_type="InternalError")
    return error_response(error, agent=request.app[STATE].agent_route(request.path))


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse proxied requests, foreign Host headers (DNS rebinding), oversized heads and bodies,
    missing tokens (401 on our routes, 403 on the Agent's, as the Agent answers)."""
    state = request.app[STATE]
    if "X-Forwarded-For" in request.headers:
        raise forwarded_error()
    if not request.raw_path.startswith("/"):
        # Absolute form (`GET http://other/...`) names a host the Host check would not see.
        raise Forbidden("absolute-form request targets are refused", error_type="ForbiddenHost")
    host = request.headers.get("Host")
    if host is not None and host.lower() not in state.allowed_hosts:
        raise Forbidden(
            "the Host header must be localhost, 127.0.0.1 or [::1]", error_type="ForbiddenHost"
        )
    head = len(request.method) + len(request.raw_path) + 11  # "M PATH HTTP/1.1\r\n"
    if head + sum(len(k) + len(v) + 4 for k, v in request.raw_headers) > MAX_HEADER_BYTES:
        raise headers_too_large()
    # A body is refused by its declared size on every route, not only where it is read.
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise http_error(413)
    if request.path in OPEN_PATHS:
        return await handler(request)
    supplied = None
    for name in TOKEN_HEADERS:
        supplied = request.headers.get(name)
        if supplied is not None:
            break
    if supplied is None:
        if state.agent_route(request.path):
            raise Forbidden(
                f"Bad Token: missing {TOKEN_HEADERS[0]} (or {TOKEN_HEADERS[1]}) header",
                error_type="BadToken",
            )
        raise Unauthorized(f"missing {TOKEN_HEADERS[0]} header", error_type="MissingToken")
    if not token_matches(supplied.encode("utf-8", "surrogateescape"), state.token):
        if state.agent_route(request.path):
            raise Forbidden(f"Bad Token: wrong {TOKEN_HEADERS[0]} header", error_type="BadToken")
        raise Unauthorized(f"wrong {TOKEN_HEADERS[0]} header", error_type="InvalidToken")
    if state.status.closing:
        raise ServiceUnavailable("the extension is shutting down")
    return await handler(request)


# Handlers: parse the request into a typed read, let the core answer, move the bytes ----------


def parse_query(request: web.Request) -> Pairs:
    """The query as ordered pairs (see `query.parse_query_string`)."""
    return parse_query_string(request.rel_url.raw_query_string)


def send(response: Response) -> web.Response:
    """The core's (status, headers, body) as an aiohttp response."""
    headers = JSON_HEADERS if not response.headers else {**JSON_HEADERS, **dict(response.headers)}
    return web.Response(body=response.body, status=response.status, headers=headers)


async def answer(request: web.Request, read: Read) -> web.Response:
    return send(await request.app[STATE].reads.respond(read))


async def get_secret_value(request: web.Request) -> web.Response:
    if request.app[STATE].agent_secret_get:
        return await answer(request, SecretRead.from_agent_query(parse_query(request)))
    return await answer(request, SecretRead.from_query(parse_query(request)))


async def agent_secret(request: web.Request) -> web.Response:
    """Secrets Manager Agent form: GET /v1/<secret id>; slashes after /v1/ are part of the id."""
    secret_id = request.path[len("/v1/") :] if request.path.startswith("/v1/") else ""
    return await answer(request, SecretRead.from_agent_path(secret_id, parse_query(request)))


async def get_parameter(request: web.Request) -> web.Response:
    return await answer(request, ParameterRead.from_query(parse_query(request)))


async def get_parameters(request: web.Request) -> web.Response:
    return await answer(request, ParametersRead.from_query(parse_query(request)))


async def get_parameters_by_path(request: web.Request) -> web.Response:
    return await answer(request, PathRead.from_query(parse_query(request)))


async def batch_get_secrets(request: web.Request) -> web.Response:
    return await answer(request, SecretsRead.from_query(parse_query(request)))


async def kms_decrypt(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    timeout = request.app[STATE].config.request_timeout
    try:
        raw = await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    return await answer(request, DecryptRead.from_body(raw, pairs))


async def health(request: web.Request) -> web.Response:
    """No token, no names, no configuration: just whether the extension is ready."""
    state = request.app[STATE]
    ready = state.status.ready and state.reads.backends.loaded
    return json_response(json_body(state.status.health(ready)))


async def ping(request: web.Request) -> web.Response:
    """Secrets Manager Agent's liveness probe."""
    return web.Response(text="healthy", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    snapshot = metrics_module.snapshot(request.app[STATE].reads.cache)
    return json_response(json_body(snapshot))


def make_app(reads: Reads, status: Status) -> web.Application:
    """The HTTP application; routes accept a trailing slash as AWS's extension does."""
    app = web.Application(
        middlewares=[error_middleware, access_middleware],
        client_max_size=MAX_BODY_BYTES,
        handler_args={
            "max_line_size": MAX_LINE_SIZE,
            "max_field_size": MAX_FIELD_SIZE,
            "max_headers": MAX_HEADERS,
            # After an early answer (413, 408), read what is left of a body for at most this long
            # so the client gets the answer rather than a reset, then close.
            "lingering_time": 1.0,
        },
    )
    app[STATE] = ServerState(reads, status)
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/secretsmanager/get", get_secret_value),
        ("GET", "/secretsmanager/batchget", batch_get_secrets),
        ("GET", "/systemsmanager/parameters/get", get_parameter),
        ("GET", "/systemsmanager/parameters/getbatch", get_parameters),
        ("GET", "/systemsmanager/parameters/getbypath", get_parameters_by_path),
        ("POST", "/kms/decrypt", kms_decrypt),
        ("GET", "/health", health),
        ("GET", "/ping", ping),
        ("GET", "/metrics", metrics),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path + "/", handler)
    app.router.add_route("GET", "/v1", agent_secret)
    app.router.add_route("GET", "/v1/{secret_id:.*}", agent_secret)
    return app


class JsonRequestHandler(RequestHandler):
    """aiohttp's protocol handler with errors before routing (malformed HTTP) rendered as JSON,
    half-closed connections answered then closed, and the listener's idle/evict interface.

    (aiohttp closes a connection as soon as the client's FIN arrives, losing the answer to a
    request sent just before it.)
    """

    on_lost: Callable[[JsonRequestHandler], None] | None = None
    peer_eof = False
    idle_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.idle_at = asyncio.get_running_loop().time()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost(self)

    # aiohttp declares None (close at once); True keeps the write side open for owed answers.
    def eof_received(self) -> bool:  # type: ignore[override]
        self.peer_eof = True
        if self.idle_since() is not None:
            self.force_close()
        return True  # keep writing: the answers to requests already received are still owed

    async def finish_response(
        self, request: Any, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self.idle_at = asyncio.get_running_loop().time()
        if self.peer_eof and not self._messages:
            self.close()  # the client sends no more: close after this answer
        return result

    def idle_since(self) -> float | None:
        """When the last answer went out; None while a request is queued or being served."""
        if self._request_in_progress or self._messages:
            return None
        return self.idle_at

    def evict(self) -> None:
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        if status >= 500:
            log.error("request.internal_error", error=type(exc).__name__ if exc else "unknown")
            error: SecretcacheError = SecretcacheError("internal error", error_type="InternalError")
        else:
            error = parse_error(status, exc)
        response = error_response(error)
        response.force_close()
        return response


def handoff_factory(server: Any) -> Callable[[Callable[[Any], None]], asyncio.Protocol]:
    """Builds our JSON-erroring handler for a connection the fast path hands to aiohttp.

    `server` is the runner's `web.Server`; Server.__call__ would build a plain RequestHandler,
    so ours is built with the same arguments (aiohttp is pinned, and the tests cover this).
    `on_lost` lets the listener stop counting the connection when it closes.
    """
    loop = asyncio.get_running_loop()
    kwargs = server._kwargs

    def make(on_lost: Callable[[Any], None]) -> asyncio.Protocol:
        handler = JsonRequestHandler(server, loop=loop, **kwargs)
        handler.on_lost = on_lost
        return handler

    return make
