"""Counters for /metrics and CloudWatch Embedded Metric Format lines; no names, no values.

`Metrics` owns every counter; the cache, the read core and the backends report to it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Protocol

from .restore import RestoreState
from .service import Service

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
_SERVICE_PREFIX = {
    Service.SECRETS_MANAGER: "SecretsManager",
    Service.SSM: "Ssm",
    Service.KMS: "Kms",
}


class ServiceStats:
    """Counters for one service; read by /metrics."""

    __slots__ = (
        "coalesced",
        "hits",
        "latencies",
        "misses",
        "refreshes",
        "stale",
        "upstream_calls",
        "upstream_errors",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.refreshes = 0
        self.coalesced = 0
        self.upstream_calls = 0
        self.upstream_errors: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=2048)

    def as_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

        return {
            "hits": self.hits,
            "misses": self.misses,
            "staleServed": self.stale,
            "refreshes": self.refreshes,
            "coalescedWaiters": self.coalesced,
            "upstreamCalls": self.upstream_calls,
            "upstreamErrors": dict(self.upstream_errors),
            "upstreamLatencyMs": {"p50": pct(0.5), "p99": pct(0.99)},
        }


class RotationStats:
    """DescribeSecret's cost under SECRETCACHE_ROTATION_AWARE (Secrets Manager's counters)."""

    __slots__ = ("describe_calls", "describe_failures", "describes_skipped", "limited")

    def __init__(self) -> None:
        #: DescribeSecret requests made (each billed like a GetSecretValue); retries not counted.
        self.describe_calls = 0
        #: Of those, the ones that failed (the entry then kept its TTL).
        self.describe_failures = 0
        #: Entries whose life was cut short of the TTL by a rotation date or a re-check.
        self.limited = 0
        #: Loads of a secret known to have no rotation, whose version had not changed: no call.
        self.describes_skipped = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "describeSecretCalls": self.describe_calls,
            "describeSecretFailures": self.describe_failures,
            "rotationLimitedEntries": self.limited,
            "describeSecretSkipped": self.describes_skipped,
        }


class CacheContents(Protocol):
    """What a snapshot reads from the cache (the cache is not imported: it imports us)."""

    metrics: Metrics
    bytes: int

    def __len__(self) -> int: ...

    def entries_by_service(self) -> dict[str, tuple[int, int]]: ...


class Metrics:
    """Every counter, per service."""

    def __init__(self) -> None:
        self.services = {service: ServiceStats() for service in Service}
        self.rotation = RotationStats()
        #: SnapStart: holding, restores seen, the last one (set up by the lifecycle).
        self.snapstart = RestoreState()

    def service(self, service: str) -> ServiceStats:
        """The counters of one service (a `Service` or its name)."""
        return self.services[service]  # type: ignore[index]

    def record_upstream(self, service: str, seconds: float, error_type: str | None) -> None:
        """Count one AWS API call (the backends report each, pages and retries included)."""
        stats = self.service(service)
        stats.upstream_calls += 1
        if error_type is None:
            stats.latencies.append(seconds)
        else:
            stats.upstream_errors[error_type] = stats.upstream_errors.get(error_type, 0) + 1


def snapshot(cache: CacheContents) -> dict[str, Any]:
    """Counters per service, what the cache holds, and SnapStart's restores."""
    sizes = cache.entries_by_service()
    services: dict[str, Any] = {}
    for service, stats in cache.metrics.services.items():
        counters = stats.as_dict()
        count, size = sizes.get(service, (0, 0))
        counters["entries"] = count
        counters["bytes"] = size
        if service is Service.SECRETS_MANAGER:
            counters.update(cache.metrics.rotation.as_dict())
        services[service.value] = counters
    return {
        "services": services,
        "cache": {"entries": len(cache), "bytes": cache.bytes},
        "snapStart": cache.metrics.snapstart.as_dict(),
    }


def emf_line(cache: CacheContents, namespace: str, function_name: str | None) -> str:
    """One EMF JSON line: a metric per service and counter, dimension FunctionName."""
    data = snapshot(cache)["services"]
    record: dict[str, Any] = {"FunctionName": function_name or "unknown"}
    definitions: list[dict[str, str]] = []
    for service in Service:
        counters = data[service.value]
        prefix = _SERVICE_PREFIX[service]
        for key, name in _EMF_COUNTERS:
            metric = prefix + name
            record[metric] = counters[key]
            definitions.append({"Name": metric, "Unit": "Bytes" if key == "bytes" else "Count"})
        errors = sum(counters["upstreamErrors"].values())
        record[prefix + "UpstreamErrors"] = errors
        definitions.append({"Name": prefix + "UpstreamErrors", "Unit": "Count"})
        if service is Service.SECRETS_MANAGER:
            record[prefix + "DescribeSecretCalls"] = counters["describeSecretCalls"]
            definitions.append({"Name": prefix + "DescribeSecretCalls", "Unit": "Count"})
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
