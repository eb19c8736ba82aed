"""Figures from simulated runs: per-API rates, throttling, what handlers saw, monthly cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from secretcache.cache import REFRESH_AHEAD_FRACTION, TTL_JITTER_FRACTION
from secretcache.reads import SSM_BATCH_LIMIT

from .model import (
    API_SM_BATCH,
    API_SM_GET,
    API_SSM,
    MONTH_SECONDS,
    PRICE_PER_10K_CALLS,
    Fleet,
    Limits,
)
from .simulator import Result


@dataclass
class Summary:
    name: str
    settings: str
    mean: np.ndarray  # calls/s per API (attempts, throttled included)
    peak: np.ndarray  # highest 1-second rate per API
    p99: np.ndarray  # 99th percentile of the 1-second rates per API
    throttled: np.ndarray  # throttled calls per API over the run
    answered: np.ndarray  # calls AWS answered per API over the run
    reads: float
    waited: float
    failed: float
    stale: float
    monthly_cost: float
    cold_starts: int
    horizon: float


def summarize(result: Result) -> Summary:
    per_s = result.per_second(result.calls)
    answered = result.calls.sum(1) - result.throttled.sum(1)
    month = MONTH_SECONDS / result.fleet.horizon
    billed = answered[API_SM_GET] + answered[API_SM_BATCH]
    if result.limits.ssm_higher_throughput:
        billed += answered[API_SSM]
    return Summary(
        name=result.policy.name,
        settings=result.policy.describe(),
        mean=per_s.mean(1),
        peak=per_s.max(1),
        p99=np.percentile(per_s, 99, axis=1),
        throttled=result.throttled.sum(1),
        answered=answered,
        reads=result.reads,
        waited=result.waited,
        failed=result.failed,
        stale=result.stale,
        monthly_cost=float(billed * month / 10_000 * PRICE_PER_10K_CALLS),
        cold_starts=result.cold_starts,
        horizon=result.fleet.horizon,
    )


def _n(x: float) -> str:
    """Compact count: 1234 -> 1,234; 1.2e7 -> 12.3M."""
    if x >= 10_000_000:
        return f"{x / 1e6:.1f}M"
    if x >= 100_000:
        return f"{x / 1e3:.0f}k"
    if x >= 100 or x == int(x):
        return f"{x:,.0f}"
    return f"{x:.2f}"


def _pct(part: float, whole: float) -> str:
    if whole <= 0 or part <= 0:
        return "0"
    share = 100 * part / whole
    return f"{share:.2g}%" if share < 0.01 else f"{share:.2f}%"


COLUMNS = (
    "policy",
    "ssm mean/s",
    "ssm p99/s",
    "ssm peak/s",
    "ssm throttled",
    "sm mean/s",
    "sm peak/s",
    "sm throttled",
    "reads waited",
    "reads failed",
    "reads stale",
    "$/month",
)


def table(summaries: list[Summary]) -> str:
    """The policies side by side, one row each, columns aligned."""
    rows = [list(COLUMNS)]
    for s in summaries:
        sm_mean = s.mean[API_SM_GET] + s.mean[API_SM_BATCH]
        sm_peak = max(s.peak[API_SM_GET], s.peak[API_SM_BATCH])
        rows.append(
            [
                s.name,
                f"{s.mean[API_SSM]:.1f}",
                f"{s.p99[API_SSM]:.0f}",
                f"{s.peak[API_SSM]:.0f}",
                _n(s.throttled[API_SSM]),
                f"{sm_mean:.1f}",
                f"{sm_peak:.0f}",
                _n(s.throttled[API_SM_GET] + s.throttled[API_SM_BATCH]),
                _pct(s.waited, s.reads),
                f"{_n(s.failed)} ({_pct(s.failed, s.reads)})",
                _n(s.stale),
                f"{s.monthly_cost:,.2f}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def legend(summaries: list[Summary]) -> str:
    return "\n".join(f"  {s.name}: {s.settings}" for s in summaries)


def recommend(summaries: list[Summary], fleet: Fleet, limits: Limits) -> str:
    """The best policy of those compared, and where any throttling comes from."""

    def score(s: Summary) -> tuple[float, float, float, float]:
        return (s.failed, s.throttled.sum(), s.monthly_cost, s.waited)

    limit = limits.ssm_tps
    clean = [s for s in summaries if s.failed == 0 and s.throttled.sum() == 0]
    best = min(clean or summaries, key=score)
    if clean:
        text = (
            f"Recommendation: {best.name} ({best.settings}): no failed read and no throttled "
            f"call (Parameter Store peak {best.peak[API_SSM]:.0f}/s against {limit:g}/s), "
            f"${best.monthly_cost:,.2f}/month."
        )
    else:
        text = (
            f"Recommendation: {best.name} ({best.settings}) failed the fewest reads "
            f"({_n(best.failed)}), but every policy compared was throttled."
        )
    if fleet.shape in ("burst", "deploy") or fleet.event_at is not None:
        calls = fleet.ssm_items + fleet.missing_items
        batched = math.ceil(fleet.ssm_items / SSM_BATCH_LIMIT) + fleet.missing_items
        need = fleet.sandboxes * calls / limit
        text += (
            f"\nCold starts: {fleet.sandboxes:,} sandboxes starting together make "
            f"{fleet.sandboxes * calls:,} Parameter Store calls ({calls} each); at {limit:g}/s "
            f"that takes {need:,.0f} s. Roll the deploy out over at least that (check with "
            f"--spread {need:.0f}), read parameters in one batch ({batched} call each, "
            f"{fleet.sandboxes * batched / limit:,.0f} s; --prefetch batches them at INIT too), "
            f"or raise the limit (--higher-throughput)."
        )
    if fleet.ssm_items:
        renewal = 1 - TTL_JITTER_FRACTION / 2 - REFRESH_AHEAD_FRACTION
        shortest = fleet.sandboxes * fleet.ssm_items / limit / renewal
        text += (
            f"\nSteady traffic: {fleet.sandboxes:,} sandboxes x {fleet.ssm_items} parameters, "
            f"each renewed every ~{renewal:.2f} x TTL, stay under {limit:g}/s with "
            f"SSM_PARAMETER_STORE_TTL >= {shortest:,.0f} s (plus room for cold starts)."
        )
    return text
