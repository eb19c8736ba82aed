"""``python -m bench.upstream_probe``: what each way of calling AWS costs a fresh interpreter.

Lever 1 of issue 13 (keep aiobotocore, slim it) against lever 2 (the lean client), measured the
same way: a fresh ``python -S`` on the built layer's paths creates the three service clients and
reports its CPU seconds and RSS (asyncio is imported first, as the extension already has it).

- ``sdk``: aiobotocore as shipped (three clients, full models);
- ``sdk-slim``: aiobotocore with AWS_DATA_PATH pointing at pruned data: each service model cut
  to the operations we call and the shapes they reach, documentation removed; endpoints.json
  cut to the three services; the same partitions and rule sets;
- ``lean``: ``secretcache.aws`` clients.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.startup import bundled_command

REPO = Path(__file__).resolve().parents[1]
LAYER = REPO / "dist" / "layer" / "secretcache"
OPERATIONS = {
    "secretsmanager": ["GetSecretValue", "BatchGetSecretValue"],
    "ssm": ["GetParameter", "GetParameters", "GetParametersByPath"],
    "kms": ["Decrypt"],
}

PROBE = r"""
import resource, sys, json
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
import asyncio
base_cpu, base_rss = cpu(), rss()
mode = sys.argv[1]
async def main():
    if mode == 'lean':
        from secretcache.aws.backend import LeanAwsBackends
        b = LeanAwsBackends(environment={'AWS_ACCESS_KEY_ID': 'a', 'AWS_SECRET_ACCESS_KEY': 'b'},
            max_connections=3, timeouts={s: 5.0 for s in ('secretsmanager', 'ssm', 'kms')},
            region='us-east-1')
        b.start_loading()
        await b.warm()
        await b.close()
    else:
        from aiobotocore.session import get_session
        session = get_session()
        for service in ('secretsmanager', 'ssm', 'kms'):
            async with session.create_client(service, region_name='us-east-1',
                    aws_access_key_id='a', aws_secret_access_key='b'):
                pass
asyncio.run(main())
print(json.dumps({'cpu_s': cpu() - base_cpu, 'rss_added_mib': rss() - base_rss,
                  'rss_mib': rss()}))
"""


def _prune_model(model: dict[str, Any], operations: list[str]) -> dict[str, Any]:
    shapes = model["shapes"]
    keep: set[str] = set()

    def visit(name: str) -> None:
        if name in keep:
            return
        keep.add(name)
        shape = shapes[name]
        for member in (shape.get("members") or {}).values():
            visit(member["shape"])
        for key in ("member", "key", "value"):
            if key in shape:
                visit(shape[key]["shape"])

    ops = {}
    for op in operations:
        data = dict(model["operations"][op])
        data.pop("documentation", None)
        for key in ("input", "output"):
            if key in data:
                visit(data[key]["shape"])
        for error in data.get("errors", []):
            visit(error["shape"])
        ops[op] = data

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "documentation"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {
        **{k: v for k, v in model.items() if k not in ("operations", "shapes", "documentation")},
        "operations": ops,
        "shapes": {name: strip(shapes[name]) for name in sorted(keep)},
    }


def build_slim_data(into: Path) -> dict[str, int]:
    """Write pruned models and endpoints.json under ``into``; returns bytes before/after."""
    sys.path[0:0] = [str(LAYER / "lib" / "common")]
    from botocore.loaders import create_loader

    loader = create_loader()
    sizes = {"before": 0, "after": 0}
    for service, operations in OPERATIONS.items():
        model = loader.load_service_model(service, "service-2")
        version = model["metadata"]["apiVersion"]
        pruned = _prune_model(model, operations)
        folder = into / service / version
        folder.mkdir(parents=True)
        text = json.dumps(pruned, separators=(",", ":"))
        (folder / "service-2.json").write_text(text)
        sizes["before"] += len(json.dumps(model, separators=(",", ":")))
        sizes["after"] += len(text)
    endpoints = loader.load_data("endpoints")
    for partition in endpoints["partitions"]:
        partition["services"] = {k: v for k, v in partition["services"].items() if k in OPERATIONS}
    (into / "endpoints.json").write_text(json.dumps(endpoints, separators=(",", ":")))
    return sizes


def run_probe(mode: str, data_path: Path | None) -> dict[str, float]:
    """One fresh interpreter: the layer's bundled 3.13 (its vendored wheels are cp313 only)."""
    tag = f"cp313-{os.uname().machine}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(
            [str(LAYER / "app"), str(LAYER / "lib" / tag), str(LAYER / "lib" / "common")]
        ),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if data_path is not None:
        env["AWS_DATA_PATH"] = str(data_path)
    out = subprocess.run(
        [*bundled_command(LAYER.parent), "-S", "-c", PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    repeats = int((argv or sys.argv[1:] or ["7"])[0])
    if not LAYER.is_dir():
        print("bench.upstream_probe: build the layer first (./build.sh layer)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="secretcache-slim-") as tmp:
        sizes = build_slim_data(Path(tmp))
        rows: dict[str, list[dict[str, float]]] = {"sdk": [], "sdk-slim": [], "lean": []}
        for _ in range(repeats):  # interleaved
            rows["sdk"].append(run_probe("sdk", None))
            rows["sdk-slim"].append(run_probe("sdk-slim", Path(tmp)))
            rows["lean"].append(run_probe("lean", None))
    print(
        f"three service clients in a fresh python -S (asyncio already imported), "
        f"median of {repeats}; models {sizes['before']:,} -> {sizes['after']:,} bytes pruned"
    )
    print(f"  {'':<10}{'CPU ms':>10}{'RSS added MiB':>16}{'RSS MiB':>10}")
    for mode, samples in rows.items():
        cpu = statistics.median(s["cpu_s"] for s in samples) * 1000
        added = statistics.median(s["rss_added_mib"] for s in samples)
        total = statistics.median(s["rss_mib"] for s in samples)
        print(f"  {mode:<10}{cpu:>10.0f}{added:>16.1f}{total:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
