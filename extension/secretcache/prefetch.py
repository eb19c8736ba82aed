"""Warm the cache at INIT from SECRETCACHE_PREFETCH, concurrently, before reporting ready.

Each item was parsed by `config` into the same typed read a request would be, so a prefetched
entry is exactly the one that request hits.

Items AWS can answer in one call are fetched in batches: plain `ssm:` names with GetParameters
(up to 10 a call, one group per withDecryption), and `sm:` items reading AWSCURRENT (no
versionId, versionStage or roleArn) with BatchGetSecretValue (up to 20 a call, one group per
region). Each answer is stored under the item's single-read key, rendered by `single_body`, the
renderer the single read uses, so the entry holds the bytes a single read would have stored. A
group of one item is read singly (a batch call saves nothing), as are:

- `ssm:` items with a version or label: GetParameters takes `name:selector` and AWS echoes the
  `Selector`, but moto 5.2.5 answers without it (checked), so `/p:1` and `/p` in one call come
  back as two `/p` entries that cannot be told apart, and equality with the single read's entry
  cannot be proven here;
- `ssm:` names given as ARNs (GetParameters resolves them, but the single read's entry is what
  this module promises, and an ARN item is rare in a prefetch list);
- `sm:` items under SECRETCACHE_ROTATION_AWARE (the single read runs DescribeSecret beside
  GetSecretValue to end the entry at the next rotation; a batch answer carries no schedule);
- everything when the cache stores nothing (SnapStart's INIT, TTL 0): there is no entry to warm.

An item a batch answer does not carry (not found, access denied, an id that names no returned
secret) and every item of a batch call that failed is read singly, so each item's error is the
one a single read reports today. The whole prefetch stays within `budget` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from .arns import arn_region
from .config import PrefetchItem
from .errors import SecretcacheError
from .log import log
from .read_requests import ParameterRead, SecretRead
from .reads import (
    PREFETCH_BUDGET_SECONDS,
    SECRETS_BATCH_LIMIT,
    SSM_BATCH_LIMIT,
    Reads,
    cache_key,
    in_prefetch,
    match_secret_values,
    single_body,
)
from .service import Service

#: A batch group: how the item is grouped ("ssm", decrypt) or ("sm", region) and its id.
GroupKey = tuple[str, object]


def batch_group(reads: Reads, read: object) -> tuple[GroupKey, str] | None:
    """The batch group and the identifier a batch call asks for, or None: read it singly."""
    cache = reads.cache
    if not cache.enabled:
        return None
    if type(read) is ParameterRead:
        if read.selector or read.refresh or read.name.startswith("arn:"):
            return None
        if cache.policies[Service.SSM].ttl <= 0:
            return None
        return ("ssm", read.decrypt), read.name
    if type(read) is SecretRead:
        if read.version_id or read.version_stage or read.role_arn or read.refresh:
            return None
        if reads.rotation is not None or cache.policies[Service.SECRETS_MANAGER].ttl <= 0:
            return None
        try:
            region = arn_region(read.secret_id, "secretsmanager")
        except SecretcacheError:
            return None  # the single read reports the bad ARN
        if region == reads.config.region:
            region = None
        return ("sm", region), read.secret_id
    return None


async def run_prefetch(
    reads: Reads, items: tuple[PrefetchItem, ...], budget: float = PREFETCH_BUDGET_SECONDS
) -> list[tuple[PrefetchItem, str]]:
    """Fetch every item; returns (item, errorType) for each failure. Values are never logged."""
    if not items:
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget

    async def single(item: PrefetchItem) -> str | None:
        left = deadline - loop.time()
        if left <= 0:
            return "PrefetchTimeout"
        try:
            await asyncio.wait_for(reads.fetch(item.read), left)
        except SecretcacheError as exc:
            return exc.error_type
        except asyncio.TimeoutError:
            return "PrefetchTimeout"
        except Exception as exc:
            return type(exc).__name__
        return None

    groups: dict[GroupKey, dict[str, list[int]]] = {}
    singles: list[int] = []
    for index, item in enumerate(items):
        grouped = batch_group(reads, item.read)
        if grouped is None:
            singles.append(index)
            continue
        key, identifier = grouped
        groups.setdefault(key, {}).setdefault(identifier, []).append(index)
    for key, members in list(groups.items()):
        if len(members) < 2:  # one identifier: GetParameter/GetSecretValue is as cheap
            del groups[key]
            singles.extend(i for indices in members.values() for i in indices)

    outcomes: list[str | None] = [None] * len(items)

    async def read_singly(indices: list[int]) -> None:
        results = await asyncio.gather(*(single(items[i]) for i in indices))
        for i, error in zip(indices, results, strict=True):
            outcomes[i] = error

    async def read_batch(key: GroupKey, members: dict[str, list[int]]) -> None:
        """One batch call; what it does not warm is read singly, within the budget."""
        left = deadline - loop.time()
        warmed: set[str] = set()
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            warmed = await asyncio.wait_for(_warm(reads, key, members, items), left)
        except asyncio.TimeoutError:
            log.warn("prefetch.batch_failed", items=len(members), errorType="PrefetchTimeout")
        except SecretcacheError as exc:
            log.warn("prefetch.batch_failed", items=len(members), errorType=exc.error_type)
        except Exception as exc:
            log.warn("prefetch.batch_failed", items=len(members), errorType=type(exc).__name__)
        rest = [i for ident, indices in members.items() if ident not in warmed for i in indices]
        if rest:
            await read_singly(rest)

    reads.begin_prefetch()
    marker = in_prefetch.set(True)  # the tasks below copy this context
    try:
        work: list[Awaitable[None]] = [read_singly(singles)] if singles else []
        for key, members in groups.items():
            identifiers = list(members)
            size = SSM_BATCH_LIMIT if key[0] == "ssm" else SECRETS_BATCH_LIMIT
            for start in range(0, len(identifiers), size):
                chunk = {i: members[i] for i in identifiers[start : start + size]}
                work.append(read_batch(key, chunk))
        await asyncio.gather(*work)
    finally:
        in_prefetch.reset(marker)
        reads.end_prefetch()
    failures = [
        (item, error) for item, error in zip(items, outcomes, strict=True) if error is not None
    ]
    for item, error in failures:
        log.warn("prefetch.failed", item=item.label, errorType=error)
    took = budget - (deadline - loop.time())
    log.info("prefetch.done", items=len(items), failed=len(failures), ms=round(took * 1000, 1))
    return failures


async def _warm(
    reads: Reads,
    key: GroupKey,
    members: dict[str, list[int]],
    items: tuple[PrefetchItem, ...],
) -> set[str]:
    """One GetParameters or BatchGetSecretValue call; stores each answered item under its
    single-read key and returns the identifiers stored."""
    identifiers = list(members)
    service = Service.SSM if key[0] == "ssm" else Service.SECRETS_MANAGER
    answered: dict[str, dict[str, Any]]
    if key[0] == "ssm":
        result = await reads.backends.get_parameters(identifiers, bool(key[1]))
        returned = result.get("Parameters") or []
        by_name = {str(p.get("Name")): p for p in returned}
        answered = {name: by_name[name] for name in identifiers if name in by_name}
    else:
        result = await reads.backends.batch_get_secret_value(identifiers)
        answered = match_secret_values(identifiers, result.get("SecretValues") or [])
    for identifier, raw in answered.items():
        for index in members[identifier]:
            read = items[index].read
            assert type(read) is ParameterRead or type(read) is SecretRead
            reads.cache.put(cache_key(read), single_body(read, raw))
            # Counted as the single read would count it; the items left over count their own.
            reads.cache.metrics.service(service).misses += 1
    return set(answered)
