"""The fleet simulator: deterministic, faithful to the extension's constants, and sane limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from secretcache.backends import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, MAX_ATTEMPTS
from secretcache.cache import REFRESH_AHEAD_FRACTION, TTL_JITTER_FRACTION
from secretcache.config import Config
from secretcache.reads import SECRETS_BATCH_LIMIT, SSM_BATCH_LIMIT
from secretcache.throttle import BACKOFF_BASE_SECONDS as THROTTLE_BASE
from secretcache.throttle import SERVICE_MEMORY_SECONDS

from fleet.model import API_SM_BATCH, API_SM_GET, API_SSM, MONTH_SECONDS, Fleet, Limits, Policy
from fleet.population import build_population
from fleet.report import recommend, summarize, table
from fleet.simulator import simulate

HOUR = 3600.0
SMALL = Fleet(sandboxes=200, shape="steady", invocations_per_second=200, horizon=HOUR)


def test_policy_defaults_are_the_extensions_constants() -> None:
    p, c = Policy(), Config()
    assert p.refresh_ahead == REFRESH_AHEAD_FRACTION
    assert p.jitter == TTL_JITTER_FRACTION
    assert (p.max_attempts, p.backoff_base, p.backoff_cap) == (
        MAX_ATTEMPTS,
        BACKOFF_BASE_SECONDS,
        BACKOFF_CAP_SECONDS,
    )
    assert (p.ssm_batch_limit, p.sm_batch_limit) == (SSM_BATCH_LIMIT, SECRETS_BATCH_LIMIT)
    assert (p.ssm_ttl, p.sm_ttl) == (c.ssm_ttl, c.secrets_manager_ttl)
    assert (p.max_stale, p.not_found_ttl) == (c.max_stale_seconds, c.not_found_ttl)
    assert p.throttle_backoff == c.throttle_backoff_seconds
    assert (p.throttle_backoff_base, p.service_memory) == (THROTTLE_BASE, SERVICE_MEMORY_SECONDS)


def test_same_seed_same_result_other_seed_differs() -> None:
    a = simulate(SMALL, Policy(), seed=7, dt=1.0)
    b = simulate(SMALL, Policy(), seed=7, dt=1.0)
    c = simulate(SMALL, Policy(), seed=8, dt=1.0)
    assert np.array_equal(a.calls, b.calls) and a.waited == b.waited
    assert not np.array_equal(a.calls, c.calls)


def test_steady_rate_matches_the_refresh_cycle() -> None:
    """Each item is renewed once per cycle: the life before the refresh window plus one gap."""
    r = simulate(SMALL, Policy(), seed=1, dt=1.0)
    p = Policy()
    cycle = p.ssm_ttl * (1 - p.jitter / 2 - p.refresh_ahead) + 1 / SMALL.per_sandbox_rate
    expected = SMALL.sandboxes * SMALL.ssm_items / cycle
    cold = SMALL.sandboxes / SMALL.lifetime * SMALL.ssm_items
    measured = r.per_second(r.calls)[API_SSM].mean()
    assert measured == pytest.approx(expected + cold, rel=0.1)
    assert r.throttled.sum() == 0 and r.failed == 0
    # Refresh-ahead keeps handlers off AWS: only cold starts wait.
    assert r.waited <= r.cold_starts * (SMALL.ssm_items + SMALL.sm_items) * 1.05 + 5


def test_refresh_ahead_moves_waits_off_handlers() -> None:
    on = simulate(SMALL, Policy(), seed=1, dt=1.0)
    off = simulate(SMALL, Policy(refresh_ahead=0.0), seed=1, dt=1.0)
    assert off.waited > 10 * max(1.0, on.waited - on.cold_starts * 4)


def test_longer_ttl_fewer_calls() -> None:
    short = simulate(SMALL, Policy(ssm_ttl=60), seed=1, dt=1.0)
    long = simulate(SMALL, Policy(ssm_ttl=900), seed=1, dt=1.0)
    assert short.calls[API_SSM].sum() > 8 * long.calls[API_SSM].sum()


def test_answered_calls_never_exceed_the_bucket() -> None:
    burst = Fleet(
        sandboxes=300, shape="burst", invocations_per_second=300, horizon=60.0, spread=2.0
    )
    limits = Limits(ssm_tps=10.0, burst=1.0)
    r = simulate(burst, Policy(), limits, seed=3, dt=0.05)
    answered = r.per_second(r.calls - r.throttled)[API_SSM]
    assert answered.max() <= 10.0 * 2 + 1  # a full bucket plus one second's refill
    assert r.throttled[API_SSM].sum() > 0
    assert r.failed > 0  # cold sandboxes have nothing stale to fall back on
    assert r.throttled[API_SM_GET].sum() == 0


def test_batch_reads_cut_cold_start_calls() -> None:
    burst = Fleet(
        sandboxes=100, shape="burst", invocations_per_second=100, horizon=30.0, ssm_items=8
    )
    single = simulate(burst, Policy(), Limits(ssm_tps=1e6), seed=1, dt=0.1)
    batch = simulate(burst, Policy(batch=True), Limits(ssm_tps=1e6), seed=1, dt=0.1)
    assert single.calls[API_SSM].sum() == pytest.approx(800, abs=5)
    assert batch.calls[API_SSM].sum() == pytest.approx(100, abs=5)


@pytest.mark.parametrize("batch", [False, True])
def test_prefetch_batches_cold_start_calls_as_the_extension_does(batch: bool) -> None:
    """prefetch.py: 25 parameters in 3 GetParameters, 25 secrets in 2 BatchGetSecretValue."""
    burst = Fleet(
        sandboxes=100, shape="burst", invocations_per_second=100, horizon=30.0,
        ssm_items=25, sm_items=25,
    )  # fmt: skip
    r = simulate(burst, Policy(prefetch=True, batch=batch), Limits(ssm_tps=1e6), seed=1, dt=0.1)
    assert r.calls[API_SSM].sum() == pytest.approx(300, abs=5)
    assert r.calls[API_SM_BATCH].sum() == pytest.approx(200, abs=5)
    assert r.calls[API_SM_GET].sum() == 0


def test_stale_on_error_serves_instead_of_failing() -> None:
    over = SMALL.with_(horizon=1200.0)
    limits = Limits(ssm_tps=1.0)
    with_stale = simulate(over, Policy(ssm_ttl=30), limits, seed=2, dt=1.0)
    without = simulate(over, Policy(ssm_ttl=30, max_stale=0), limits, seed=2, dt=1.0)
    assert with_stale.stale > 0 and without.stale == 0
    assert without.failed > with_stale.failed


def test_not_found_ttl_stops_a_call_per_invocation() -> None:
    fleet = SMALL.with_(missing_items=1, ssm_items=0, sm_items=0, horizon=600.0)
    limits = Limits(ssm_tps=1e6)
    uncached = simulate(fleet, Policy(), limits, seed=1, dt=1.0)
    cached = simulate(fleet, Policy(not_found_ttl=60), limits, seed=1, dt=1.0)
    per_invocation = fleet.invocations_per_second
    assert uncached.per_second(uncached.calls)[API_SSM].mean() == pytest.approx(
        per_invocation, rel=0.05
    )
    assert cached.calls[API_SSM].sum() < uncached.calls[API_SSM].sum() / 20


def test_deploy_replaces_every_sandbox_cold() -> None:
    fleet = Fleet(sandboxes=500, shape="deploy", horizon=HOUR, event_at=1800.0)
    pop = build_population(fleet, np.random.default_rng(1))
    cold_at_deploy = (~pop.warm) & (pop.start >= 1800.0) & (pop.start < 1800.0 + fleet.spread)
    assert cold_at_deploy.sum() == 500


def test_daily_curve_moves_between_trough_and_peak() -> None:
    fleet = Fleet(sandboxes=1000, shape="daily")
    pop = build_population(fleet, np.random.default_rng(1))
    live = pop.live_counts(60.0, 1440)
    assert live[0] == pytest.approx(200, abs=2)
    assert live[720] == pytest.approx(1000, abs=2)


def test_cost_and_table() -> None:
    r = simulate(SMALL, Policy(), seed=1, dt=1.0)
    s = summarize(r)
    answered_sm = r.calls[API_SM_GET].sum() - r.throttled[API_SM_GET].sum()
    assert s.monthly_cost == pytest.approx(answered_sm * MONTH_SECONDS / HOUR * 0.05 / 10_000)
    paid = summarize(simulate(SMALL, Policy(), Limits(ssm_higher_throughput=True), seed=1, dt=1.0))
    assert paid.monthly_cost > s.monthly_cost
    text = table([s, paid])
    assert "defaults" in text and "$/month" in text
    assert recommend([s], SMALL, Limits()).startswith("Recommendation: defaults")


def test_ten_thousand_sandboxes_hour_is_fast_enough() -> None:
    """Not a timing assertion: the run must finish (the per-event path would take hours)."""
    fleet = Fleet(sandboxes=10_000, shape="steady", invocations_per_second=10_000, horizon=600.0)
    r = simulate(fleet, Policy(ssm_ttl=3600, sm_ttl=3600), seed=1, dt=1.0)
    assert r.events < 200_000


def test_coarse_backlog_agrees_with_the_exact_path() -> None:
    """Large fleets follow failing reads as counts; on an overload small enough to follow
    exactly, both answer the same calls (the bucket decides) and fail about as many reads."""
    fleet = Fleet(sandboxes=150, shape="steady", invocations_per_second=150, horizon=600.0)
    limits = Limits(ssm_tps=3.0)
    # Without throttle memory: with it, failing reads are no longer one attempt per invocation.
    policy = Policy(ssm_ttl=30, throttle_backoff=0)
    exact = simulate(fleet, policy, limits, seed=1, dt=0.1, coarse=False)
    coarse = simulate(fleet, policy, limits, seed=1, dt=0.1, coarse=True)
    answered = [r.calls[API_SSM].sum() - r.throttled[API_SSM].sum() for r in (exact, coarse)]
    assert answered[1] == pytest.approx(answered[0], rel=0.03)
    assert coarse.failed + coarse.stale == pytest.approx(exact.failed + exact.stale, rel=0.2)
    assert coarse.throttled.sum() == pytest.approx(exact.throttled.sum(), rel=0.2)
    assert coarse.events < exact.events / 5


def test_throttle_memory_ends_the_retry_storm_without_failing_more_warm_reads() -> None:
    """An overload of warm sandboxes (every key has a value to serve stale): with throttle
    memory the same bucket answers the same calls, from far fewer attempts, and handlers stop
    waiting on AWS; without it every read of an expired key retries."""
    fleet = Fleet(sandboxes=150, shape="steady", invocations_per_second=150, horizon=600.0)
    limits = Limits(ssm_tps=3.0)
    before = simulate(fleet, Policy(ssm_ttl=30, throttle_backoff=0), limits, seed=1, dt=0.1)
    after = simulate(fleet, Policy(ssm_ttl=30), limits, seed=1, dt=0.1)
    answered = [r.calls[API_SSM].sum() - r.throttled[API_SSM].sum() for r in (before, after)]
    assert answered[1] == pytest.approx(answered[0], rel=0.1)
    assert after.calls[API_SSM].sum() < before.calls[API_SSM].sum() / 3
    assert after.failed <= before.failed
    assert after.waited < before.waited


def test_cold_reads_during_a_back_off_each_make_one_attempt() -> None:
    """A cold-start burst over the limit (no value to serve): every failed read made an attempt
    of its own (one, when its key was backing off), so failed reads never outnumber throttled
    attempts, and some reads during a back-off get through."""
    fleet = Fleet(sandboxes=200, shape="burst", invocations_per_second=200, horizon=120.0)
    result = simulate(fleet, Policy(), Limits(ssm_tps=5.0), seed=1, dt=0.1)
    throttled = float(result.throttled[API_SSM].sum())
    assert result.failed > 0
    assert result.failed <= throttled


@pytest.mark.parametrize(
    "args", [["--sandboxes", "0"], ["--hours", "-1"], ["--jitter", "1.5"], ["--ssm-ttl", "-5"]]
)
def test_cli_refuses_values_the_model_cannot_mean(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "must" in capsys.readouterr().err


def test_cli_prints_the_table_and_writes_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet.__main__ import main

    plot = tmp_path / "fleet.png"
    args = ["--sandboxes", "30", "--hours", "0.5", "--shape", "burst", "--ssm-ttl", "60"]
    assert main([*args, "--jobs", "1", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "defaults" in out and "yours" in out and "Recommendation:" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
