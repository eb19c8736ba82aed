"""`./build.sh fleet [options]`: simulate a fleet under cache policies; table, plot, recommendation.

With no policy option it compares a set of policies (COMPARISON) on the fleet; with any policy
option it runs that one policy next to the extension's defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .model import DAY, SHAPES, Fleet, Limits, Policy
from .plot import write_plot
from .report import legend, recommend, summarize, table
from .simulator import Result, simulate

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PLOT = REPO / "dist" / "fleet.png"

COMPARISON = (
    Policy("defaults"),
    Policy("no-jitter", jitter=0.0),
    Policy("no-refresh-ahead", refresh_ahead=0.0),
    Policy("prefetch", prefetch=True),
    Policy("batch", batch=True),
    Policy("ttl-900", ssm_ttl=900, sm_ttl=900),
    Policy("ttl-3600", ssm_ttl=3600, sm_ttl=3600),
    Policy("ttl-3600+prefetch", ssm_ttl=3600, sm_ttl=3600, prefetch=True),
    Policy("no-cache", ssm_ttl=0, sm_ttl=0),
    Policy("no-throttle-memory", throttle_backoff=0.0),
)

_POLICY_OPTIONS = (
    "ssm_ttl",
    "sm_ttl",
    "jitter",
    "refresh_ahead",
    "prefetch",
    "batch",
    "max_stale",
    "not_found_ttl",
    "throttle_backoff",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="./build.sh fleet",
        description="Simulate a fleet of Lambda sandboxes running secretcache against AWS's "
        "rate limits: upstream calls/s, throttling, failed reads and monthly cost per policy.",
    )
    f = p.add_argument_group("fleet")
    f.add_argument("--sandboxes", type=int, default=1000, help="concurrent sandboxes (peak)")
    f.add_argument("--shape", choices=SHAPES, default="daily")
    f.add_argument(
        "--invocations",
        type=float,
        default=None,
        help="fleet invocations/s at the peak (default: one per sandbox per second)",
    )
    f.add_argument("--lifetime", type=float, default=7200.0, help="mean sandbox life, seconds")
    f.add_argument("--ssm-items", type=int, default=3, help="parameters read per invocation")
    f.add_argument("--sm-items", type=int, default=1, help="secrets read per invocation")
    f.add_argument("--missing-items", type=int, default=0, help="not-found reads per invocation")
    f.add_argument("--hours", type=float, default=None, help="simulated time (default 24)")
    f.add_argument(
        "--event-at",
        type=float,
        default=None,
        help="seconds: when a burst starts or a deploy replaces every sandbox "
        "(with --shape daily: a deploy then; default comparison: at the peak)",
    )
    f.add_argument("--spread", type=float, default=10.0, help="seconds a burst/deploy takes")
    f.add_argument(
        "--trough", type=float, default=0.2, help="daily curve: night's sandboxes / peak's"
    )
    lim = p.add_argument_group("AWS limits")
    lim.add_argument("--ssm-tps", type=float, default=40.0)
    lim.add_argument("--sm-tps", type=float, default=10_000.0, help="GetSecretValue TPS")
    lim.add_argument("--sm-batch-tps", type=float, default=100.0, help="BatchGetSecretValue TPS")
    lim.add_argument(
        "--higher-throughput",
        action="store_true",
        help="Parameter Store's paid tier: 3,000 TPS unless --ssm-tps says otherwise; billed",
    )
    pol = p.add_argument_group("one policy instead of the comparison (defaults: the extension's)")
    pol.add_argument("--ssm-ttl", type=float)
    pol.add_argument("--sm-ttl", type=float)
    pol.add_argument("--jitter", type=float, help="what-if: the extension fixes it")
    pol.add_argument("--refresh-ahead", type=float, help="what-if: the extension fixes it")
    pol.add_argument("--prefetch", action="store_true", default=None)
    pol.add_argument("--batch", action="store_true", default=None)
    pol.add_argument("--max-stale", type=float, help="0 turns stale-on-error off")
    pol.add_argument("--not-found-ttl", type=float)
    pol.add_argument(
        "--throttle-backoff",
        type=float,
        help="SECRETCACHE_THROTTLE_BACKOFF_SECONDS; 0: every read of an expired item retries",
    )
    out = p.add_argument_group("output")
    out.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    out.add_argument("--seed", type=int, default=1)
    out.add_argument(
        "--dt",
        type=float,
        default=None,
        help="time step, seconds (default 1 over 4 h, else 0.1; in an overload 0.1 is closer: "
        "in a 1 s step a retry early in the step passes the bucket before calls made later)",
    )
    out.add_argument("--jobs", type=int, default=2, help="policies simulated in parallel")
    val = p.add_argument_group("validation against real extension processes")
    val.add_argument("--validate", action="store_true", help="run the full validation instead")
    val.add_argument("--processes", type=int, default=30)
    val.add_argument("--seconds", type=float, default=40.0)
    return p


def fleet_from(args: argparse.Namespace, comparison: bool) -> Fleet:
    hours = args.hours if args.hours is not None else 24.0
    event_at = args.event_at
    if event_at is None and comparison and args.shape == "daily":
        event_at = DAY / 2  # the default comparison deploys at the daily peak
    return Fleet(
        sandboxes=args.sandboxes,
        shape=args.shape,
        invocations_per_second=args.invocations if args.invocations is not None else args.sandboxes,
        lifetime=args.lifetime,
        ssm_items=args.ssm_items,
        sm_items=args.sm_items,
        missing_items=args.missing_items,
        horizon=hours * 3600.0,
        event_at=event_at,
        spread=args.spread,
        trough=args.trough,
    )


def policies_from(args: argparse.Namespace) -> tuple[Policy, ...]:
    chosen = {k: getattr(args, k) for k in _POLICY_OPTIONS if getattr(args, k) is not None}
    if not chosen:
        return COMPARISON
    return (Policy("defaults"), Policy("yours", **chosen))


def _run(job: tuple[Fleet, Policy, Limits, int, float | None]) -> Result:
    fleet, policy, limits, seed, dt = job
    return simulate(fleet, policy, limits, seed=seed, dt=dt)


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse values the model cannot mean (argparse exits with status 2 and the reason)."""
    positive = ("sandboxes", "lifetime", "ssm_tps", "sm_tps", "sm_batch_tps")
    for name in positive:
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be more than 0")
    not_negative = (
        "invocations", "ssm_items", "sm_items", "missing_items", "spread", "event_at",
        "ssm_ttl", "sm_ttl", "jitter", "refresh_ahead", "max_stale", "not_found_ttl",
        "throttle_backoff",
    )  # fmt: skip
    for name in not_negative:
        value = getattr(args, name)
        if value is not None and value < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if args.dt is not None and not 0 < args.dt <= 1:
        p.error("--dt must be more than 0 and at most 1")
    if args.hours is not None and args.hours <= 0:
        p.error("--hours must be more than 0")
    if not 0 <= args.trough <= 1:
        p.error("--trough must be between 0 and 1")
    for name in ("jitter", "refresh_ahead"):
        value = getattr(args, name)
        if value is not None and value >= 1:
            p.error(f"--{name.replace('_', '-')} must be below 1 (a share of the TTL)")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    _check(p, args)
    if args.validate:
        from .validate import main as validate_main

        return validate_main(args.processes, args.seconds, args.seed)
    policies = policies_from(args)
    fleet = fleet_from(args, policies is COMPARISON)
    ssm_tps = args.ssm_tps
    if args.higher_throughput and ssm_tps == 40.0:
        ssm_tps = 3000.0
    limits = Limits(
        ssm_tps=ssm_tps,
        sm_get_tps=args.sm_tps,
        sm_batch_tps=args.sm_batch_tps,
        ssm_higher_throughput=args.higher_throughput,
    )
    started = time.monotonic()
    jobs = [(fleet, p, limits, args.seed, args.dt) for p in policies]
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(_run, jobs))
    else:
        results = [_run(j) for j in jobs]
    elapsed = time.monotonic() - started
    summaries = [summarize(r) for r in results]
    deploy = f", deploy at {fleet.event_at / 3600:g} h" if fleet.event_at is not None else ""
    title = (
        f"{fleet.sandboxes:,} sandboxes ({fleet.shape}{deploy}), "
        f"{fleet.invocations_per_second:,.0f} invocations/s at peak, "
        f"{fleet.ssm_items} parameter(s) + {fleet.sm_items} secret(s)"
        + (f" + {fleet.missing_items} not-found" if fleet.missing_items else "")
        + f" per invocation; Parameter Store limit {limits.ssm_tps:g}/s"
    )
    print(title)
    print(
        f"{fleet.horizon / 3600:g} h simulated, seed {args.seed}, "
        f"{sum(r.events for r in results):,} events in {elapsed:.1f} s "
        f"({results[0].cold_starts:,} cold starts per policy)\n"
    )
    print(table(summaries))
    print("\npolicies:")
    print(legend(summaries))
    print(
        "\ncalls: attempts sent to AWS, throttled ones included; reads: item reads by handlers;"
        "\nwaited: answered by AWS while the handler waited; failed: an error after every retry;"
        "\nstale: an expired value after every retry failed; $/month: answered calls, 730 h,"
        "\n$0.05 per 10,000 (Secrets Manager; Parameter Store only with --higher-throughput)."
    )
    print("\n" + recommend(summaries, fleet, limits))
    path = write_plot(results, args.plot, title)
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
