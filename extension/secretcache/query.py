"""Request rules shared by both HTTP paths (the fast path and the aiohttp app): query parsing,
the token and Host checks, and the bounds. No aiohttp here, so the fast path can serve before
aiohttp is imported.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl

from .errors import BadRequest

TOKEN_HEADERS = ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
MAX_QUERY_VALUE = 2048
MAX_BODY_BYTES = 64 * 1024
#: Request line plus headers.
MAX_HEADER_BYTES = 8 * 1024
#: Header fields in one request (aiohttp's own default, applied by both HTTP stacks).
MAX_HEADERS = 128
MAX_BATCH_ITEMS = 100
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_AGENT_PATHS = frozenset({"/v1", "/v1/", "/ping", "/ping/"})
_SECRET_PATHS = frozenset({"/secretsmanager/get", "/secretsmanager/get/"})
#: Health checks: no token, and exempt from the connection cap (a probe must answer when the
#: function's own connections fill it, as the Secrets Manager Agent's `/ping` does).
OPEN_PATHS = frozenset({"/health", "/health/", "/ping", "/ping/"})

Pairs = list[tuple[str, str]]


def forwarded_error() -> BadRequest:
    """A request carrying X-Forwarded-For came through a proxy, so not from this function."""
    return BadRequest(
        "X-Forwarded-For is refused: a request relayed by a proxy does not come from this "
        "function (the Secrets Manager Agent's SSRF rule); call 127.0.0.1 directly",
        error_type="Forwarded",
    )


def agent_route(path: str, agent_secret_get: bool) -> bool:
    """Whether a (percent-decoded) path answers as the Secrets Manager Agent does: `/v1/...`,
    `/ping`, and `/secretsmanager/get` under SECRETCACHE_COMPAT=agent (`agent_secret_get`)."""
    return (
        path in _AGENT_PATHS
        or path.startswith("/v1/")
        or (agent_secret_get and path in _SECRET_PATHS)
    )


def allowed_hosts(port: int) -> frozenset[str]:
    """Host values (lower case) that name this listener; anything else may be DNS rebinding."""
    return frozenset(h for name in _LOCAL_HOSTS for h in (name, f"{name}:{port}"))


def token_matches(supplied: bytes, token: bytes) -> bool:
    """Constant-time comparison of the token header with the expected token."""
    return hmac.compare_digest(supplied, token)


def parse_query_string(raw: str) -> Pairs:
    """The query as ordered pairs: percent-decoded, `+` as space, UTF-8 enforced."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the query string is not valid UTF-8 after percent-decoding") from None
    for name, value in pairs:
        if len(value) > MAX_QUERY_VALUE or len(name) > MAX_QUERY_VALUE:
            raise BadRequest(f"a query parameter is over {MAX_QUERY_VALUE} characters")
    return pairs


def first(pairs: Pairs, name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def required(pairs: Pairs, name: str) -> str:
    value = first(pairs, name)
    if value is None:
        raise BadRequest(f"missing query parameter {name!r}", error_type="MissingParameter")
    if value == "":
        raise BadRequest(f"query parameter {name!r} is empty", error_type="MissingParameter")
    return value


def all_values(pairs: Pairs, name: str) -> list[str]:
    values = [value for key, value in pairs if key == name]
    if not values or any(v == "" for v in values):
        raise BadRequest(f"give at least one non-empty {name!r}", error_type="MissingParameter")
    if len(values) > MAX_BATCH_ITEMS:
        raise BadRequest(f"at most {MAX_BATCH_ITEMS} {name!r} values per request")
    return values


def flag(pairs: Pairs, name: str) -> bool:
    value = first(pairs, name)
    if value is None or value == "":
        return False
    low = value.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false")


def ssm_selector(pairs: Pairs) -> str:
    """`:version` or `:label`, whichever comes first in the query; "" for neither."""
    for key, value in pairs:
        if key == "version" and value != "":
            if not (value.isascii() and value.isdigit()) or int(value) < 1:
                raise BadRequest("query parameter 'version' must be a positive whole number")
            return f":{int(value)}"
        if key == "label" and value != "":
            return f":{value}"
    return ""
