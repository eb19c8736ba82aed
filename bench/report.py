"""The targets of issues 6, 11 and 13 evaluated against the measured figures, and the printed table.

Memory targets say "MB"; Lambda's memory settings are MiB, and so are the figures here.
"""

from __future__ import annotations

from typing import Any

# (key, what, unit, comparison, target, path into the results)
TARGETS: list[tuple[str, str, str, str, float, tuple[str, ...]]] = [
    (
        "exec_to_register",
        "exec -> register (median, .pyc)",
        "ms",
        "<=",
        20,
        ("startup", "lean_with_pyc", "exec_to_register_ms", "median"),
    ),
    (
        "exec_to_ready",
        "exec -> ready (median, .pyc)",
        "ms",
        "<=",
        170,
        ("startup", "lean_with_pyc", "exec_to_ready_ms", "median"),
    ),
    (
        "first_secret",
        "exec -> first secret at INIT (median, .pyc, lean)",
        "ms",
        "<=",
        100,
        ("startup", "lean_with_pyc", "exec_to_first_secret_ms", "median"),
    ),
    (
        "cpu_first_secret",
        "CPU to first secret, lean / SDK (medians)",
        "x",
        "<=",
        0.5,
        ("ratios", "cpu_to_first_secret_lean_over_sdk"),
    ),
    (
        "rss_three_services",
        "RSS after first read of all 3 services (lean)",
        "MiB",
        "<=",
        35,
        ("memory_by_service", "lean", "rss_after_kms_mib"),
    ),
    ("rss_ready", "RSS at ready", "MiB", "<=", 40, ("memory", "rss_ready_mib")),
    ("rss_sdk", "RSS once /health is ok", "MiB", "<=", 65, ("memory", "rss_sdk_loaded_mib")),
    (
        "rss_per_1000",
        "RSS added per 1000 entries of 4 KiB",
        "MiB",
        "<=",
        8,
        ("memory", "added_per_1000_entries_mib"),
    ),
    (
        "hit_p50",
        "hit via http.client keep-alive p50",
        "us",
        "<=",
        120,
        ("reads", "http_hit", "sequential", "median"),
    ),
    (
        "hit_p99",
        "hit via http.client keep-alive p99",
        "us",
        "<=",
        250,
        ("reads", "http_hit", "sequential", "p99"),
    ),
    (
        "throughput",
        "throughput, 8 connections",
        "req/s",
        ">=",
        30000,
        ("throughput", "extension_hit", "reads_per_s"),
    ),
    (
        "vs_boto3",
        "direct boto3 p50 / secretcache_client hit p50",
        "x",
        ">=",
        15,
        ("ratios", "boto3_over_client_hit"),
    ),
    (
        "vs_floor",
        "http.client hit p50 / bare loopback p50",
        "x",
        "<=",
        2.5,
        ("ratios", "http_hit_over_floor"),
    ),
    (
        "client_import",
        "handler with secretcache_client: import + 1st read",
        "ms",
        "<=",
        15,
        ("function_import", "secretcache_client", "import_and_first_call_ms", "median"),
    ),
]


