"""aiohttp app factory: routes, the token and Host checks, and error rendering in one middleware.

Handlers only parse the query, build a cache key and a loader, and write the stored bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from . import responses
from .backends import AwsBackends
from .cache import CacheKey, Loader, TtlCache
from .config import Config
from .errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SecretcacheError,
    ServiceUnavailable,
    Unauthorized,
)
from .log import log

TOKEN_HEADERS = ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
MAX_QUERY_VALUE = 2048
MAX_BODY_BYTES = 64 * 1024
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_OPEN_PATHS = frozenset({"/health", "/ping"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerState:
    """What the handlers share; one per app."""

    def __init__(self, config: Config, cache: TtlCache, backends: AwsBackends) -> None:
        self.config = config
        self.cache = cache
        self.backends = backends
        self.token = config.token.encode("utf-8")
        self.closing = False
        self.allowed_hosts = frozenset(
            host for name in _ALLOWED_HOSTS for host in (name, f"{name}:{config.port}")
        )


STATE = web.AppKey("state", ServerState)


def _json_response(
    body: bytes, status: int = 200, extra: dict[str, str] | None = None
) -> web.Response:
    headers = JSON_HEADERS if extra is None else {**JSON_HEADERS, **extra}
    return web.Response(body=body, status=status, headers=headers)


def _error_response(error: SecretcacheError) -> web.Response:
    return _json_response(error.to_body(), error.status)


_HTTP_ERRORS: dict[int, Callable[[], SecretcacheError]] = {
    404: lambda: NotFound(
        "unknown path: see the README for the endpoints", error_type="UnknownPath"
    ),
    405: lambda: MethodNotAllowed("method not allowed for this path"),
    413: lambda: PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes"),
}


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
        else:
            log.debug(
                "request.rejected", path=request.path, status=exc.status, errorType=exc.error_type
            )
        return _error_response(exc)
    except web.HTTPException as exc:
        make = _HTTP_ERRORS.get(exc.status)
        error = make() if make else BadRequest(exc.reason or "bad request")
        error.status = exc.status
        return _error_response(error)
    except Exception as exc:
        log.error("request.internal_error", path=request.path, error=type(exc).__name__)
        return _error_response(SecretcacheError("internal error", error_type="InternalError"))


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Host headers (DNS rebinding) and requests without the token."""
    state = request.app[STATE]
    host = request.headers.get("Host")
    if host is not None and host.lower() not in state.allowed_hosts:
        raise Forbidden(
            "the Host header must be localhost, 127.0.0.1 or [::1]", error_type="ForbiddenHost"
        )
    if request.path in _OPEN_PATHS:
        return await handler(request)
    supplied = None
    for name in TOKEN_HEADERS:
        supplied = request.headers.get(name)
        if supplied is not None:
            break
    if supplied is None:
        raise Unauthorized(f"missing {TOKEN_HEADERS[0]} header", error_type="MissingToken")
    if not hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), state.token):
        raise Unauthorized(f"wrong {TOKEN_HEADERS[0]} header", error_type="InvalidToken")
    if state.closing:
        raise ServiceUnavailable("the extension is shutting down")
    return await handler(request)


# Query parsing ----------------------------------------------------------------------------


def parse_query(request: web.Request) -> list[tuple[str, str]]:
    """The query as ordered pairs: percent-decoded, `+` as space, UTF-8 enforced."""
    raw = request.rel_url.raw_query_string
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the query string is not valid UTF-8 after percent-decoding") from None
    for name, value in pairs:
        if len(value) > MAX_QUERY_VALUE:
            raise BadRequest(f"query parameter {name[:64]!r} is over {MAX_QUERY_VALUE} characters")
    return pairs


