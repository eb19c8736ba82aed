"""aiohttp app factory: routes, the token and Host checks, and error rendering in one middleware.

Handlers only parse the request, call `Reads`, and write the stored bytes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import metrics as metrics_module
from .cache import Lookup
from .errors import (
    BadRequest,
    Forbidden,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestLineTooLong,
    SecretcacheError,
    ServiceUnavailable,
    Unauthorized,
)
from .log import log, where
from .prefetch import kms_digest
from .query import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_QUERY_VALUE,
    TOKEN_HEADERS,
    Pairs,
    all_values,
    allowed_hosts,
    decrypt_request,
    first,
    flag,
    parse_query_string,
    required,
    ssm_selector,
    token_matches,
)
from .reads import Reads
from .status import Status

#: aiohttp's parser limits: a request line, and one header field. They differ so a parse error
#: says which was too long (414 or 431); the middleware bounds the whole head.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = MAX_HEADER_BYTES
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
_OPEN_PATHS = frozenset({"/health", "/ping"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerState:
    """What the handlers share; one per app."""

    def __init__(self, reads: Reads, status: Status) -> None:
        self.reads = reads
        self.status = status
        self.config = reads.config
        self.token = reads.config.token.encode("utf-8")
        self.allowed_hosts = allowed_hosts(reads.config.port)


STATE = web.AppKey("state", ServerState)


def json_response(
    body: bytes, status: int = 200, extra: dict[str, str] | None = None
) -> web.Response:
    headers = JSON_HEADERS if extra is None else {**JSON_HEADERS, **extra}
    return web.Response(body=body, status=status, headers=headers)


def error_response(error: SecretcacheError) -> web.Response:
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
        return error_response(exc)
    except web.HTTPException as exc:
        return error_response(http_error(exc.status))
    except Exception as exc:
        log.error(
            "request.internal_error", path=request.path, error=type(exc).__name__, where=where(exc)
        )
        return error_response(SecretcacheError("internal error", error_type="InternalError"))


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Host headers (DNS rebinding), oversized heads and bodies, missing tokens."""
    state = request.app[STATE]
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
    if request.path in _OPEN_PATHS:
        return await handler(request)
    supplied = None
    for name in TOKEN_HEADERS:
        supplied = request.headers.get(name)
        if supplied is not None:
            break
    if supplied is None:
        raise Unauthorized(f"missing {TOKEN_HEADERS[0]} header", error_type="MissingToken")
    if not token_matches(supplied.encode("utf-8", "surrogateescape"), state.token):
        raise Unauthorized(f"wrong {TOKEN_HEADERS[0]} header", error_type="InvalidToken")
    if state.status.closing:
        raise ServiceUnavailable("the extension is shutting down")
    return await handler(request)


# Query parsing ----------------------------------------------------------------------------


def parse_query(request: web.Request) -> Pairs:
    """The query as ordered pairs (see `query.parse_query_string`)."""
    return parse_query_string(request.rel_url.raw_query_string)


# Handlers ---------------------------------------------------------------------------------


def render(lookup: Lookup) -> web.Response:
    if lookup.outcome == "stale":
        extra = {"Age": str(int(lookup.age)), "X-Secretcache-Stale": "true"}
        return json_response(lookup.body, extra=extra)
    return web.Response(body=lookup.body, headers=JSON_HEADERS)


async def get_secret_value(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    secret_id = required(pairs, "secretId")
    return await _secret(request, pairs, secret_id)


async def agent_secret(request: web.Request) -> web.Response:
    """Secrets Manager Agent form: GET /v1/<secret id>."""
    secret_id = request.match_info["secret_id"]
    if len(secret_id) > MAX_QUERY_VALUE:
        raise BadRequest(f"the secret id is over {MAX_QUERY_VALUE} characters")
    return await _secret(request, parse_query(request), secret_id)


async def _secret(
    request: web.Request, pairs: list[tuple[str, str]], secret_id: str
) -> web.Response:
    reads = request.app[STATE].reads
    lookup = await reads.secret(
        secret_id,
        first(pairs, "versionId") or None,
        first(pairs, "versionStage") or None,
        refresh=flag(pairs, "refreshNow"),
    )
    return render(lookup)


async def get_parameter(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    name = required(pairs, "name")
    lookup = await request.app[STATE].reads.parameter(
        name, ssm_selector(pairs), flag(pairs, "withDecryption"), refresh=flag(pairs, "refreshNow")
    )
    return render(lookup)


async def get_parameters(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    body = await request.app[STATE].reads.parameters(
        all_values(pairs, "name"), flag(pairs, "withDecryption"), refresh=flag(pairs, "refreshNow")
    )
    return json_response(body)


async def get_parameters_by_path(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    path = required(pairs, "path")
    if not path.startswith("/"):
        raise BadRequest("query parameter 'path' must start with '/'")
    lookup = await request.app[STATE].reads.parameters_by_path(
        path,
        flag(pairs, "recursive"),
        flag(pairs, "withDecryption"),
        refresh=flag(pairs, "refreshNow"),
    )
    return render(lookup)


async def batch_get_secrets(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    body = await request.app[STATE].reads.secrets(
        all_values(pairs, "secretId"), refresh=flag(pairs, "refreshNow")
    )
    return json_response(body)


async def kms_decrypt(request: web.Request) -> web.Response:
    pairs = parse_query(request)
    blob, context, key_id, algorithm = decrypt_request(await request.read())
    digest = kms_digest(blob, context, key_id, algorithm)
    lookup = await request.app[STATE].reads.decrypt(
        blob, context, key_id, algorithm, digest, refresh=flag(pairs, "refreshNow")
    )
    return render(lookup)


async def health(request: web.Request) -> web.Response:
    """No token, no names, no configuration: just whether the extension is ready."""
    state = request.app[STATE]
    return json_response(state.status.health_body(state.reads.backends.loaded))


async def ping(request: web.Request) -> web.Response:
    """Secrets Manager Agent's liveness probe."""
    return web.Response(text="healthy", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    snapshot = metrics_module.snapshot(request.app[STATE].reads.cache)
    return json_response(json.dumps(snapshot).encode())


def make_app(reads: Reads, status: Status) -> web.Application:
    """The HTTP application; routes accept a trailing slash as AWS's extension does."""
    app = web.Application(
        middlewares=[error_middleware, access_middleware],
        client_max_size=MAX_BODY_BYTES,
        handler_args={
            "max_line_size": MAX_LINE_SIZE,
            "max_field_size": MAX_FIELD_SIZE,
            "max_headers": MAX_HEADER_COUNT,
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
    app.router.add_route("GET", "/v1/{secret_id:.+}", agent_secret)
    return app


class JsonRequestHandler(RequestHandler):
    """aiohttp's protocol handler with errors before routing (malformed HTTP) rendered as JSON."""

    on_lost: Callable[[JsonRequestHandler], None] | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost(self)

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
