"""The function's own cold start: importing a handler that reads a secret, in a fresh interpreter.

Three handler modules (``fixtures/handler_*.py``): one using ``secretcache_client`` (from the
layer's ``python/`` directory, as Lambda puts it on the path), one creating a boto3 client at
import (what a function without the extension does), one using Powertools' ``get_secret``.
Samples are interleaved so drift on a shared machine hits every variant alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .reads import Target, aws_env
from .stats import summary

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODULES = {
    "secretcache_client": "handler_secretcache",
    "boto3": "handler_boto3",
    "powertools": "handler_powertools",
}


def measure(target: Target, repeats: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env.update(aws_env(target))
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(FIXTURES), target.client_path]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_SESSION_TOKEN": target.token,
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(target.port),
            "BENCH_SECRET_ID": target.hit_secret,
        }
    )
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in MODULES}
    probe = str(FIXTURES / "import_probe.py")
    for _ in range(repeats):
        for name, module in MODULES.items():
            proc = subprocess.run(
                [sys.executable, probe, module],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{module} failed: {proc.stderr.strip()[-500:]}")
            samples[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {}
    for name, rows in samples.items():
        out[name] = {
            "import_ms": summary([r["import_ms"] for r in rows], 2),
            "first_call_ms": summary([r["first_call_ms"] for r in rows], 2),
            "import_and_first_call_ms": summary(
                [r["import_ms"] + r["first_call_ms"] for r in rows], 2
            ),
            "rss_after_call_mib": summary([r["rss_call_kib"] / 1024 for r in rows], 1),
            "rss_added_mib": summary(
                [(r["rss_call_kib"] - r["rss_base_kib"]) / 1024 for r in rows], 1
            ),
        }
    return out
