"""Environment variables -> one frozen, validated Config.

This is the only module that interprets the environment. Names and defaults follow AWS's
Parameters and Secrets Lambda Extension; our additions start with SECRETCACHE_.
An invalid value raises ConfigError naming the variable and the value, never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import BadRequest
from .query import Pairs
from .read_requests import DecryptRead, ParameterRead, PathRead, SecretRead

#: What a prefetch item warms: the read request it stands for.
PrefetchRead = SecretRead | ParameterRead | PathRead | DecryptRead

MAX_TTL_SECONDS = 86_400
#: Total time for one upstream request when the *_TIMEOUT_MILLIS variables are 0 (the SDK default).
DEFAULT_UPSTREAM_TIMEOUT_SECONDS = 5.0
LOG_LEVELS = ("debug", "info", "warn", "error", "none")
#: SECRETCACHE_COMPAT: whose answers `/secretsmanager/get` gives. `/v1/<id>` is always the Agent's.
COMPAT_MODES = ("aws", "agent")
#: Where the request token comes from, first set wins: AWS's extension's variable, ours, then
#: the Secrets Manager Agent's remaining sources in its order (its `get_token`).
TOKEN_SOURCES = (
    "AWS_SESSION_TOKEN",
    "SECRETCACHE_TOKEN",
    "SECRETCACHE_TOKEN_FILE",
    "AWS_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
#: The Agent's sources, whose value may be `file:///path` (the token is read from that file).
_FILE_URL_SOURCES = frozenset(
    {"AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"}
)
UPSTREAMS = ("lean", "sdk")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class ConfigError(ValueError):
    """A configuration variable holds a value we refuse to guess about."""

    def __init__(
        self, variable: str, value: str | None, reason: str, *, whole: bool = False
    ) -> None:
        if value is None:
            shown = "<unset>"
        else:
            shown = repr(value if whole or len(value) <= 64 else value[:64] + "...")
        super().__init__(f"{variable}={shown}: {reason}")
        self.variable = variable


PREFETCH_KINDS = ("sm", "ssm", "ssmpath", "kms")
#: The options each kind takes: the query parameters of the request it stands for.
_PREFETCH_OPTIONS = {
    "sm": frozenset({"versionId", "versionStage", "roleArn"}),
    "ssm": frozenset({"withDecryption", "version", "label"}),
    "ssmpath": frozenset({"withDecryption", "recursive"}),
    "kms": frozenset(),
}


@dataclass(frozen=True, slots=True)
class PrefetchItem:
    """One entry of SECRETCACHE_PREFETCH: what to warm before reporting ready.

    `read` is the typed read request the item stands for, parsed by the same rules as the HTTP
    request that would later hit its entry. `target` is a secret id, a parameter name, a path,
    or (kms) the name of the environment variable holding the base64 ciphertext.
    """

    kind: str
    target: str
    read: PrefetchRead = field(repr=False)

    @property
    def label(self) -> str:
        """How logs and init errors name the item (never a value)."""
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the extension needs to know, validated once at start."""

    port: int = 2773
    cache_enabled: bool = True
    cache_size: int = 1000
    cache_max_bytes: int = 16 * 1024 * 1024
    max_connections: int = 3
    log_level: str = "info"
    secrets_manager_ttl: int = 300
    ssm_ttl: int = 300
    kms_ttl: int = 300
    secrets_manager_timeout: float = DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    ssm_timeout: float = DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    kms_timeout: float = DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    max_stale_seconds: int = 3600
    not_found_ttl: int = 0
    #: Longest back-off (seconds) after throttled loads of one item; 0 = no throttle memory.
    throttle_backoff_seconds: int = 20
    max_client_connections: int = 256
    #: Seconds for a request head (and a request body) to arrive once its first byte has.
    request_timeout: float = 10.0
    token: str = field(default="", repr=False)
    token_source: str = "AWS_SESSION_TOKEN"
    #: "aws" (AWS's extension) or "agent" (the Secrets Manager Agent) on /secretsmanager/get.
    compat: str = "aws"
    #: Lambda SnapStart (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start): INIT ends in a snapshot.
    snapstart: bool = False
    #: Under SnapStart, prefetch at INIT and keep the values in the snapshot (default: do not;
    #: warm right after restore instead, each sandbox after a random delay up to the jitter).
    snapstart_prefetch: bool = False
    snapstart_jitter: float = 1.0
    #: Tests only: the random state at start, so two processes stand in for two sandboxes restored
    #: from one snapshot (which start with the same state).
    random_seed: str | None = field(default=None, repr=False)
    lambda_runtime_api: str | None = None
    function_name: str | None = None
    #: AWS_REGION (set by Lambda) or AWS_DEFAULT_REGION; None lets the SDK decide.
    region: str | None = None
    prefetch: tuple[PrefetchItem, ...] = ()
    prefetch_required: bool = False
    #: Parameters one by-path read may hold; a larger path is refused (PathTooLarge).
    path_max_parameters: int = 100
    #: Roles (`roleArn`) reads may assume; a new role beyond it is refused (MaxRolesExceeded).
    max_roles: int = 10
    metrics: str = "none"
    metrics_interval: int = 60
    metrics_namespace: str = "Secretcache"
    #: How AWS is called: "lean" (secretcache.aws) or "sdk" (aiobotocore).
    upstream: str = "lean"
    #: SECRETCACHE_ROTATION_AWARE: a secret with rotation enabled is not served past its
    #: NextRotationDate (one DescribeSecret beside each GetSecretValue of a changeable read).
    rotation_aware: bool = False
    #: Seconds between re-reads of a secret whose rotation window has begun but whose new
    #: version has not appeared yet.
    rotation_recheck: int = 60
    #: The AWS_* variables (credentials, endpoints, FIPS...) for the lean client, which reads
    #: them as the SDK would. Holds credentials: never shown.
    aws_environment: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def in_lambda(self) -> bool:
        return self.lambda_runtime_api is not None

    def describe(self) -> dict[str, object]:
        """The effective configuration for the start-up log line: no token, no values."""
        return {
            "port": self.port,
            "cacheEnabled": self.cache_enabled,
            "cacheSize": self.cache_size,
            "cacheMaxBytes": self.cache_max_bytes,
            "maxConnections": self.max_connections,
            "logLevel": self.log_level,
            "ttlSeconds": {
                "secretsmanager": self.secrets_manager_ttl,
                "ssm": self.ssm_ttl,
                "kms": self.kms_ttl,
            },
            "timeoutSeconds": {
                "secretsmanager": self.secrets_manager_timeout,
                "ssm": self.ssm_timeout,
                "kms": self.kms_timeout,
            },
            "maxStaleSeconds": self.max_stale_seconds,
            "notFoundTtlSeconds": self.not_found_ttl,
            "throttleBackoffSeconds": self.throttle_backoff_seconds,
            "maxClientConnections": self.max_client_connections,
            "requestTimeoutSeconds": self.request_timeout,
            "tokenSource": self.token_source,
            "compat": self.compat,
            "snapStart": self.snapstart,
            "snapStartPrefetch": self.snapstart_prefetch,
            "snapStartJitterSeconds": self.snapstart_jitter,
            "mode": "lambda" if self.in_lambda else "standalone",
            "prefetch": [item.label for item in self.prefetch],
            "prefetchRequired": self.prefetch_required,
            "pathMaxParameters": self.path_max_parameters,
            "maxRoles": self.max_roles,
            "metrics": self.metrics,
            "metricsIntervalSeconds": self.metrics_interval,
            "metricsNamespace": self.metrics_namespace,
            "upstream": self.upstream,
            "rotationAware": self.rotation_aware,
            "rotationRecheckSeconds": self.rotation_recheck,
        }


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ConfigError(name, env.get(name), "must be a whole number")
    value = int(raw, 10)
    if not lo <= value <= hi:
        raise ConfigError(name, env.get(name), f"must be between {lo} and {hi}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(name, env.get(name), "must be true or false")


def _timeout(env: Mapping[str, str], name: str) -> float:
    millis = _int(env, name, 0, 0, 600_000)
    return DEFAULT_UPSTREAM_TIMEOUT_SECONDS if millis == 0 else millis / 1000.0


def _token(env: Mapping[str, str]) -> tuple[str, str]:
    """The token and the variable it came from (TOKEN_SOURCES order). Never shows a token."""
    for name in TOKEN_SOURCES:
        raw = _raw(env, name)
        if raw is None:
            continue
        if name == "SECRETCACHE_TOKEN_FILE":
            return _token_file(name, raw), name
        if name in _FILE_URL_SOURCES and raw.startswith("file://"):
            return _token_file(name, raw[len("file://") :]), name
        return raw, name
    raise ConfigError(
        "AWS_SESSION_TOKEN",
        None,
        "no token to check requests against: set one of " + ", ".join(TOKEN_SOURCES),
    )


def _token_file(variable: str, path: str) -> str:
    """The token held in a file (trimmed); the error names the variable and path, not the file."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(variable, path, f"cannot be read ({reason})", whole=True) from None
    if not token:
        raise ConfigError(variable, path, "the file is empty", whole=True)
    return token


def _compat(env: Mapping[str, str]) -> str:
    raw = _raw(env, "SECRETCACHE_COMPAT")
    if raw is None:
        return "aws"
    if raw.lower() not in COMPAT_MODES:
        raise ConfigError(
            "SECRETCACHE_COMPAT",
            env.get("SECRETCACHE_COMPAT"),
            "must be aws (AWS's Parameters and Secrets extension, the default) or agent "
            "(the Secrets Manager Agent's bodies and errors on /secretsmanager/get)",
        )
    return raw.lower()


def _prefetch(env: Mapping[str, str], compat: str = "aws") -> tuple[PrefetchItem, ...]:
    """Parse `kind:target[?option=value&...]` items separated by commas.

    Under SECRETCACHE_COMPAT=agent an `sm:` item warms the Agent-shaped entry, which is what
    `/secretsmanager/get` and `/v1/<id>` then read.
    """
    from urllib.parse import parse_qsl

    name = "SECRETCACHE_PREFETCH"
    raw = _raw(env, name)
    if raw is None:
        return ()
    items: list[PrefetchItem] = []
    for text in (part.strip() for part in raw.split(",")):
        if not text:
            continue
        kind, sep, rest = text.partition(":")
        target, _, query = rest.partition("?")
        if not sep or kind not in PREFETCH_KINDS or not target:
            raise ConfigError(
                name,
                text,
                f"each item must be KIND:TARGET with KIND one of {', '.join(PREFETCH_KINDS)}",
            )
        pairs = parse_qsl(query, keep_blank_values=True)
        unknown = {option for option, _ in pairs} - _PREFETCH_OPTIONS[kind]
        if unknown:
            raise ConfigError(
                name, text, f"unknown option(s) {', '.join(sorted(unknown))} for {kind}"
            )
        try:
            read = _prefetch_read(env, kind, target, pairs)
            if compat == "agent" and isinstance(read, SecretRead):
                read = read._replace(agent=True)
        except BadRequest as exc:
            raise ConfigError(name, text, exc.message) from None
        items.append(PrefetchItem(kind=kind, target=target, read=read))
    return tuple(items)


def _prefetch_read(env: Mapping[str, str], kind: str, target: str, pairs: Pairs) -> PrefetchRead:
    """The read request a prefetch item stands for; raises BadRequest as the request would."""
    if kind == "sm":
        return SecretRead.from_query([("secretId", target), *pairs])
    if kind == "ssm":
        return ParameterRead.from_query([("name", target), *pairs])
    if kind == "ssmpath":
        return PathRead.from_query([("path", target), *pairs])
    import base64
    import binascii

    ciphertext = env.get(target, "").strip()
    if not ciphertext:
        raise BadRequest(f"environment variable {target} holds no ciphertext")
    try:
        blob = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{target} is not base64") from None
    if not blob:
        raise BadRequest(f"{target} holds no ciphertext")
    return DecryptRead(blob)


def load_config(env: Mapping[str, str]) -> Config:
    """Build and validate the configuration from an environment mapping."""
    level_raw = _raw(env, "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL")
    level = "info" if level_raw is None else level_raw.lower()
    if level == "warning":
        level = "warn"
    if level not in LOG_LEVELS:
        raise ConfigError(
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL",
            env.get("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL"),
            "must be one of debug, info, warn, error, none",
        )
    token, token_source = _token(env)
    compat = _compat(env)
    metrics = (_raw(env, "SECRETCACHE_METRICS") or "none").lower()
    if metrics not in ("none", "emf"):
        raise ConfigError(
            "SECRETCACHE_METRICS", env.get("SECRETCACHE_METRICS"), "must be none or emf"
        )
    namespace = _raw(env, "SECRETCACHE_METRICS_NAMESPACE") or "Secretcache"
    if len(namespace) > 255:
        raise ConfigError(
            "SECRETCACHE_METRICS_NAMESPACE", namespace, "must be at most 255 characters"
        )
    upstream = (_raw(env, "SECRETCACHE_UPSTREAM") or "lean").lower()
    if upstream not in UPSTREAMS:
        raise ConfigError(
            "SECRETCACHE_UPSTREAM", env.get("SECRETCACHE_UPSTREAM"), "must be lean or sdk"
        )
    return Config(
        port=_int(env, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", 2773, 1, 65535),
        cache_enabled=_bool(env, "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", True),
        cache_size=_int(env, "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", 1000, 0, 1_000_000),
        cache_max_bytes=_int(env, "SECRETCACHE_CACHE_MAX_BYTES", 16 * 1024 * 1024, 0, 2**40),
        max_connections=_int(env, "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", 3, 1, 1000),
        log_level=level,
        secrets_manager_ttl=_int(env, "SECRETS_MANAGER_TTL", 300, 0, MAX_TTL_SECONDS),
        ssm_ttl=_int(env, "SSM_PARAMETER_STORE_TTL", 300, 0, MAX_TTL_SECONDS),
        kms_ttl=_int(env, "SECRETCACHE_KMS_TTL", 300, 0, MAX_TTL_SECONDS),
        secrets_manager_timeout=_timeout(env, "SECRETS_MANAGER_TIMEOUT_MILLIS"),
        ssm_timeout=_timeout(env, "SSM_PARAMETER_STORE_TIMEOUT_MILLIS"),
        kms_timeout=_timeout(env, "SECRETCACHE_KMS_TIMEOUT_MILLIS"),
        max_stale_seconds=_int(env, "SECRETCACHE_MAX_STALE_SECONDS", 3600, 0, 7 * MAX_TTL_SECONDS),
        not_found_ttl=_int(env, "SECRETCACHE_NOT_FOUND_TTL", 0, 0, MAX_TTL_SECONDS),
        throttle_backoff_seconds=_int(env, "SECRETCACHE_THROTTLE_BACKOFF_SECONDS", 20, 0, 300),
        max_client_connections=_int(env, "SECRETCACHE_MAX_CLIENT_CONNECTIONS", 256, 1, 65535),
        request_timeout=_int(env, "SECRETCACHE_REQUEST_TIMEOUT_MILLIS", 10_000, 100, 600_000)
        / 1000.0,
        token=token,
        token_source=token_source,
        compat=compat,
        snapstart=_raw(env, "AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start",
        snapstart_prefetch=_bool(env, "SECRETCACHE_SNAPSTART_PREFETCH", False),
        snapstart_jitter=_int(env, "SECRETCACHE_SNAPSTART_JITTER_MILLIS", 1000, 0, 60_000) / 1000.0,
        random_seed=_raw(env, "SECRETCACHE_RANDOM_SEED") or None,
        lambda_runtime_api=_raw(env, "AWS_LAMBDA_RUNTIME_API"),
        function_name=_raw(env, "AWS_LAMBDA_FUNCTION_NAME"),
        region=_raw(env, "AWS_REGION") or _raw(env, "AWS_DEFAULT_REGION"),
        prefetch=_prefetch(env, compat),
        prefetch_required=_bool(env, "SECRETCACHE_PREFETCH_REQUIRED", False),
        path_max_parameters=_int(env, "SECRETCACHE_PATH_MAX_PARAMETERS", 100, 1, 100_000),
        max_roles=_int(env, "SECRETCACHE_MAX_ROLES", 10, 0, 1000),
        metrics=metrics,
        metrics_interval=_int(env, "SECRETCACHE_METRICS_INTERVAL", 60, 1, MAX_TTL_SECONDS),
        metrics_namespace=namespace,
        upstream=upstream,
        rotation_aware=_bool(env, "SECRETCACHE_ROTATION_AWARE", False),
        rotation_recheck=_int(env, "SECRETCACHE_ROTATION_RECHECK_SECONDS", 60, 1, 3600),
        aws_environment=tuple(sorted((k, v) for k, v in env.items() if k.startswith("AWS_"))),
    )
