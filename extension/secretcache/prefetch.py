"""Warm the cache at INIT from SECRETCACHE_PREFETCH, concurrently, before reporting ready.

Each item was parsed by `config` into the same typed read a request would be, so a prefetched
entry is exactly the one that request hits.
"""

from __future__ import annotations

import asyncio

from .config import PrefetchItem
from .errors import SecretcacheError
from .log import log
from .reads import PREFETCH_BUDGET_SECONDS, Reads, in_prefetch


async def run_prefetch(
    reads: Reads, items: tuple[PrefetchItem, ...], budget: float = PREFETCH_BUDGET_SECONDS
) -> list[tuple[PrefetchItem, str]]:
    """Fetch every item; returns (item, errorType) for each failure. Values are never logged."""
    if not items:
        return []

    async def one(item: PrefetchItem) -> str | None:
        try:
            await asyncio.wait_for(reads.fetch(item.read), budget)
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
