"""Counters for /metrics and CloudWatch Embedded Metric Format lines; no names, no values."""

from __future__ import annotations

import json
import time
from typing import Any

from .cache import TtlCache

SERVICES = ("secretsmanager", "ssm", "kms")
_EMF_COUNTERS = (
    ("hits", "Hits"),
    ("misses", "Misses"),
    ("staleServed", "StaleServed"),
    ("refreshes", "Refreshes"),
    ("upstreamCalls", "UpstreamCalls"),
    ("coalescedWaiters", "CoalescedWaiters"),
    ("entries", "Entries"),
    ("bytes", "Bytes"),
)
_SERVICE_PREFIX = {"secretsmanager": "SecretsManager", "ssm": "Ssm", "kms": "Kms"}


def snapshot(cache: TtlCache) -> dict[str, Any]:
    """Counters per service plus cache totals."""
    sizes = cache.entries_by_service()
    services: dict[str, Any] = {}
    for service in SERVICES:
        counters = cache.service_stats(service).as_dict()
        count, size = sizes.get(service, (0, 0))
        counters["entries"] = count
        counters["bytes"] = size
        services[service] = counters
    return {"services": services, "cache": {"entries": len(cache), "bytes": cache.bytes}}


def emf_line(cache: TtlCache, namespace: str, function_name: str | None) -> str:
    """One EMF JSON line: a metric per service and counter, dimension FunctionName."""
    data = snapshot(cache)["services"]
    record: dict[str, Any] = {"FunctionName": function_name or "unknown"}
    definitions: list[dict[str, str]] = []
    for service in SERVICES:
        counters = data[service]
        prefix = _SERVICE_PREFIX[service]
        for key, name in _EMF_COUNTERS:
            metric = prefix + name
            record[metric] = counters[key]
            definitions.append({"Name": metric, "Unit": "Bytes" if key == "bytes" else "Count"})
        errors = sum(counters["upstreamErrors"].values())
        record[prefix + "UpstreamErrors"] = errors
        definitions.append({"Name": prefix + "UpstreamErrors", "Unit": "Count"})
        p99 = counters["upstreamLatencyMs"]["p99"]
        if p99 is not None:
            record[prefix + "UpstreamLatencyP99"] = p99
            definitions.append({"Name": prefix + "UpstreamLatencyP99", "Unit": "Milliseconds"})
    record["_aws"] = {
        "Timestamp": int(time.time() * 1000),
        "CloudWatchMetrics": [
            {"Namespace": namespace, "Dimensions": [["FunctionName"]], "Metrics": definitions}
        ],
    }
    return json.dumps(record, separators=(",", ":"))
