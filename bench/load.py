"""Throughput with 8 connections: ``wrk`` (Debian's package) when present, else Python clients."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from .reads import TOKEN_HEADER, Target, WorkerPool

_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def _us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, token: str, *, connections: int, threads: int, seconds: float
) -> dict[str, Any]:
    """``wrk -c N --latency``: requests/s, latency p50/p99 (us), errors and non-2xx count."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-H",
        f"{TOKEN_HEADER}: {token}",
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "tool": "wrk",
        "connections": connections,
        "threads": threads,
        "seconds": seconds,
        "requests": int(total.group(1)) if total else None,
        "reads_per_s": float(rps.group(1)) if rps else None,
        "p50_us": _us(p50.group(1)) if p50 else None,
        "p99_us": _us(p99.group(1)) if p99 else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_python_load(pool: WorkerPool, kind: str, target: Target, count: int) -> dict[str, Any]:
    """Fallback: the pool's worker processes, each a keep-alive connection, all at once."""
    result = pool.run(kind, target, count, pool.size)
    return {
        "tool": "python http.client workers",
        "connections": pool.size,
        "requests": len(result["latencies_us"]),
        "reads_per_s": result["reads_per_s"],
    }
