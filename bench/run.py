"""``python -m bench [--quick]``: measure the built layer and print figures against the targets.

Order of the run (every process on loopback; moto server is AWS):
1. cold starts on the emulator, interleaved: both upstreams (``SECRETCACHE_UPSTREAM`` sdk and
   lean) on the bundled interpreter with the shipped ``.pyc``, lean without ``.pyc``, and lean
   on a runtime's python3.13 (SECRETCACHE_PYTHON);
2. one cold start per upstream under ``-X importtime`` (what the start-up spends importing);
   RSS at ready and once /health is ok, bundled interpreter versus the runtime's python3.13;
3. per upstream, RSS and CPU after the first read of each service (Secrets Manager, SSM, KMS);
4. one long-lived sandbox: RSS at ready, after the SDK loaded, after 1000 cached 4 KiB secrets;
5. read latency from handler-like worker processes, sequential and 8 at once, for the extension
   (hit via secretcache_client, hit via http.client, miss) and, in the same run, direct boto3,
   Powertools' cached get_secret and a bare asyncio loopback server (the floor); the miss
   again on an SDK-upstream sandbox;
6. throughput with 8 connections (wrk), against the extension and against the floor;
7. the function's own import: secretcache_client versus boto3 versus Powertools;
8. what the exec wrapper (secrets as environment variables) adds to INIT: 0, 1, 10, 50 references.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import env_wrapper, function_import, load, report, startup  # noqa: E402
from bench.memory import RssSampler, rss_kib  # noqa: E402
from bench.reads import Target, WorkerPool  # noqa: E402
from bench.stats import summary  # noqa: E402
from tools.cli import interrupts_as_exit  # noqa: E402

if TYPE_CHECKING:
    from tools.emulator import LambdaEmulator

LAYER_ZIP = REPO / "dist" / "secretcache-layer.zip"
RESULTS = Path(__file__).resolve().parent / "results.json"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"

HIT_SECRET = "bench/db-credentials"
# A typical secret: a small JSON document of database credentials (~120 bytes).
HIT_VALUE = json.dumps(
    {
        "engine": "postgres",
        "host": "db.internal.example",
        "port": 5432,
        "username": "app",
        "password": "c8f1e2a9-6b7d-4e3f-9a10-2f4b5c6d7e8f",
    }
)
BENCH_PARAMETER = "/bench/db-password"
FILL_COUNT = 1000
FILL_BYTES = 4096
MISS_SECRETS = tuple(f"bench/miss-{i}" for i in range(8))
#: The two ways of calling AWS, measured side by side (SECRETCACHE_UPSTREAM).
UPSTREAMS = ("sdk", "lean")
UPSTREAM_VAR = "SECRETCACHE_UPSTREAM"


def fill_name(i: int) -> str:
    return f"bench/fill/{i:04d}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (~1 minute)")
    parser.add_argument("--cold-starts", type=int, help="cold starts per variant (default 15)")
    parser.add_argument("--layer", default=str(LAYER_ZIP), help="the layer zip to measure")
    parser.add_argument("--out", default=str(RESULTS), help="where to write the JSON results")
    parser.add_argument(
        "--show", metavar="RESULTS_JSON", help="print the table of an earlier run and exit"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["startup", "reads", "imports", "envwrapper"],
        help="leave a section out (repeatable)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.plan = {
        "cold_starts": args.cold_starts or (5 if quick else 15),
        "hit_reads": 2000 if quick else 10000,
        "hit_reads_each_of_8": 500 if quick else 2000,
        "slow_reads": 100 if quick else 400,  # miss and boto3: each one goes to moto
        "slow_reads_each_of_8": 25 if quick else 100,
        "wrk_seconds": 2 if quick else 5,
        "import_repeats": 5 if quick else 15,
        "env_cold_starts": 3 if quick else 10,
    }
    return args


# ----------------------------------------------------------------------------- set-up


def seed_moto(moto: Any) -> str:
    """The hit secret, 8 small secrets for misses, 1000 secrets of 4 KiB for the memory fill,
    one SecureString parameter and one KMS ciphertext; returns the ciphertext (base64)."""
    import base64

    moto.client("ssm").put_parameter(
        Name=BENCH_PARAMETER, Value="c8f1e2a9-6b7d", Type="SecureString"
    )
    kms = moto.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"c8f1e2a9-6b7d")["CiphertextBlob"]
    sm = moto.client("secretsmanager")
    sm.create_secret(Name=HIT_SECRET, SecretString=HIT_VALUE)
    for name in MISS_SECRETS:
        sm.create_secret(Name=name, SecretString=HIT_VALUE)
        # Rotation on (moto: the next date a day away, the value kept), so that with
        # SECRETCACHE_ROTATION_AWARE every miss describes the secret, as for a rotating secret.
        sm.rotate_secret(
            SecretId=name, RotationRules={"AutomaticallyAfterDays": 1}, RotateImmediately=False
        )
    filler = "f" * FILL_BYTES

    def create(i: int) -> None:
        sm.create_secret(Name=fill_name(i), SecretString=filler[:-4] + f"{i:04d}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(FILL_COUNT)))
    return base64.b64encode(blob).decode("ascii")


def start_floor_server(
    body_size: int, mode: str = "asyncio", layer_dir: Path | None = None
) -> tuple[subprocess.Popen[str], int]:
    """The floor server as a process; ``aiohttp`` mode uses the layer's vendored aiohttp."""
    from tools.net import free_port

    port = free_port()
    env = dict(os.environ)
    argv = [sys.executable, "-m", "bench.floor_server", str(port), str(body_size), mode]
    if mode == "aiohttp" and layer_dir is not None:
        # The layer's vendored aiohttp on the layer's own interpreter, as the extension runs.
        lib = layer_dir / "secretcache" / "lib"
        tag = f"cp313-{os.uname().machine}"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(lib / tag), str(lib / "common")])
        argv[0:1] = [*startup.bundled_command(layer_dir), "-S"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "listening":
        proc.kill()
        raise RuntimeError("the floor server did not start")
    return proc, port


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(port: int, token: str, path: str) -> tuple[int, bytes]:
    from tools.net import http_request

    result = http_request(port, "GET", path, headers={TOKEN_HEADER: token}, timeout=30)
    return result.status, result.body


def post(port: int, token: str, path: str, document: dict[str, Any]) -> tuple[int, bytes]:
    from tools.net import http_request

    result = http_request(
        port,
        "POST",
        path,
        headers={TOKEN_HEADER: token, "Content-Type": "application/json"},
        body=json.dumps(document).encode(),
        timeout=30,
    )
    return result.status, result.body


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment_facts(layer_zip: Path, plan: dict[str, Any]) -> dict[str, Any]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=REPO).stdout.strip()
        except OSError:
            return ""

    wrk = run("wrk", "--version") if load.wrk_available() else ""
    with zipfile.ZipFile(layer_zip) as zf:
        bundled = [n for n in zf.namelist() if n == "secretcache/python/bin/python3.13"]
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": run("git", "rev-parse", "--short", "HEAD"),
        "git_dirty_paths": len(run("git", "status", "--porcelain").splitlines()),
        "layer_sha256": file_sha256(layer_zip)[:16],
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "extension_python": "bundled 3.13 (Debian)" if bundled else "none in the layer",
        "runtime_python": startup.runtime_python(),
        "bench_python": platform.python_version(),
        "wrk": wrk.splitlines()[0].split("[")[0].replace("debian/", "").strip() if wrk else None,
        "plan": plan,
    }


