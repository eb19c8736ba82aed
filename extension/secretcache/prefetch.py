"""Warm the cache at INIT from SECRETCACHE_PREFETCH, concurrently, before reporting ready."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

from .config import PrefetchItem
from .errors import SecretcacheError
from .log import log
from .reads import Reads, in_prefetch

#: Lambda gives extensions and the runtime 10 s of INIT in all; leave room for the rest.
PREFETCH_BUDGET_SECONDS = 7.0


def kms_digest(
    blob: bytes, context: dict[str, str] | None, key_id: str | None, algorithm: str | None = None
) -> str:
    """The cache identifier of a Decrypt request (the same for HTTP requests and prefetch)."""
    canonical = json.dumps(
        {
            "a": algorithm or "",
            "b": base64.b64encode(blob).decode(),
            "c": context or {},
            "k": key_id or "",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _fetch(reads: Reads, item: PrefetchItem) -> None:
    if item.kind == "sm":
        await reads.secret(item.target, item.version_id, item.version_stage)
    elif item.kind == "ssm":
        await reads.parameter(item.target, item.selector, item.decrypt)
    elif item.kind == "ssmpath":
        await reads.parameters_by_path(item.target, item.recursive, item.decrypt)
    else:
        blob = base64.b64decode(item.ciphertext)
        await reads.decrypt(blob, None, None, None, kms_digest(blob, None, None))


async def run_prefetch(
    reads: Reads, items: tuple[PrefetchItem, ...], budget: float = PREFETCH_BUDGET_SECONDS
) -> list[tuple[PrefetchItem, str]]:
    """Fetch every item; returns (item, errorType) for each failure. Values are never logged."""
    if not items:
        return []

    async def one(item: PrefetchItem) -> str | None:
        try:
            await asyncio.wait_for(_fetch(reads, item), budget)
        except SecretcacheError as exc:
            return exc.error_type
        except asyncio.TimeoutError:
            return "PrefetchTimeout"
        except Exception as exc:
            return type(exc).__name__
        return None

    reads.begin_prefetch()
    marker = in_prefetch.set(True)  # the tasks below copy this context
    try:
        outcomes = await asyncio.gather(*(one(item) for item in items))
    finally:
        in_prefetch.reset(marker)
        reads.end_prefetch()
    failures = [
        (item, error) for item, error in zip(items, outcomes, strict=True) if error is not None
    ]
    for item, error in failures:
        log.warn("prefetch.failed", item=item.label, errorType=error)
    log.info("prefetch.done", items=len(items), failed=len(failures))
    return failures
