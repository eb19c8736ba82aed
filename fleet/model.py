"""What the simulator takes: the fleet, the extension's settings (a policy) and AWS's limits.

Every default that describes the extension comes from the extension's own modules, so the
simulator models the code that ships, not a copy of its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from secretcache.backends import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, MAX_ATTEMPTS
from secretcache.cache import REFRESH_AHEAD_FRACTION, TTL_JITTER_FRACTION
from secretcache.config import Config
from secretcache.reads import SECRETS_BATCH_LIMIT, SSM_BATCH_LIMIT
from secretcache.throttle import BACKOFF_BASE_SECONDS as THROTTLE_BACKOFF_BASE
from secretcache.throttle import SERVICE_MEMORY_SECONDS

_DEFAULTS = Config()

SHAPES = ("steady", "daily", "burst", "deploy")
DAY = 86_400.0
#: AWS bills a month of 730 hours in its price examples.
MONTH_SECONDS = 730 * 3600.0
PRICE_PER_10K_CALLS = 0.05

#: The APIs the fleet calls. Parameter Store's limit is one bucket shared by GetParameter,
#: GetParameters and GetParametersByPath (AWS's quota table says so), so they are one API here.
API_SSM = 0
API_SM_GET = 1
API_SM_BATCH = 2
API_NAMES = (
    "ssm:GetParameter*",
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
)
API_SHORT = ("ssm", "sm-get", "sm-batch")


@dataclass(frozen=True)
class Policy:
    """The extension's settings. `None` TTLs mean the extension's default.

    Environment variables set ttl, stale and not-found TTL; jitter and refresh-ahead are fixed in
    the extension today (their defaults are the constants it uses) and vary here for what-ifs.
    """

    name: str = "defaults"
    ssm_ttl: float = float(_DEFAULTS.ssm_ttl)
    sm_ttl: float = float(_DEFAULTS.secrets_manager_ttl)
    jitter: float = TTL_JITTER_FRACTION
    refresh_ahead: float = REFRESH_AHEAD_FRACTION  # 0 turns refresh-ahead off
    prefetch: bool = False
    batch: bool = False
    max_stale: float = float(_DEFAULTS.max_stale_seconds)  # 0 turns stale-on-error off
    not_found_ttl: float = float(_DEFAULTS.not_found_ttl)
    timeout: float = _DEFAULTS.ssm_timeout
    max_attempts: int = MAX_ATTEMPTS
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS
    ssm_batch_limit: int = SSM_BATCH_LIMIT
    sm_batch_limit: int = SECRETS_BATCH_LIMIT
    #: SECRETCACHE_THROTTLE_BACKOFF_SECONDS: the longest back-off after throttled loads of a key
    #: (single reads; batch reads do not back off); 0 = every read retries (before it existed).
    throttle_backoff: float = float(_DEFAULTS.throttle_backoff_seconds)
    throttle_backoff_base: float = THROTTLE_BACKOFF_BASE
    service_memory: float = SERVICE_MEMORY_SECONDS

    def describe(self) -> str:
        """The settings that differ from the extension's defaults, as `name=value`."""
        base = Policy()
        out = []
        for f in fields(self):
            if f.name == "name":
                continue
            value = getattr(self, f.name)
            if value != getattr(base, f.name):
                out.append(
                    f"{f.name}={value:g}" if isinstance(value, float) else f"{f.name}={value}"
                )
        return ", ".join(out) or "extension defaults"

    def with_(self, **changes: object) -> Policy:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fleet:
    """The functions' traffic: how many sandboxes, how their number moves, what each reads."""

    sandboxes: int = 1000  # concurrent sandboxes (at the peak, for the daily curve)
    shape: str = "daily"
    invocations_per_second: float = 1000.0  # the whole fleet, at `sandboxes` concurrency
    lifetime: float = 7200.0  # mean seconds a sandbox lives (uniform from half to 1.5 times)
    ssm_items: int = 3  # parameters read per invocation
    sm_items: int = 1  # secrets read per invocation
    missing_items: int = 0  # parameter reads per invocation that AWS answers not-found
    horizon: float = DAY
    trough: float = 0.2  # daily curve: the night's sandboxes as a share of the peak
    # burst/deploy time (default 0 for burst, half-way for deploy); with daily: a deploy then
    event_at: float | None = None
    spread: float = 10.0  # seconds over which a burst's or deploy's cold starts arrive
    latency: float = 0.03  # seconds one AWS call takes
    #: Seconds from a throttled attempt to the retry's backoff starting (None: `latency`).
    throttle_latency: float | None = None

    @property
    def throttled_latency(self) -> float:
        return self.latency if self.throttle_latency is None else self.throttle_latency

    @property
    def per_sandbox_rate(self) -> float:
        return self.invocations_per_second / max(1, self.sandboxes)

    def with_(self, **changes: object) -> Fleet:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Limits:
    """AWS's per-account, per-region request rates (token buckets of `burst` seconds)."""

    ssm_tps: float = 40.0  # 3,000 with higher throughput (GetParameter/GetParameters)
    sm_get_tps: float = 10_000.0
    sm_batch_tps: float = 100.0
    burst: float = 1.0  # bucket size in seconds of the rate
    ssm_higher_throughput: bool = False  # paid tier: SSM calls cost like Secrets Manager's

    @property
    def rates(self) -> tuple[float, float, float]:
        return (self.ssm_tps, self.sm_get_tps, self.sm_batch_tps)
