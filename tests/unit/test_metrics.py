"""Metrics own the counters; /metrics and EMF read them with the cache's sizes."""

from __future__ import annotations

import json

from secretcache.cache import CacheKey, Policy, TtlCache
from secretcache.metrics import Metrics, emf_line, snapshot
from secretcache.service import Service


def test_record_upstream_counts_calls_errors_and_latencies() -> None:
    metrics = Metrics()
    metrics.record_upstream("ssm", 0.010, None)
    metrics.record_upstream("ssm", 0.030, None)
    metrics.record_upstream("ssm", 0.500, "ThrottlingException")
    stats = metrics.service(Service.SSM).as_dict()
    assert stats["upstreamCalls"] == 3
    assert stats["upstreamErrors"] == {"ThrottlingException": 1}
    assert stats["upstreamLatencyMs"] == {"p50": 30.0, "p99": 30.0}


def test_snapshot_and_emf_name_services_never_keys() -> None:
    metrics = Metrics()
    cache = TtlCache(
        max_entries=10, max_bytes=1 << 20, policies={Service.SSM: Policy(60)}, metrics=metrics
    )
    cache.put(CacheKey(Service.SSM, "/very/private/name"), b"body")
    metrics.service(Service.SSM).hits += 2
    data = snapshot(cache)
    assert set(data["services"]) == {"secretsmanager", "ssm", "kms"}
    assert data["services"]["ssm"]["hits"] == 2 and data["services"]["ssm"]["entries"] == 1
    line = emf_line(cache, "Ns", "fn")
    assert "private" not in line and "private" not in json.dumps(data)
    assert json.loads(line)["SsmHits"] == 2