def note(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- sections


def startup_variants(layers: dict[str, Path]) -> dict[str, tuple[Path, dict[str, str | None]]]:
    """name -> (unpacked layer, function environment), four cold starts per round:

    - ``sdk_with_pyc`` / ``lean_with_pyc``: the two upstreams on the bundled interpreter and the
      shipped .pyc (issue 13's comparison);
    - ``lean_without_pyc``: the chosen upstream with every ``__pycache__`` removed;
    - ``runtime_python``: the chosen upstream on a python3.13 of this machine as
      SECRETCACHE_PYTHON (issue 11's bundled-vs-runtime comparison), where there is one.
    """
    bundled = dict(startup.BUNDLED)
    variants: dict[str, tuple[Path, dict[str, str | None]]] = {
        f"{upstream}_with_pyc": (layers["with_pyc"], {**bundled, UPSTREAM_VAR: upstream})
        for upstream in UPSTREAMS
    }
    variants["lean_without_pyc"] = (layers["without_pyc"], {**bundled, UPSTREAM_VAR: "lean"})
    python = startup.runtime_python()
    if python is not None:
        variants["runtime_python"] = (
            layers["with_pyc"],
            {"SECRETCACHE_PYTHON": python, UPSTREAM_VAR: "lean"},
        )
    return variants


def run_startup(layers: dict[str, Path], moto_url: str, count: int) -> dict[str, Any]:
    variants = startup_variants(layers)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    baselines: dict[str, list[str]] = {"bundled": startup.bundled_command(layers["with_pyc"])}
    python = startup.runtime_python()
    if python is not None:
        baselines["runtime_python"] = [python]
    bare: dict[str, list[float]] = {name: [] for name in baselines}
    for i in range(count):
        for name, (layer_dir, env) in variants.items():  # interleaved: drift hits all alike
            samples[name].append(startup.cold_start(layer_dir, moto_url, HIT_SECRET, extra_env=env))
        for name, command in baselines.items():
            bare[name].append(startup.bare_interpreter_ms(command))
        note(f"cold start {i + 1}/{count} ({', '.join(variants)})")
    out: dict[str, Any] = {"count": count, "runtime_python_path": python}
    for name, rows in samples.items():
        keys = rows[0].keys()
        out[name] = {key: summary([r[key] for r in rows if r[key] is not None], 1) for key in keys}
    out["bare_interpreter_spawn_to_exit_ms"] = {
        name: summary(values, 1) for name, values in bare.items()
    }
    out["samples"] = samples
    return out


def run_import_profile(layer_dir: Path, moto_url: str, upstream: str) -> dict[str, Any]:
    profile = startup.import_profile(layer_dir, moto_url, {UPSTREAM_VAR: upstream})
    rows = sorted(profile["imports"], key=lambda r: r["cumulative_ms"], reverse=True)
    critical = [r for r in rows if r["before_ready"]]
    background = [r for r in rows if not r["before_ready"]]
    return {
        "note": "one cold start with -X importtime (adds its own overhead); "
        "top-level imports only; before_ready = printed before event/next",
        "exec_to_ready_ms": round(profile["exec_to_ready_ms"], 1),
        "critical_path_total_ms": round(sum(r["cumulative_ms"] for r in critical), 1),
        "critical_path_top": critical[:12],
        "after_ready_top": background[:8],
    }


def run_memory_by_service(
    layer_dir: Path, moto_url: str, upstream: str, ciphertext: str
) -> dict[str, Any]:
    """On the bundled interpreter: RSS at ready, then after the first read of each service in
    turn (each a miss to moto), then once every background load has finished; and the
    extension's CPU seconds so far."""
    from tools.emulator import LambdaEmulator
    from tools.net import free_port

    port = free_port()
    env: dict[str, str | None] = {
        **startup.BUNDLED,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
        "PYTHONDONTWRITEBYTECODE": "1",
        UPSTREAM_VAR: upstream,
    }
    with LambdaEmulator(
        layer_dir, startup.FIXTURES, "noop.handler", env, endpoint_url=moto_url
    ) as emu:
        pid, rss_ready_mib = _init_sampled(emu)
        token = emu.session_token
        out: dict[str, Any] = {"rss_ready_mib": rss_ready_mib}
        reads = (
            (
                "secretsmanager",
                lambda: get(port, token, f"/secretsmanager/get?secretId={HIT_SECRET}"),
            ),
            (
                "ssm",
                lambda: get(
                    port,
                    token,
                    f"/systemsmanager/parameters/get?name={BENCH_PARAMETER}&withDecryption=true",
                ),
            ),
            ("kms", lambda: post(port, token, "/kms/decrypt", {"CiphertextBlob": ciphertext})),
        )
        for service, read in reads:
            status, body = read()
            if status != 200:
                raise RuntimeError(f"{service} read answered {status}: {body[:300]!r}")
            out[f"rss_after_{service}_mib"] = _mib(rss_kib(pid))
        out["cpu_s_after_three_reads"] = round(cpu_seconds(pid), 3)
        startup.wait_healthy(port)
        time.sleep(0.5)  # whatever still loads in the background (aiohttp, SDK clients)
        out["rss_settled_mib"] = _mib(rss_kib(pid))
        out["cpu_s_settled"] = round(cpu_seconds(pid), 3)
    note(f"memory by service ({upstream}): {out}")
    return out


def run_memory_by_interpreter(layers: dict[str, Path], moto_url: str) -> dict[str, Any]:
    """RSS at ready and once /health is ok, on the bundled interpreter and on the runtime's
    python3.13 (where there is one), both with the chosen (lean) upstream, measured alike."""
    from tools.emulator import LambdaEmulator
    from tools.net import free_port

    out: dict[str, Any] = {}
    variants = startup_variants(layers)
    for name, variant in (("bundled", "lean_with_pyc"), ("runtime_python", "runtime_python")):
        if variant not in variants:
            continue
        layer_dir, variant_env = variants[variant]
        port = free_port()
        env = {
            **variant_env,
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with LambdaEmulator(
            layer_dir, startup.FIXTURES, "noop.handler", env, endpoint_url=moto_url
        ) as emu:
            pid, rss_ready_mib = _init_sampled(emu)
            startup.wait_healthy(port)
            time.sleep(0.2)
            out[name] = {"rss_ready_mib": rss_ready_mib, "rss_sdk_loaded_mib": _mib(rss_kib(pid))}
    note(f"memory by interpreter: {out}")
    return out


def run_sandbox(
    args: argparse.Namespace, layers: dict[str, Path], moto_url: str, results: dict[str, Any]
) -> None:
    """One sandbox for memory, latency and throughput (and the function-import comparison)."""
    from tools.emulator import LambdaEmulator
    from tools.net import free_port

    plan = args.plan
    port = free_port()
    env: dict[str, str | None] = {
        **startup.BUNDLED,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(
            LambdaEmulator(
                layers["with_pyc"], startup.FIXTURES, "noop.handler", env, endpoint_url=moto_url
            )
        )
        pid, rss_ready_mib = _init_sampled(emu)
        token = emu.session_token
        memory: dict[str, Any] = {"rss_ready_mib": rss_ready_mib}
        startup.wait_healthy(port)
        time.sleep(0.2)  # let the loader thread finish whatever follows "ok" (client creation)
        memory["rss_sdk_loaded_mib"] = _mib(rss_kib(pid))
        status, body = get(port, token, f"/secretsmanager/get?secretId={HIT_SECRET}")
        if status != 200:
            raise RuntimeError(f"first read answered {status}: {body[:300]!r}")
        hit_body_size = len(body)
        memory["rss_after_first_read_mib"] = _mib(rss_kib(pid))
        # /metrics (read after the fill) is an aiohttp route: load aiohttp first so "added per
        # 1000 entries" counts entries only (the fill's batchgets are on the fast path).
        status, body = get(port, token, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}: {body[:300]!r}")
        memory["rss_after_aiohttp_mib"] = _mib(rss_kib(pid))
        filled = _fill_cache(port, token)
        metrics_status, metrics_body = get(port, token, "/metrics")
        memory["rss_after_fill_mib"] = _mib(rss_kib(pid))
        memory["fill"] = {
            "secrets": filled,
            "value_bytes": FILL_BYTES,
            "via": "GET /secretsmanager/batchget (20 ids per request)",
            "metrics": json.loads(metrics_body) if metrics_status == 200 else None,
        }
        memory["added_per_1000_entries_mib"] = round(
            (memory["rss_after_fill_mib"] - memory["rss_after_aiohttp_mib"]) * 1000 / filled, 1
        )
        results["memory"] = memory
        note(
            f"memory: {memory['rss_ready_mib']} / {memory['rss_sdk_loaded_mib']} / "
            f"{memory['rss_after_fill_mib']} MiB"
        )

        floor_proc, floor_port = start_floor_server(hit_body_size)
        stack.callback(stop_process, floor_proc)
        bare_proc, bare_port = start_floor_server(hit_body_size, "aiohttp", layers["with_pyc"])
        stack.callback(stop_process, bare_proc)
        servers = {
            "extension_hit": (port, pid),
            "aiohttp_bare": (bare_port, bare_proc.pid),
            "floor": (floor_port, floor_proc.pid),
        }
        target = Target(
            port=port,
            token=token,
            floor_port=floor_port,
            moto_url=moto_url,
            client_path=str(layers["with_pyc"] / "python"),
            hit_secret=HIT_SECRET,
            miss_secrets=MISS_SECRETS,
        )
        if "reads" not in args.skip:
            pool = WorkerPool(8)
            stack.callback(pool.close)
            results["reads"] = run_reads(pool, target, plan, hit_body_size, pid)
            for kind, extra in MISS_VARIANTS.items():
                results["reads"][kind] = run_misses_on(
                    pool, target, plan, layers["with_pyc"], moto_url, kind, extra
                )
            results["throughput"] = run_throughput(pool, target, plan, servers)
        if "imports" not in args.skip:
            results["function_import"] = function_import.measure(target, plan["import_repeats"])
            note("function imports done")


#: The miss row again on sandboxes of their own: the SDK upstream, and the lean one with
#: SECRETCACHE_ROTATION_AWARE (each miss sends DescribeSecret beside GetSecretValue).
MISS_VARIANTS: dict[str, dict[str, str]] = {
    "miss_sdk": {UPSTREAM_VAR: "sdk"},
    "miss_rotation": {UPSTREAM_VAR: "lean", "SECRETCACHE_ROTATION_AWARE": "true"},
}


def run_misses_on(
    pool: WorkerPool,
    target: Target,
    plan: dict[str, Any],
    layer_dir: Path,
    moto_url: str,
    kind: str,
    extra_env: dict[str, str],
) -> dict[str, Any]:
    """The miss row again on a sandbox whose extension runs with `extra_env`."""
    import dataclasses

    from tools.emulator import LambdaEmulator
    from tools.net import free_port

    port = free_port()
    env: dict[str, str | None] = {
        **startup.BUNDLED,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra_env,
    }
    with LambdaEmulator(
        layer_dir, startup.FIXTURES, "noop.handler", env, endpoint_url=moto_url
    ) as emu:
        emu.init()
        startup.wait_healthy(port)
        miss_target = dataclasses.replace(target, port=port, token=emu.session_token)
        miss_pid = emu.pid("secretcache")
        assert miss_pid is not None
        cpu_before = cpu_seconds(miss_pid)
        seq = pool.run("miss", miss_target, plan["slow_reads"], 1)
        server_cpu_us = (
            (cpu_seconds(miss_pid) - cpu_before) * 1e6 / (plan["slow_reads"] + WARM_UP_READS)
        )
        par = pool.run("miss", miss_target, plan["slow_reads_each_of_8"], 8)
    out = {
        "sequential": {
            **summary(seq["latencies_us"], 1),
            "reads_per_s": round(seq["reads_per_s"]),
            "server_cpu_us_per_read": round(server_cpu_us, 1),
        },
        "concurrent_8": {
            **summary(par["latencies_us"], 1),
            "reads_per_s": round(par["reads_per_s"]),
        },
    }
    note(f"reads {kind}: p50 {out['sequential']['median']} us")
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def _init_sampled(emu: LambdaEmulator) -> tuple[int, float | None]:
    """Run INIT with the extension's RSS sampled every 2 ms: its pid and RSS (MiB) at ready."""
    sampler = RssSampler(functools.partial(emu.pid, "secretcache")).start()
    try:
        init = emu.init()
    finally:
        sampler.stop()
    ext = init.extensions["secretcache"]
    pid = emu.pid("secretcache")
    assert pid is not None and ext.ready_at is not None
    return pid, _mib(sampler.at(ext.ready_at))


def _fill_cache(port: int, token: str) -> int:
    """Read the 1000 fill secrets through the extension so each becomes a cache entry."""
    count = 0
    for start in range(0, FILL_COUNT, 20):
        ids = "&".join(f"secretId={fill_name(i)}" for i in range(start, start + 20))
        status, body = get(port, token, f"/secretsmanager/batchget?{ids}")
        if status != 200:
            raise RuntimeError(f"batchget answered {status}: {body[:300]!r}")
        count += len(json.loads(body).get("SecretValues") or [])
    return count


#: Untimed reads each worker makes before the timed ones (bench/reads.py).
WARM_UP_READS = 20


def run_reads(
    pool: WorkerPool, target: Target, plan: dict[str, Any], body_size: int, server_pid: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"hit_response_body_bytes": body_size}
    order = ("floor", "http_hit", "client_hit", "powertools", "boto3", "miss")
    for kind in order:
        slow = kind in ("boto3", "miss")
        cpu_before = cpu_seconds(server_pid)
        seq = pool.run(kind, target, plan["slow_reads" if slow else "hit_reads"], 1)
        server_cpu_us = (
            (cpu_seconds(server_pid) - cpu_before)
            * 1e6
            / (plan["slow_reads" if slow else "hit_reads"] + WARM_UP_READS)
        )
        par = pool.run(
            kind, target, plan["slow_reads_each_of_8" if slow else "hit_reads_each_of_8"], 8
        )
        out[kind] = {
            "sequential": {
                **summary(seq["latencies_us"], 1),
                "reads_per_s": round(seq["reads_per_s"]),
                "server_cpu_us_per_read": round(server_cpu_us, 1) if kind == "miss" else None,
            },
            "concurrent_8": {
                **summary(par["latencies_us"], 1),
                "reads_per_s": round(par["reads_per_s"]),
            },
        }
        note(f"reads {kind}: p50 {out[kind]['sequential']['median']} us")
    return out


def run_throughput(
    pool: WorkerPool, target: Target, plan: dict[str, Any], servers: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """wrk with 8 connections against each server; also the server's CPU time per request."""
    hit_path = f"/secretsmanager/get?secretId={target.hit_secret}"
    out: dict[str, Any] = {}
    if load.wrk_available():
        for name, (port, pid) in servers.items():
            cpu_before = cpu_seconds(pid)
            out[name] = load.run_wrk(
                f"http://127.0.0.1:{port}{hit_path}",
                target.token,
                connections=8,
                threads=2,
                seconds=plan["wrk_seconds"],
            )
            used = cpu_seconds(pid) - cpu_before
            requests = out[name].get("requests") or 0
            out[name]["server_cpu_us_per_request"] = (
                round(used * 1e6 / requests, 1) if requests else None
            )
            out[name]["server_cpu_share"] = round(used / plan["wrk_seconds"], 2)
    else:
        note("wrk not found: throughput from 8 Python http.client processes instead")
        count = plan["hit_reads_each_of_8"]
        out["extension_hit"] = load.run_python_load(pool, "http_hit", target, count)
        out["floor"] = load.run_python_load(pool, "floor", target, count)
    note(f"throughput: {out['extension_hit'].get('reads_per_s')} req/s")
    return out


# ----------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    layer_zip = Path(args.layer)
    if not layer_zip.is_file():
        print(f"bench: {layer_zip} is missing; run ./build.sh layer first", file=sys.stderr)
        return 1
    started = time.monotonic()
    from tools.moto_server import MotoServer

    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="secretcache-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        snapshot = workdir / "layer.zip"  # the build may be rewritten while we run
        shutil.copyfile(layer_zip, snapshot)
        results: dict[str, Any] = {"meta": environment_facts(snapshot, args.plan)}
        layers = startup.prepare_layers(snapshot, workdir)
        note("layer unpacked (with and without .pyc); starting moto")
        moto = MotoServer()
        stack.callback(moto.stop)
        moto.start()
        ciphertext = seed_moto(moto)
        note(f"moto seeded: {FILL_COUNT + 1 + len(MISS_SECRETS)} secrets")
        if "startup" not in args.skip:
            results["startup"] = run_startup(layers, moto.url, args.plan["cold_starts"])
            results["import_profile"] = {
                upstream: run_import_profile(layers["with_pyc"], moto.url, upstream)
                for upstream in UPSTREAMS
            }
            results["memory_by_interpreter"] = run_memory_by_interpreter(layers, moto.url)
        results["memory_by_service"] = {
            upstream: run_memory_by_service(layers["with_pyc"], moto.url, upstream, ciphertext)
            for upstream in UPSTREAMS
        }
        run_sandbox(args, layers, moto.url, results)
        if "envwrapper" not in args.skip:
            results["env_wrapper"] = env_wrapper.measure(
                layers["with_pyc"], moto, args.plan["env_cold_starts"], note
            )
    results["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = report.evaluate(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(report.render(results))
    print(f"\nwritten: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        print(report.render(json.loads(Path(args.show).read_text())))
        return 0
    with interrupts_as_exit():
        try:
            return run(args)
        except KeyboardInterrupt:
            print("\nbench interrupted; every process it started was stopped", file=sys.stderr)
            return 130
