"""Read latency seen by a handler: one kind of read, repeated, timed one by one.

Kinds (all against loopback; moto server stands in for AWS):
``client_hit``  a cache hit through ``secretcache_client.get_secret`` (what a handler calls);
``http_hit``    the same hit through a raw ``http.client`` keep-alive connection;
``miss``        ``refreshNow=true``: the extension calls Secrets Manager (moto) every time;
``boto3``       a direct boto3 ``get_secret_value`` per read (no cache at all);
``powertools``  Powertools' ``get_secret`` with its in-process cache (hits after the first);
``floor``       a bare asyncio loopback HTTP server answering a same-size canned response.

Concurrent runs use worker processes (not threads: one GIL would serialise the clients), started
once and released together by a barrier, so only the timed loops overlap.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
KINDS = ("client_hit", "http_hit", "miss", "boto3", "powertools", "floor")


@dataclass(frozen=True)
class Target:
    """Where the readers go; picklable, sent to the worker processes."""

    port: int
    token: str
    floor_port: int
    moto_url: str
    client_path: str  # the layer's python/ directory (secretcache_client as shipped)
    hit_secret: str
    miss_secrets: tuple[str, ...]  # one per worker, so misses are not coalesced
    region: str = "us-east-1"


def aws_env(target: Target) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": target.region,
        "AWS_DEFAULT_REGION": target.region,
        "AWS_ENDPOINT_URL": target.moto_url,
    }


class _Http:
    """One kept-alive connection doing GETs; checks the status so errors never count as reads."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = path
        self.headers = headers

    def __call__(self) -> None:
        self.conn.request("GET", self.path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {self.path} answered {response.status}: {body[:200]!r}")


def make_reader(kind: str, target: Target, index: int) -> Callable[[], Any]:
    """A no-argument callable doing one read of ``kind`` (connections set up, first call done)."""
    auth = {TOKEN_HEADER: target.token}
    if kind == "client_hit":
        if target.client_path not in sys.path:
            sys.path.insert(0, target.client_path)
        from secretcache_client import Client

        client = Client(port=target.port, token=target.token)
        reader: Callable[[], Any] = lambda: client.get_secret(target.hit_secret)  # noqa: E731
    elif kind == "http_hit":
        reader = _Http(target.port, f"/secretsmanager/get?secretId={target.hit_secret}", auth)
    elif kind == "miss":
        secret = target.miss_secrets[index % len(target.miss_secrets)]
        reader = _Http(target.port, f"/secretsmanager/get?secretId={secret}&refreshNow=true", auth)
    elif kind == "boto3":
        os.environ.update(aws_env(target))
        import boto3

        sm = boto3.client("secretsmanager")
        reader = lambda: sm.get_secret_value(SecretId=target.hit_secret)  # noqa: E731
    elif kind == "powertools":
        os.environ.update(aws_env(target))
        from aws_lambda_powertools.utilities.parameters import get_secret

        reader = lambda: get_secret(target.hit_secret, max_age=3600)  # noqa: E731
    elif kind == "floor":
        reader = _Http(target.floor_port, f"/secretsmanager/get?secretId={target.hit_secret}", auth)
    else:
        raise ValueError(f"unknown read kind {kind!r}")
    for _ in range(20):  # connect, load models, fill Powertools' cache: not part of the figure
        reader()
    return reader


def timed_loop(reader: Callable[[], Any], count: int) -> tuple[list[float], float]:
    """Microseconds per read, and the loop's wall time in seconds."""
    clock = time.perf_counter
    times = []
    start = clock()
    for _ in range(count):
        t0 = clock()
        reader()
        times.append((clock() - t0) * 1e6)
    return times, clock() - start


def _worker(index: int, conn: multiprocessing.connection.Connection, barrier: Any) -> None:
    readers: dict[str, Callable[[], Any]] = {}
    while True:
        message = conn.recv()
        if message is None:
            return
        kind, target, count, parties = message
        try:
            # Keyed by port too: the same kind against another sandbox needs its own connection.
            key = f"{kind}:{target.port}"
            reader = readers.get(key) or make_reader(kind, target, index)
            readers[key] = reader
            if parties > 1:
                barrier.wait(60)
            conn.send(("ok", timed_loop(reader, count)))
        except Exception as exc:  # reported to the parent, which says which read failed
            if parties > 1:
                barrier.abort()
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class WorkerPool:
    """``size`` long-lived reader processes; ``run(kind, target, count, n)`` uses the first n."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = size
        self._barriers = {n: context.Barrier(n) for n in (size,)}
        self._pipes = []
        self._procs = []
        for index in range(size):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker, args=(index, child, self._barriers[size]), daemon=True
            )
            proc.start()
            self._pipes.append(parent)
            self._procs.append(proc)

    def run(self, kind: str, target: Target, count: int, parallel: int) -> dict[str, Any]:
        """Latencies (us) of every read and throughput (reads/s) over the ``parallel`` workers."""
        if parallel not in (1, self.size):
            raise ValueError(f"parallel must be 1 or {self.size}")
        if parallel > 1:
            self._barriers[self.size].reset()
        for pipe in self._pipes[:parallel]:
            pipe.send((kind, target, count, parallel))
        latencies: list[float] = []
        walls = []
        for pipe in self._pipes[:parallel]:
            if not pipe.poll(300):
                raise TimeoutError(f"{kind} readers did not finish")
            status, payload = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"{kind} read failed: {payload}")
            times, wall = payload
            latencies.extend(times)
            walls.append(wall)
        return {"latencies_us": latencies, "reads_per_s": len(latencies) / max(walls)}

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
