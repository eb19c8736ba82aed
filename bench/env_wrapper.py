"""What the exec wrapper adds to INIT: cold starts without it, with it and no reference, and with
1, 10 and 50 references (each a secret of its own, so 50 references are 50 secrets), and, to
compare, no wrapper with a function that reads one secret through secretcache_client at import.

Every cold start is a fresh sandbox on the emulator with a function that does nothing at import,
so the runtime's INIT (runtime exec -> its first ``invocation/next``) is the runtime's start plus,
with the wrapper, the launcher, the wrapper's interpreter, the requests and the ``execve``. The
wrapper's requests wait for the extension to load the AWS SDK (it loads in the background from the
extension's start), which a function reading a secret at INIT waits for as well; the extension's
own ``sdk.loaded`` time is reported beside the figures. Variants are interleaved, so a load spike
on the machine falls on all of them alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from tools.emulator import LambdaEmulator
from tools.net import free_port

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WRAPPER = "/opt/secretcache/exec-wrapper"
REFERENCE_COUNTS = (1, 10, 50)


def secret_name(i: int) -> str:
    return f"bench/env/{i:02d}"


def seed(moto: Any) -> None:
    sm = moto.client("secretsmanager")
    for i in range(max(REFERENCE_COUNTS)):
        sm.create_secret(Name=secret_name(i), SecretString=f"env-bench-value-{i:02d}")


#: The comparison: no wrapper, the function reads one secret through secretcache_client at import.
HANDLER_READS_ONE = -1


def variant_env(references: int | None) -> dict[str, str]:
    """None: no wrapper; 0: the wrapper with nothing to resolve; N: N references;
    HANDLER_READS_ONE: no wrapper, the handler reads one secret at INIT instead."""
    if references is None:
        return {}
    if references == HANDLER_READS_ONE:
        return {"BENCH_SECRET_ID": secret_name(0)}
    env = {"AWS_LAMBDA_EXEC_WRAPPER": WRAPPER}
    for i in range(references):
        env[f"BENCH_SECRET_{i:02d}"] = f"{{{{resolve:secretsmanager:{secret_name(i)}}}}}"
    return env


def cold_start(layer_dir: Path, moto_url: str, references: int | None) -> dict[str, Any]:
    env = {
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
        "PYTHONDONTWRITEBYTECODE": "1",
        **variant_env(references),
    }
    handler = "init_reader.handler" if references == HANDLER_READS_ONE else "noop.handler"
    with LambdaEmulator(
        layer_dir, FIXTURES, handler, env, endpoint_url=moto_url, init_timeout=30.0
    ) as emu:
        report = emu.init()
        records = []
        for line in emu.logs.lines():
            if line.text.startswith("{"):
                try:
                    records.append(json.loads(line.text))
                except ValueError:
                    continue
        ext = report.extensions["secretcache"]
        runtime_exec = emu.phases.first("runtime.exec")
    resolved = next((r for r in records if r.get("event") == "env.resolved"), None)
    sdk: dict[str, Any] = next((r for r in records if r.get("event") == "sdk.loaded"), {})
    if references and references > 0 and (resolved is None or resolved.get("unresolved")):
        raise RuntimeError(f"the wrapper did not resolve {references} references: {resolved}")
    assert runtime_exec is not None and ext.exec_at is not None
    return {
        "runtime_init_ms": report.runtime_init_ms,
        "init_duration_ms": report.duration_ms,
        "wrapper_ms": resolved.get("ms") if resolved else None,
        "requests": resolved.get("requests") if resolved else None,
        "exec_to_runtime_exec_ms": (runtime_exec.t - ext.exec_at) * 1000.0,
        "exec_to_sdk_loaded_ms": sdk.get("msSinceStart"),
    }


def measure(layer_dir: Path, moto: Any, count: int, note: Any = print) -> dict[str, Any]:
    """``count`` interleaved cold starts of each variant; medians and p99 of every figure."""
    seed(moto)
    variants: dict[str, int | None] = {"no_wrapper": None, "wrapper_0": 0}
    variants.update({f"wrapper_{n}": n for n in REFERENCE_COUNTS})
    variants["handler_reads_1"] = HANDLER_READS_ONE
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    started = time.monotonic()
    for _ in range(count):
        for name, references in variants.items():
            samples[name].append(cold_start(layer_dir, moto.url, references))
    note(f"env wrapper: {count} cold starts x {len(variants)} variants")
    out: dict[str, Any] = {"count": count, "seconds": round(time.monotonic() - started, 1)}
    for name, rows in samples.items():
        out[name] = {
            key: summary([r[key] for r in rows if r[key] is not None])
            for key in rows[0]
            if any(r[key] is not None for r in rows)
        }
    base = out["no_wrapper"]["runtime_init_ms"]["median"]
    out["added_ms"] = {
        name: round(out[name]["runtime_init_ms"]["median"] - base, 1)
        for name in variants
        if name != "no_wrapper"
    }
    return out


def render(env: dict[str, Any]) -> list[str]:
    """The bench table's section."""

    def cell(stats: dict[str, Any] | None) -> str:
        if not stats:
            return "-"
        return f"{stats['median']:.1f} / {stats['p99']:.1f}"

    lines = [
        "",
        f"ENV WRAPPER  AWS_LAMBDA_EXEC_WRAPPER, {env['count']} cold starts each, ms median / p99",
        f"  {'':<36}{'runtime INIT':>18}{'added (median)':>16}{'wrapper own':>18}"
        f"{'requests':>10}{'ext SDK loaded':>18}",
    ]
    labels = {"no_wrapper": "no wrapper", "wrapper_0": "wrapper, 0 refs"}
    labels.update({f"wrapper_{n}": f"wrapper, {n} refs" for n in REFERENCE_COUNTS})
    labels["handler_reads_1"] = "no wrapper, handler reads 1 at INIT"
    for name, label in labels.items():
        if name not in env:
            continue  # a results file from before this variant existed
        row = env[name]
        added = env["added_ms"].get(name)
        requests = row.get("requests", {}).get("median") if row.get("requests") else None
        lines.append(
            f"  {label:<36}{cell(row.get('runtime_init_ms')):>18}"
            f"{'-' if added is None else f'{added:+.1f}':>16}{cell(row.get('wrapper_ms')):>18}"
            f"{'-' if requests is None else f'{requests:.0f}':>10}"
            f"{cell(row.get('exec_to_sdk_loaded_ms')):>18}"
        )
    lines.append(
        "  (runtime INIT = runtime exec -> first invocation/next; 'wrapper own' = the wrapper's "
        "interpreter start -> execve; the requests wait for the extension's SDK load)"
    )
    return lines
