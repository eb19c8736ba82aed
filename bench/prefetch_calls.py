"""``python -m bench.prefetch_calls [--baseline REF] [--runs N]``: a cold start's prefetch cost.

A real extension process (standalone, from the source tree) prefetches 25 `ssm:` parameters and
25 `sm:` secrets from moto server through the fault proxy, which counts the calls per operation.
For each upstream client it prints the calls, the prefetch's own time (`prefetch.done` ms) and
the time from process start to ready (median of N runs); `--latency-ms` adds a round trip to
every call, as AWS's would be. `--baseline REF` runs the same against
`extension/` of a git ref (e.g. the commit before batching) for the side-by-side figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.extension_process import ExtensionProcess  # noqa: E402
from tests.support.fault_proxy import Fault, FaultProxy  # noqa: E402
from tools.moto_server import MotoServer  # noqa: E402

ITEMS_PER_SERVICE = 25
UPSTREAMS = ("lean", "sdk")


def seed(moto: MotoServer) -> str:
    ssm, sm = moto.client("ssm"), moto.client("secretsmanager")
    items = []
    for i in range(ITEMS_PER_SERVICE):
        ssm.put_parameter(Name=f"/bench/prefetch/p{i:02d}", Value=f"v{i}", Type="SecureString")
        sm.create_secret(Name=f"bench/prefetch/s{i:02d}", SecretString=f"s{i}")
        items += [
            f"ssm:/bench/prefetch/p{i:02d}?withDecryption=true",
            f"sm:bench/prefetch/s{i:02d}",
        ]
    return ",".join(items)


def one_start(
    moto: MotoServer, proxy: FaultProxy, source: Path, upstream: str, items: str
) -> dict[str, Any]:
    proxy.reset_counts()
    env = {
        **moto.env(),
        "AWS_ENDPOINT_URL": proxy.url,
        "PYTHONPATH": str(source),
        "SECRETCACHE_UPSTREAM": upstream,
        "SECRETCACHE_PREFETCH": items,
        "SECRETCACHE_PREFETCH_REQUIRED": "true",
    }
    process = ExtensionProcess(env)
    started = time.monotonic()
    process.start(timeout=60)
    ready_ms = (time.monotonic() - started) * 1000
    process.stop()
    done = [json.loads(line) for line in process.logs().splitlines() if '"prefetch.done"' in line]
    calls = {t.rsplit(".", 1)[-1]: n for t, n in sorted(proxy.counts().items())}
    return {
        "calls": calls,
        "total": sum(calls.values()),
        "ready_ms": ready_ms,
        "prefetch_ms": done[0].get("ms") if done else None,
        "failed": done[0].get("failed") if done else None,
    }


def measure(moto: MotoServer, proxy: FaultProxy, source: Path, items: str, runs: int) -> dict:
    out = {}
    for upstream in UPSTREAMS:
        samples = [one_start(moto, proxy, source, upstream, items) for _ in range(runs)]
        prefetch = [s["prefetch_ms"] for s in samples if s["prefetch_ms"] is not None]
        out[upstream] = {
            "calls": samples[-1]["calls"],
            "total": samples[-1]["total"],
            "failed": samples[-1]["failed"],
            "ready_ms_median": round(statistics.median(s["ready_ms"] for s in samples), 1),
            "prefetch_ms_median": round(statistics.median(prefetch), 1) if prefetch else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref whose extension/ to measure beside this tree")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added to every AWS call by the proxy"
    )
    args = parser.parse_args(argv)
    moto = MotoServer().start()
    proxy = FaultProxy(moto.port).start()
    if args.latency_ms:
        proxy.set_fault(Fault.latency(args.latency_ms / 1000))
    try:
        items = seed(moto)
        sources = {"this tree": REPO / "extension"}
        with tempfile.TemporaryDirectory() as tmp:
            if args.baseline:
                archive = subprocess.run(
                    ["git", "-C", str(REPO), "archive", args.baseline, "extension"],
                    check=True,
                    capture_output=True,
                ).stdout
                subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
                sources = {f"baseline {args.baseline}": Path(tmp) / "extension", **sources}
            results = {
                name: measure(moto, proxy, src, items, args.runs) for name, src in sources.items()
            }
    finally:
        proxy.stop()
        moto.stop()
    print(f"prefetch of {ITEMS_PER_SERVICE} ssm: + {ITEMS_PER_SERVICE} sm: items, "
          f"median of {args.runs} cold starts (moto server on loopback, "
          f"+{args.latency_ms:g} ms a call)")  # fmt: skip
    head = f"{'source':<22}{'upstream':<10}{'calls':>6}{'prefetch ms':>13}{'ready ms':>10}"
    print(head + "  by operation")
    for name, by_upstream in results.items():
        for upstream, r in by_upstream.items():
            print(
                f"{name:<22}{upstream:<10}{r['total']:>6}{r['prefetch_ms_median']!s:>13}"
                f"{r['ready_ms_median']:>10}  {json.dumps(r['calls'])}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