def first(pairs: list[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def required(pairs: list[tuple[str, str]], name: str) -> str:
    value = first(pairs, name)
    if value is None:
        raise BadRequest(f"missing query parameter {name!r}", error_type="MissingParameter")
    if value == "":
        raise BadRequest(f"query parameter {name!r} is empty", error_type="MissingParameter")
    return value


def flag(pairs: list[tuple[str, str]], name: str) -> bool:
    value = first(pairs, name)
    if value is None or value == "":
        return False
    low = value.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false")


# Handlers ---------------------------------------------------------------------------------


async def _serve(
    state: ServerState, key: CacheKey, load: Loader, ttl: float, refresh: bool
) -> web.Response:
    if not refresh:
        body = state.cache.fresh(key, load)
        if body is not None:
            return web.Response(body=body, headers=JSON_HEADERS)
    lookup = await state.cache.get(
        key, load, ttl, refresh=refresh, not_found_ttl=state.config.not_found_ttl
    )
    if lookup.outcome == "stale":
        return _json_response(
            lookup.body, extra={"Age": str(int(lookup.age)), "X-Secretcache-Stale": "true"}
        )
    return web.Response(body=lookup.body, headers=JSON_HEADERS)


async def get_secret_value(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pairs = parse_query(request)
    secret_id = required(pairs, "secretId")
    version_id = first(pairs, "versionId") or None
    version_stage = first(pairs, "versionStage") or None
    refresh = flag(pairs, "refreshNow")
    key = CacheKey("secretsmanager", secret_id, f"{version_id or ''}|{version_stage or ''}")

    async def load() -> bytes:
        result = await state.backends.get_secret_value(secret_id, version_id, version_stage)
        return responses.secret_value_body(result)

    return await _serve(state, key, load, state.config.secrets_manager_ttl, refresh)


def ssm_selector(pairs: list[tuple[str, str]]) -> str:
    """`:version` or `:label`, whichever comes first in the query; "" for neither."""
    for key, value in pairs:
        if key == "version" and value != "":
            if not value.isdigit() or int(value) < 1:
                raise BadRequest("query parameter 'version' must be a positive whole number")
            return f":{int(value)}"
        if key == "label" and value != "":
            return f":{value}"
    return ""


async def get_parameter(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pairs = parse_query(request)
    name = required(pairs, "name")
    selector = ssm_selector(pairs)
    decrypt = flag(pairs, "withDecryption")
    refresh = flag(pairs, "refreshNow")
    key = CacheKey("ssm", name, selector, decrypt)

    async def load() -> bytes:
        result = await state.backends.get_parameter(name + selector, decrypt)
        return responses.parameter_body(result, selector)

    return await _serve(state, key, load, state.config.ssm_ttl, refresh)


def _decrypt_request(raw: bytes) -> tuple[bytes, dict[str, str] | None, str | None, str]:
    """Validate a Decrypt request body; returns blob, context, key id and the cache identifier."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - {"CiphertextBlob", "EncryptionContext", "KeyId", "EncryptionAlgorithm"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(n[:64] for n in unknown))}")
    blob_b64 = body.get("CiphertextBlob")
    if not isinstance(blob_b64, str) or not blob_b64:
        raise BadRequest(
            "CiphertextBlob must be a non-empty base64 string", error_type="MissingParameter"
        )
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("CiphertextBlob is not valid base64") from None
    if not blob:
        raise BadRequest("CiphertextBlob is empty")
    context = body.get("EncryptionContext")
    if context is not None and (
        not isinstance(context, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in context.items())
    ):
        raise BadRequest("EncryptionContext must be an object of strings")
    key_id = body.get("KeyId")
    if key_id is not None and (not isinstance(key_id, str) or not key_id):
        raise BadRequest("KeyId must be a non-empty string")
    canonical = json.dumps(
        {"b": base64.b64encode(blob).decode(), "c": context or {}, "k": key_id or ""},
        sort_keys=True,
        separators=(",", ":"),
    )
    return blob, context, key_id, hashlib.sha256(canonical.encode()).hexdigest()


async def kms_decrypt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pairs = parse_query(request)
    refresh = flag(pairs, "refreshNow")
    raw = await request.read()
    blob, context, key_id, digest = _decrypt_request(raw)
    key = CacheKey("kms", digest)

    async def load() -> bytes:
        return responses.decrypt_body(await state.backends.decrypt(blob, context, key_id))

    return await _serve(state, key, load, state.config.kms_ttl, refresh)


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    status = "ok" if state.backends.loaded else "starting"
    return _json_response(json.dumps({"status": status}).encode())


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json_response(json.dumps(metrics_snapshot(state)).encode())


def metrics_snapshot(state: ServerState) -> dict[str, Any]:
    """Counters per service; no names, no values."""
    sizes = state.cache.entries_by_service()
    services: dict[str, Any] = {}
    for service in ("secretsmanager", "ssm", "kms"):
        counters = state.cache.service_stats(service).as_dict()
        count, size = sizes.get(service, (0, 0))
        counters["entries"] = count
        counters["bytes"] = size
        services[service] = counters
    return {
        "services": services,
        "cache": {"entries": len(state.cache), "bytes": state.cache.bytes},
    }


def make_app(config: Config, cache: TtlCache, backends: AwsBackends) -> web.Application:
    """The HTTP application; routes accept a trailing slash as AWS's extension does."""
    app = web.Application(
        middlewares=[error_middleware, access_middleware],
        client_max_size=MAX_BODY_BYTES,
        handler_args={"max_line_size": 8190, "max_field_size": 8190},
    )
    app[STATE] = ServerState(config, cache, backends)
    backends.latency_observer = lambda service, seconds: cache.service_stats(
        service
    ).latencies.append(seconds)
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/secretsmanager/get", get_secret_value),
        ("GET", "/systemsmanager/parameters/get", get_parameter),
        ("POST", "/kms/decrypt", kms_decrypt),
        ("GET", "/health", health),
        ("GET", "/metrics", metrics),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path + "/", handler)
    return app