#: Cold-start variants (bench/run.py startup_variants) and their column headings.
STARTUP_VARIANTS = {
    "sdk_with_pyc": "sdk .pyc",
    "lean_with_pyc": "lean .pyc",
    "sdk_without_pyc": "sdk no .pyc",
    "lean_without_pyc": "lean no .pyc",
    "with_pyc": "bundled .pyc",
    "without_pyc": "bundled no .pyc",
    "runtime_python": "runtime 3.13",
}


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Ratios of medians measured in this run (sequential reads)."""

    def p50(kind: str) -> float | None:
        return _dig(results, ("reads", kind, "sequential", "median"))

    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 1 if a / b >= 10 else 2)

    return {
        "boto3_over_client_hit": div(p50("boto3"), p50("client_hit")),
        "boto3_over_http_hit": div(p50("boto3"), p50("http_hit")),
        "http_hit_over_floor": div(p50("http_hit"), p50("floor")),
        "client_hit_over_floor": div(p50("client_hit"), p50("floor")),
        "client_hit_over_powertools": div(p50("client_hit"), p50("powertools")),
        "miss_over_boto3": div(p50("miss"), p50("boto3")),
        "cpu_to_first_secret_lean_over_sdk": div(
            _dig(results, ("startup", "lean_with_pyc", "cpu_ms_to_first_secret", "median")),
            _dig(results, ("startup", "sdk_with_pyc", "cpu_ms_to_first_secret", "median")),
        ),
    }


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    results["ratios"] = ratios(results)
    out = []
    for key, what, unit, op, target, path in TARGETS:
        figure = _dig(results, path)
        met = None
        if figure is not None:
            met = figure <= target if op == "<=" else figure >= target
        out.append(
            {
                "key": key,
                "what": what,
                "figure": figure,
                "unit": unit,
                "target": f"{op} {target:g}",
                "met": met,
            }
        )
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pair(s: dict[str, Any]) -> str:
    return f"{_f(s['median'])} / {_f(s['p99'])}"


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"secretcache bench  {meta['date_utc']}  commit {meta['git_commit']}"
        f"  layer sha256 {meta['layer_sha256']}",
        f"{meta['cpus']} CPUs, load average {meta['load_average_at_start']} -> "
        f"{meta.get('load_average_at_end')}, extension Python "
        f"{meta['extension_python']}, {meta['wrk'] or 'no wrk'}; took {meta['duration_s']} s",
    ]
    su = results.get("startup")
    if su:
        variants = [v for v in STARTUP_VARIANTS if v in su]
        lines += [
            "",
            f"START-UP  ms from the extension's exec, {su['count']} cold starts each"
            "                 median / p99",
            f"  {'':<46}" + "".join(f"{STARTUP_VARIANTS[v]:>16}" for v in variants),
        ]
        rows = [
            ("exec -> main() (launcher + interpreter)", "exec_to_main_ms"),
            ("exec -> register", "exec_to_register_ms"),
            ("exec -> listening (serving reads)", "exec_to_listening_ms"),
            ("exec -> ready (event/next)", "exec_to_ready_ms"),
            ("exec -> AWS client ready (background)", "exec_to_sdk_loaded_ms"),
            ("exec -> runtime started", "exec_to_runtime_exec_ms"),
            ("exec -> first secret served (read at INIT)", "exec_to_first_secret_ms"),
            ("CPU ms used, exec -> first secret", "cpu_ms_to_first_secret"),
            ("RSS MiB when the first secret is served", "rss_mib_at_first_secret"),
            ("INIT duration (extension + runtime)", "init_duration_ms"),
        ]
        for label, key in rows:
            cells = []
            for variant in variants:
                s = su[variant].get(key) or {}
                cells.append(f"{_f(s.get('median'))} / {_f(s.get('p99'))}" if s else "-")
            lines.append(f"  {label:<46}" + "".join(f"{c:>16}" for c in cells))
        b = su.get("bare_interpreter_spawn_to_exit_ms") or {}
        if "median" in b:  # results written before the bundled interpreter
            b = {"runtime_python": b}
        bundled, runtime = b.get("bundled") or {}, b.get("runtime_python") or {}
        lines.append(
            f"  {'baseline: python -S -c pass, spawn -> exit':<46}"
            f"bundled {_f(bundled.get('median'))} / {_f(bundled.get('p99'))}, "
            f"runtime 3.13 {_f(runtime.get('median'))} / {_f(runtime.get('p99'))}"
        )
        if "lean_with_pyc" in su:
            lines.append(
                "  sdk / lean = SECRETCACHE_UPSTREAM on the layer's own Debian 3.13 (bundled)"
            )
        if su.get("runtime_python_path"):
            upstream = "lean" if "lean_with_pyc" in su else "the extension"
            lines.append(
                f"  runtime 3.13 = {upstream} on {su['runtime_python_path']} (SECRETCACHE_PYTHON),"
                " as on the python3.13 runtime"
            )
    mbs = results.get("memory_by_service")
    if mbs:
        ups = [u for u in ("sdk", "lean") if u in mbs]
        lines += [
            "",
            "MEMORY BY SERVICE  extension RSS (MiB) after the first read of each service in turn,"
            " bundled interpreter",
            f"  {'':<50}" + "".join(f"{u:>10}" for u in ups),
        ]
        for label, key in (
            ("at ready (event/next)", "rss_ready_mib"),
            ("after the first Secrets Manager read", "rss_after_secretsmanager_mib"),
            ("after the first SSM read", "rss_after_ssm_mib"),
            ("after the first KMS decrypt", "rss_after_kms_mib"),
            ("settled (/health ok, background loads done)", "rss_settled_mib"),
            ("CPU s used after the three reads", "cpu_s_after_three_reads"),
            ("CPU s used, settled", "cpu_s_settled"),
        ):
            lines.append(
                f"  {label:<50}"
                + "".join(f"{_f(mbs[u].get(key), 2 if 'cpu' in key else 1):>10}" for u in ups)
            )
    mem = results.get("memory")
    if mem:
        lines += [
            "",
            "MEMORY  extension RSS (VmRSS), MiB, the default upstream",
            f"  {'at ready (event/next)':<50}{_f(mem['rss_ready_mib']):>10}",
            f"  {'once /health is ok':<50}{_f(mem['rss_sdk_loaded_mib']):>10}",
            f"  {'after the first read':<50}{_f(mem['rss_after_first_read_mib']):>10}",
            f"  {'after /metrics (an aiohttp route: loads it)':<50}"
            f"{_f(mem.get('rss_after_aiohttp_mib')):>10}",
            f"  {'after ' + str(mem['fill']['secrets']) + ' cached entries of 4 KiB':<50}"
            f"{_f(mem['rss_after_fill_mib']):>10}",
            f"  {'added per 1000 entries':<50}{_f(mem['added_per_1000_entries_mib']):>10}",
        ]
    by = results.get("memory_by_interpreter")
    if by:
        lines += [
            "",
            "MEMORY BY INTERPRETER  extension RSS, MiB, lean upstream"
            f"{'bundled':>18}{'runtime 3.13':>14}",
        ]
        for label, key in (
            ("at ready", "rss_ready_mib"),
            ("once /health is ok", "rss_sdk_loaded_mib"),
        ):
            bundled = (by.get("bundled") or by.get("with_pyc") or {}).get(key)
            runtime = (by.get("runtime_python") or {}).get(key)
            lines.append(f"  {label:<50}{_f(bundled):>10}{_f(runtime):>14}")
    reads = results.get("reads")
    if reads:
        names = {
            "client_hit": "hit, secretcache_client.get_secret",
            "http_hit": "hit, raw http.client keep-alive",
            "miss": "miss (refreshNow=true -> moto), lean",
            "miss_sdk": "miss (refreshNow=true -> moto), SDK",
            "miss_rotation": "miss, lean, SECRETCACHE_ROTATION_AWARE",
            "boto3": "direct boto3 get_secret_value -> moto",
            "powertools": "Powertools get_secret (in-process cache)",
            "floor": "floor: bare asyncio loopback HTTP",
        }
        lines += [
            "",
            "READS  us per read seen by a handler (response body "
            f"{reads['hit_response_body_bytes']} bytes)",
            f"  {'':<42}{'1 client':^27}{'8 concurrent clients':^27}",
            f"  {'':<42}{'p50':>8}{'p99':>9}{'reads/s':>10}{'p50':>8}{'p99':>9}{'reads/s':>10}",
        ]
        for kind, label in names.items():
            if kind not in reads:
                continue
            s, c = reads[kind]["sequential"], reads[kind]["concurrent_8"]
            lines.append(
                f"  {label:<42}{_f(s['median']):>8}{_f(s['p99']):>9}{_f(s['reads_per_s']):>10}"
                f"{_f(c['median']):>8}{_f(c['p99']):>9}{_f(c['reads_per_s']):>10}"
            )
        cpu = {
            k: (reads.get(k) or {}).get("sequential", {}).get("server_cpu_us_per_read")
            for k in ("miss", "miss_sdk", "miss_rotation")
        }
        if cpu["miss"] is not None:
            lines.append(
                f"  extension CPU per miss (1 client): lean {_f(cpu['miss'])} us, "
                f"SDK {_f(cpu['miss_sdk'])} us, "
                f"lean rotation-aware {_f(cpu['miss_rotation'])} us"
            )
        r = results.get("ratios") or {}
        lines.append(
            f"  ratios (p50, same run): boto3/client hit {_f(r.get('boto3_over_client_hit'))}x, "
            f"boto3/http hit {_f(r.get('boto3_over_http_hit'))}x, "
            f"http hit/floor {_f(r.get('http_hit_over_floor'), 2)}x, "
            f"client hit/floor {_f(r.get('client_hit_over_floor'), 2)}x, "
            f"client hit/Powertools {_f(r.get('client_hit_over_powertools'), 1)}x"
        )
    tp = results.get("throughput")
    if tp:
        lines += ["", f"THROUGHPUT  8 connections ({tp['extension_hit']['tool']})"]
        lines.append(
            f"  {'':<34}{'req/s':>10}{'p50 us':>9}{'p99 us':>9}"
            f"{'server CPU us/req':>19}{'CPU share':>11}"
        )
        for name, label in (
            ("extension_hit", "extension, cache hit"),
            ("aiohttp_bare", "bare aiohttp app (one route)"),
            ("floor", "floor (bare asyncio protocol)"),
        ):
            t = tp.get(name) or {}
            if not t:
                continue
            extra = (
                f"{_f(t.get('p50_us')):>9}{_f(t.get('p99_us')):>9}"
                f"{_f(t.get('server_cpu_us_per_request')):>19}"
                f"{_f(t.get('server_cpu_share'), 2):>11}"
            )
            if t.get("non_2xx"):
                extra += f"   NON-2xx {t['non_2xx']}"
            if t.get("socket_errors"):
                extra += f"   socket errors: {t['socket_errors']}"
            lines.append(f"  {label:<34}{_f(t.get('reads_per_s')):>10}{extra}")
    fi = results.get("function_import")
    if fi:
        lines += [
            "",
            "FUNCTION'S OWN COLD START  handler module in a fresh interpreter, median / p99",
            f"  {'':<20}{'import ms':>16}{'first read ms':>16}{'import+read ms':>16}"
            f"{'RSS after MiB':>15}{'RSS added MiB':>15}",
        ]
        for name, row in fi.items():
            lines.append(
                f"  {name:<20}{_pair(row['import_ms']):>16}{_pair(row['first_call_ms']):>16}"
                f"{_pair(row['import_and_first_call_ms']):>16}"
                f"{_f(row['rss_after_call_mib']['median']):>15}"
                f"{_f(row['rss_added_mib']['median']):>15}"
            )
    profiles = results.get("import_profile") or {}
    if "exec_to_ready_ms" in profiles:  # a run from before the upstream comparison
        profiles = {"sdk": profiles}
    for upstream, prof in profiles.items():
        lines += [
            "",
            f"START-UP IMPORTS ({upstream})  one cold start under -X importtime "
            f"(exec -> ready {_f(prof['exec_to_ready_ms'])} ms with the profiler on)",
            "  before event/next (top-level, cumulative ms): "
            + ", ".join(
                f"{r['module']} {r['cumulative_ms']:.1f}" for r in prof["critical_path_top"][:8]
            ),
            "  after (background threads): "
            + ", ".join(
                f"{r['module']} {r['cumulative_ms']:.1f}" for r in prof["after_ready_top"][:5]
            ),
        ]
    if results.get("env_wrapper"):
        from bench.env_wrapper import render as render_env_wrapper

        lines += render_env_wrapper(results["env_wrapper"])
    targets = results.get("targets") or []
    if targets:
        lines += ["", "TARGETS", f"  {'':<52}{'measured':>14}{'target':>16}"]
        for t in targets:
            status = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            lines.append(
                f"  {t['what']:<52}{_f(t['figure']) + ' ' + t['unit']:>14}"
                f"{t['target'] + ' ' + t['unit']:>16}  {status}"
            )
    return "\n".join(lines)
