"""Load: 64 keep-alive clients for 20 s of mixed hits and misses, and 1000 concurrent misses for
one key. Zero wrong answers, one upstream call per key per refresh, RSS flat."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter

import pytest

from tests.support.fault_proxy import Fault
from tools.net import rss_kib

CLIENTS = 64
WARM_UP_SECONDS = 4.0
RUN_SECONDS = 20.0
TTL = 2
NOT_FOUND_TTL = 1


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"X-Aws-Parameters-Secrets-Token: {self.token}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 15)
        status = int(head.split(b" ", 2)[1])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await asyncio.wait_for(self.reader.readexactly(length), 15)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.wrong = 0
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()


async def run_clients(
    port: int, token: str, keys: dict[str, str | None], seconds: float, tally: Tally
) -> None:
    names = list(keys)
    end = time.monotonic() + seconds

    async def one(seed: int) -> None:
        rng = random.Random(seed)
        client = Client(port, token)
        try:
            while time.monotonic() < end:
                name = rng.choice(names)
                tally.sent += 1
                try:
                    status, body = await client.get(f"/secretsmanager/get?secretId={name}")
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                    tally.errors[type(exc).__name__] += 1
                    client.close()
                    continue
                tally.statuses[status] += 1
                expected = keys[name]
                parsed = json.loads(body)
                if expected is None:
                    ok = status == 404 and parsed.get("errorType") == "ResourceNotFoundException"
                else:
                    ok = (
                        status == 200
                        and parsed.get("Name") == name
                        and parsed.get("SecretString") == expected
                    )
                if not ok:
                    tally.wrong += 1
        finally:
            client.close()

    await asyncio.gather(*(one(i) for i in range(CLIENTS)))


@pytest.mark.slow
def test_64_clients_for_20s_mixed_hits_and_misses(start, proxy, seed, figures):
    ext = start(
        SECRETS_MANAGER_TTL=str(TTL),
        SECRETCACHE_NOT_FOUND_TTL=str(NOT_FOUND_TTL),
        PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL="info",
    )
    keys: dict[str, str | None] = {}
    for i in range(40):
        name, value = seed.secret(f"load{i}")
        keys[name] = value
    for i in range(8):
        keys[f"{seed.prefix}-absent{i}"] = None
    assert ext.process is not None
    pid = ext.process.pid

    warm = Tally()
    asyncio.run(run_clients(ext.port, ext.token, keys, WARM_UP_SECONDS, warm))
    time.sleep(0.5)  # background refreshes started by the last requests reach AWS first
    proxy.reset_counts()
    metrics_before = ext.get("/metrics").json()["services"]["secretsmanager"]  # type: ignore[index]
    # After /metrics: it is an aiohttp route, and aiohttp loads on the first such request.
    rss_before = rss_kib(pid)

    tally = Tally()
    started = time.monotonic()
    asyncio.run(run_clients(ext.port, ext.token, keys, RUN_SECONDS, tally))
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    rss_after = rss_kib(pid)
    metrics_after = ext.get("/metrics").json()["services"]["secretsmanager"]  # type: ignore[index]

    calls = proxy.calls("GetSecretValue")
    per_key = Counter(c.identifier for c in calls)
    overlapping = [c for c in calls if c.concurrent]
    gaps: dict[str, float] = {}
    for name in keys:
        starts = sorted(c.started for c in calls if c.identifier == name)
        if len(starts) > 1:
            gaps[name] = min(b - a for a, b in itertools.pairwise(starts))
    extension_upstream = metrics_after["upstreamCalls"] - metrics_before["upstreamCalls"]
    result = {
        "clients": CLIENTS,
        "seconds": round(elapsed, 2),
        "requests_sent": tally.sent,
        "requests_per_second": round(tally.sent / elapsed),
        "wrong_answers": tally.wrong,
        "transport_errors": dict(tally.errors),
        "statuses": {str(k): v for k, v in tally.statuses.items()},
        "upstream_calls_at_proxy": len(calls),
        "upstream_calls_by_extension_metrics": extension_upstream,
        "max_upstream_calls_per_key": max(per_key.values()),
        "min_gap_between_calls_for_one_key_s": round(min(gaps.values()), 3),
        "overlapping_upstream_calls_for_one_key": len(overlapping),
        "rss_kib_after_warm_up": rss_before,
        "rss_kib_after_run": rss_after,
        "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 2),
        "warm_up_requests": warm.sent,
    }
    figures["load_64_clients"] = result
    print("\nload:", json.dumps(result))

    assert tally.wrong == 0 and not tally.errors and not warm.wrong
    assert set(tally.statuses) <= {200, 404}
    # One upstream call per key per refresh: never two in flight for a key, and calls for one
    # key at least most of a (jittered, refreshed-ahead) TTL apart.
    assert not overlapping
    existing = [g for n, g in gaps.items() if keys[n] is not None]
    absent = [g for n, g in gaps.items() if keys[n] is None]
    assert min(existing) >= 0.7 * TTL * 0.9 * 0.9, min(existing)
    assert min(absent) >= 0.7 * NOT_FOUND_TTL * 0.9, min(absent)
    assert max(per_key.values()) <= RUN_SECONDS / (0.7 * NOT_FOUND_TTL * 0.9) + 1
    assert extension_upstream == len(calls)
    assert rss_after <= rss_before * 1.10


@pytest.mark.slow
def test_1000_concurrent_misses_for_one_key_make_one_upstream_call(start, proxy, seed, figures):
    ext = start(SECRETCACHE_MAX_CLIENT_CONNECTIONS="2048", SECRETS_MANAGER_TTL="300")
    name, value = seed.secret("burst")
    # Slow AWS for this key (under the 1.5 s timeout), so every request arrives while the one
    # load is in flight.
    proxy.set_fault(Fault.latency(0.8), target="GetSecretValue", identifier=name)

    async def burst() -> list[tuple[int, bytes]]:
        clients = [Client(ext.port, ext.token) for _ in range(1000)]
        try:
            return await asyncio.gather(
                *(c.get(f"/secretsmanager/get?secretId={name}") for c in clients)
            )
        finally:
            for c in clients:
                c.close()

    started = time.monotonic()
    answers = asyncio.run(burst())
    elapsed = time.monotonic() - started
    wrong = [
        (s, b[:100]) for s, b in answers if s != 200 or json.loads(b).get("SecretString") != value
    ]
    result = {
        "requests_sent": len(answers),
        "wrong_answers": len(wrong),
        "upstream_calls": proxy.count("GetSecretValue", name),
        "seconds": round(elapsed, 3),
    }
    figures["burst_1000_misses_one_key"] = result
    print("\nburst:", json.dumps(result))
    assert not wrong, wrong[:3]
    assert proxy.count("GetSecretValue", name) == 1
    assert ext.alive()
