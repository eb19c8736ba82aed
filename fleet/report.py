"""Figures from simulated runs: per-API rates, throttling, what handlers saw, monthly cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import (
    API_SM_BATCH,
    API_SM_GET,
    API_SSM,
    MONTH_SECONDS,
    PRICE_PER_10K_CALLS,
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


def recommend(summaries: list[Summary], ssm_limit: float) -> str:
    """The cheapest policy that kept every read answered and stayed under the SSM limit."""

    def score(s: Summary) -> tuple[float, float, float, float]:
        return (s.failed, s.throttled.sum(), s.monthly_cost, s.mean.sum())

    clean = [s for s in summaries if s.failed == 0 and s.throttled.sum() == 0]
    best = min(clean or summaries, key=score)
    if clean:
        why = (
            f"no failed read and no throttled call (SSM peak {best.peak[API_SSM]:.0f}/s against "
            f"{ssm_limit:g}/s), at ${best.monthly_cost:,.2f}/month"
        )
    else:
        why = (
            f"every policy was throttled; this one failed the fewest reads "
            f"({_n(best.failed)}) with SSM peak {best.peak[API_SSM]:.0f}/s against {ssm_limit:g}/s"
        )
    return f"Recommendation: {best.name} ({best.settings}): {why}."
