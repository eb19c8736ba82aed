"""Validation: the simulator's predictions against real extension processes.

N real `python -m secretcache` processes (standalone mode, each one sandbox) read from moto
server through the fault proxy, whose token bucket throttles Parameter Store at a small TPS.
One thread per sandbox plays its invocations: the first at a uniform time in the first
`spread` seconds, then a Poisson stream, each reading the same parameters and secret in turn.
The proxy counts every upstream attempt and every one it throttled; the threads count reads
answered 429 (failed) and answers marked X-Secretcache-Stale. The simulator runs the same
scenario (same N, rate, TTL, limit and the measured upstream latency) over several seeds and
its mean is compared with what was measured, within the stated tolerances. Loopback only.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from secretcache.backends import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS

from tests.support.extension_process import ExtensionProcess
from tests.support.fault_proxy import Fault, FaultProxy
from tools.moto_server import MotoServer

from .model import API_SM_GET, API_SSM, Fleet, Limits, Policy
from .simulator import simulate

SSM_PREFIX = "AmazonSSM."
SM_PREFIX = "secretsmanager."


@dataclass(frozen=True)
class Scenario:
    """A scaled-down fleet that a 2-core machine can run for real in well under a minute."""

    processes: int = 30
    seconds: float = 40.0
    rate: float = 1.0  # invocations/s per sandbox
    ttl: float = 10.0  # both services
    ssm_tps: float = 8.0
    ssm_items: int = 3
    sm_items: int = 1
    spread: float = 2.0

    def fleet(self, latency: float, throttle_latency: float | None = None) -> Fleet:
        return Fleet(
            sandboxes=self.processes,
            shape="burst",
            invocations_per_second=self.processes * self.rate,
            lifetime=1e9,
            ssm_items=self.ssm_items,
            sm_items=self.sm_items,
            horizon=self.seconds,
            event_at=0.0,
            spread=self.spread,
            latency=latency,
            throttle_latency=throttle_latency,
        )

    def policy(self) -> Policy:
        return Policy("defaults", ssm_ttl=self.ttl, sm_ttl=self.ttl)

    def limits(self) -> Limits:
        return Limits(ssm_tps=self.ssm_tps, burst=1.0)


#: (metric, relative tolerance, absolute tolerance): measured passes if within either.
TOLERANCES = (
    ("ssm answered", 0.15, 10.0),
    ("ssm attempts", 0.35, 20.0),
    ("ssm throttled", 0.40, 20.0),
    ("ssm peak/s", 0.50, 5.0),
    ("sm attempts", 0.15, 10.0),
    ("reads failed", 0.60, 10.0),
    ("failed+stale", 0.30, 10.0),
)


@dataclass
class Figures:
    values: dict[str, float] = field(default_factory=dict)
    ssm_per_second: list[float] = field(default_factory=list)


@dataclass
class Comparison:
    scenario: Scenario
    measured: Figures
    predicted: Figures
    predicted_range: dict[str, tuple[float, float]]
    latency: float
    throttle_latency: float
    wall_seconds: float

    def rows(self) -> list[tuple[str, float, float, str, bool]]:
        out = []
        for name, rel, absolute in TOLERANCES:
            m, p = self.measured.values[name], self.predicted.values[name]
            ok = abs(m - p) <= max(rel * p, absolute)
            out.append((name, m, p, f"±{rel:.0%} or ±{absolute:g}", ok))
        return out

    @property
    def ok(self) -> bool:
        return all(r[4] for r in self.rows())

    def text(self) -> str:
        s = self.scenario
        lines = [
            f"validation: {s.processes} extension processes, {s.seconds:g} s, {s.rate:g} "
            f"invocations/s each, {s.ssm_items} parameters + {s.sm_items} secret per invocation,"
            f" TTL {s.ttl:g} s, Parameter Store limited to {s.ssm_tps:g}/s by the proxy;"
            f" measured: a read {self.latency * 1000:.0f} ms, a throttled attempt"
            f" {self.throttle_latency * 1000:.0f} ms; {self.wall_seconds:.0f} s",
            f"{'metric':<14} {'measured':>9} {'predicted':>9} {'sim range':>13}  tolerance      ok",
        ]
        for name, m, p, tol, ok in self.rows():
            lo, hi = self.predicted_range[name]
            lines.append(
                f"{name:<14} {m:>9.0f} {p:>9.1f} {f'{lo:.0f}-{hi:.0f}':>13}  {tol:<14} "
                f"{'yes' if ok else 'NO'}"
            )
        lines.append(
            "reads: measured "
            + ", ".join(f"{k} {self.measured.values[k]:.0f}" for k in ("reads", "reads stale"))
            + "; predicted "
            + ", ".join(f"{k} {self.predicted.values[k]:.0f}" for k in ("reads", "reads stale"))
        )
        return "\n".join(lines)


def _seed_aws(moto: MotoServer, s: Scenario) -> tuple[list[str], list[str]]:
    ssm, sm = moto.client("ssm"), moto.client("secretsmanager")
    tag = f"fleet{random.randrange(10**8)}"
    params = [f"/{tag}/p{i}" for i in range(s.ssm_items)]
    secrets_ = [f"{tag}-s{i}" for i in range(s.sm_items)]
    for name in params:
        ssm.put_parameter(Name=name, Value="v", Type="String")
    for name in [*secrets_, f"{tag}-probe"]:
        sm.create_secret(Name=name, SecretString="v")
    ssm.put_parameter(Name=f"/{tag}/probe", Value="v", Type="String")
    return params, secrets_


def _drive(
    ext: ExtensionProcess,
    paths: list[str],
    start: float,
    s: Scenario,
    rng: random.Random,
    out: list[tuple[float, int, bool]],
) -> None:
    """One sandbox: invocations at Poisson times, each reading every item in turn."""
    at = start + rng.random() * s.spread
    stop = start + s.seconds
    while at < stop:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for path in paths:
            try:
                result = ext.get(path, timeout=15.0)
                out.append(
                    (
                        time.monotonic() - start,
                        result.status,
                        "x-secretcache-stale" in result.headers,
                    )
                )
            except OSError:
                out.append((time.monotonic() - start, 0, False))
        at += rng.expovariate(s.rate)


def measure(s: Scenario, seed: int = 1) -> tuple[Figures, float, float]:
    """Run the scenario on real processes: the figures, the median read latency and the time a
    throttled attempt takes."""
    moto = MotoServer().start()
    proxy = FaultProxy(moto.port).start()
    extensions: list[ExtensionProcess] = []
    try:
        params, secret_ids = _seed_aws(moto, s)
        paths = [f"/systemsmanager/parameters/get?name={p}" for p in params] + [
            f"/secretsmanager/get?secretId={x}" for x in secret_ids
        ]
        env = {
            **moto.env(),
            "AWS_ENDPOINT_URL": proxy.url,
            "SSM_PARAMETER_STORE_TTL": f"{s.ttl:g}",
            "SECRETS_MANAGER_TTL": f"{s.ttl:g}",
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "error",
        }
        for _ in range(s.processes):
            ext = ExtensionProcess(dict(env))
            extensions.append(ext.start(wait=False))
        for ext in extensions:
            ext.wait_ready(timeout=120.0)
        # Every process makes its first call of each service on an item nobody reads later
        # (a fresh process's first call is slow; a Lambda sandbox's INIT would absorb it), and
        # the median time of one upstream read through the proxy is the simulator's latency.
        tag = params[0].split("/")[1]
        probe_name = f"/{tag}/probe"
        probe = []
        for ext in extensions:
            ext.get(f"/secretsmanager/get?secretId={tag}-probe")
            t = time.monotonic()
            ext.get(f"/systemsmanager/parameters/get?name={probe_name}")
            probe.append(time.monotonic() - t)
        # Time from a throttled attempt to the next one, less the mean first backoff: what a
        # throttled answer costs the extension (it skips moto, so it is quicker than a read).
        gaps = []
        for ext in extensions:
            proxy.reset_counts()
            proxy.set_fault(Fault.throttle(), count=1, identifier=probe_name)
            ext.get(f"/systemsmanager/parameters/get?name={probe_name}&refreshNow=true")
            starts = sorted(c.started for c in proxy.calls(identifier=probe_name))
            if len(starts) >= 2:
                gaps.append(starts[1] - starts[0])
        proxy.clear()
        first_backoff = 0.5 * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2)
        throttle_latency = max(0.001, statistics.mean(gaps) - first_backoff)
        proxy.set_rate_limit(s.ssm_tps, target_prefix=SSM_PREFIX)
        proxy.reset_counts()
        start = time.monotonic()
        reads: list[list[tuple[float, int, bool]]] = [[] for _ in extensions]
        threads = [
            threading.Thread(
                target=_drive, args=(ext, paths, start, s, random.Random(seed * 1000 + i), reads[i])
            )
            for i, ext in enumerate(extensions)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(s.seconds + 60)
        calls = [c for c in proxy.calls() if c.started >= start]
    finally:
        for ext in extensions:
            ext.stop(timeout=5.0)
        proxy.stop()
        moto.stop()
    ssm = [c for c in calls if c.target.startswith(SSM_PREFIX) and c.started - start < s.seconds]
    sm = [c for c in calls if c.target.startswith(SM_PREFIX) and c.started - start < s.seconds]
    per_s = np.bincount([int(c.started - start) for c in ssm], minlength=int(s.seconds))[
        : int(s.seconds)
    ]
    answered_reads = [r for rs in reads for r in rs if r[0] < s.seconds + 15]
    throttled = sum(c.fault == "rate" for c in ssm)
    figures = Figures(
        values={
            "ssm attempts": float(len(ssm)),
            "ssm throttled": float(throttled),
            "ssm answered": float(len(ssm) - throttled),
            "ssm peak/s": float(per_s.max()),
            "sm attempts": float(len(sm)),
            "reads": float(len(answered_reads)),
            "reads failed": float(sum(r[1] == 429 for r in answered_reads)),
            "reads stale": float(sum(r[2] for r in answered_reads)),
            "failed+stale": float(sum(r[1] == 429 or r[2] for r in answered_reads)),
            "reads other errors": float(sum(r[1] not in (200, 429) for r in answered_reads)),
        },
        ssm_per_second=[float(x) for x in per_s],
    )
    # The probe's reads went extension -> proxy -> moto and back: about one upstream call.
    return figures, statistics.median(probe), throttle_latency


def predict(
    s: Scenario, latency: float, throttle_latency: float | None = None, seeds: int = 8
) -> tuple[Figures, dict[str, tuple[float, float]]]:
    runs = []
    fleet = s.fleet(latency, throttle_latency)
    for seed in range(1, seeds + 1):
        r = simulate(fleet, s.policy(), s.limits(), seed=seed, dt=0.05)
        calls, thr = r.calls.sum(1), r.throttled.sum(1)
        per_s = r.per_second(r.calls)[API_SSM]
        runs.append(
            {
                "ssm attempts": calls[API_SSM],
                "ssm throttled": thr[API_SSM],
                "ssm answered": calls[API_SSM] - thr[API_SSM],
                "ssm peak/s": float(per_s.max()),
                "sm attempts": calls[API_SM_GET],
                "reads": r.reads,
                "reads failed": r.failed,
                "reads stale": r.stale,
                "failed+stale": r.failed + r.stale,
                "_series": per_s,
            }
        )
    keys = [k for k in runs[0] if not k.startswith("_")]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    spread = {k: (float(min(r[k] for r in runs)), float(max(r[k] for r in runs))) for k in keys}
    series = np.mean([r["_series"] for r in runs], axis=0)
    return Figures(values=mean, ssm_per_second=[float(x) for x in series]), spread


def validate(s: Scenario, seed: int = 1) -> Comparison:
    started = time.monotonic()
    measured, latency, throttle_latency = measure(s, seed)
    predicted, spread = predict(s, latency, throttle_latency)
    return Comparison(
        s, measured, predicted, spread, latency, throttle_latency, time.monotonic() - started
    )


def main(processes: int, seconds: float, seed: int) -> int:
    comparison = validate(Scenario(processes=processes, seconds=seconds), seed)
    print(comparison.text())
    m, p = comparison.measured.ssm_per_second, comparison.predicted.ssm_per_second
    print("ssm calls/s, measured : " + " ".join(f"{x:.0f}" for x in m))
    print("ssm calls/s, predicted: " + " ".join(f"{x:.0f}" for x in p))
    print("PASS" if comparison.ok else "FAIL: outside the stated tolerance")
    return 0 if comparison.ok else 1
