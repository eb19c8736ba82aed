"""Read operations: cache keys, loaders and AWS-shaped bodies, shared by the HTTP API and prefetch.

Each single read is cached under the key a lone request would use, so a batch or path read warms
the entries that later single reads hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from typing import Any

from . import responses
from .backends import AwsBackends
from .cache import CacheKey, Loader, Lookup, TtlCache
from .config import Config

#: Set inside the prefetch's own reads, which must not wait for the prefetch to finish.
in_prefetch: contextvars.ContextVar[bool] = contextvars.ContextVar("in_prefetch", default=False)
SSM_BATCH_LIMIT = 10
SECRETS_BATCH_LIMIT = 20
#: Selector slot of a by-path entry; parameter selectors always start with ":" so never collide.
PATH_SELECTOR = "bypath"


def secret_key(secret_id: str, version_id: str | None, version_stage: str | None) -> CacheKey:
    return CacheKey("secretsmanager", secret_id, f"{version_id or ''}|{version_stage or ''}")


def parameter_key(name: str, selector: str, decrypt: bool) -> CacheKey:
    return CacheKey("ssm", name, selector, decrypt)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Reads:
    """What the extension can read, with the cache policy applied."""

    def __init__(self, config: Config, cache: TtlCache, backends: AwsBackends) -> None:
        self.config = config
        self.cache = cache
        self.backends = backends
        self._prefetching: asyncio.Event | None = None

    def begin_prefetch(self) -> None:
        """From now until `end_prefetch`, reads that miss wait for the prefetch to finish.

        Lambda starts the function's INIT once extensions register, so a handler reading at
        import races the prefetch; waiting makes its first read of a prefetched item a hit
        instead of a second upstream call.
        """
        if self._prefetching is None:
            self._prefetching = asyncio.Event()

    def end_prefetch(self) -> None:
        if self._prefetching is not None:
            self._prefetching.set()
            self._prefetching = None

    async def _after_prefetch(self) -> None:
        event = self._prefetching
        if event is not None and not in_prefetch.get():
            from .prefetch import PREFETCH_BUDGET_SECONDS

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), PREFETCH_BUDGET_SECONDS)

    def secret_read(
        self, secret_id: str, version_id: str | None = None, version_stage: str | None = None
    ) -> tuple[CacheKey, Loader, float]:
        """Key, loader and TTL of a GetSecretValue read (for `read`, or a fast-path hit)."""

        async def load() -> bytes:
            result = await self.backends.get_secret_value(secret_id, version_id, version_stage)
            return responses.secret_value_body(result)

        key = secret_key(secret_id, version_id, version_stage)
        return key, load, self.config.secrets_manager_ttl

    def parameter_read(
        self, name: str, selector: str = "", decrypt: bool = False
    ) -> tuple[CacheKey, Loader, float]:
        """Key, loader and TTL of a GetParameter read."""

        async def load() -> bytes:
            result = await self.backends.get_parameter(name + selector, decrypt)
            return responses.parameter_body(result, selector)

        return parameter_key(name, selector, decrypt), load, self.config.ssm_ttl

    async def secret(
        self,
        secret_id: str,
        version_id: str | None = None,
        version_stage: str | None = None,
        *,
        refresh: bool = False,
    ) -> Lookup:
        key, load, ttl = self.secret_read(secret_id, version_id, version_stage)
        return await self.read(key, load, ttl, refresh)

    async def parameter(
        self, name: str, selector: str = "", decrypt: bool = False, *, refresh: bool = False
    ) -> Lookup:
        key, load, ttl = self.parameter_read(name, selector, decrypt)
        return await self.read(key, load, ttl, refresh)

    def decrypt_read(
        self,
        blob: bytes,
        context: dict[str, str] | None,
        key_id: str | None,
        algorithm: str | None,
        digest: str,
    ) -> tuple[CacheKey, Loader, float]:
        """The cache key, loader and TTL of a Decrypt (shared by both HTTP paths)."""
        key = CacheKey("kms", digest)

        async def load() -> bytes:
            if algorithm:
                result = await self.backends.decrypt(blob, context, key_id, algorithm)
            else:
                result = await self.backends.decrypt(blob, context, key_id)
            return responses.decrypt_body(result)

        return key, load, self.config.kms_ttl

    async def decrypt(
        self,
        blob: bytes,
        context: dict[str, str] | None,
        key_id: str | None,
        algorithm: str | None,
        digest: str,
        *,
        refresh: bool = False,
    ) -> Lookup:
        key, load, ttl = self.decrypt_read(blob, context, key_id, algorithm, digest)
        return await self.read(key, load, ttl, refresh)

    async def parameters_by_path(
        self, path: str, recursive: bool, decrypt: bool, *, refresh: bool = False
    ) -> Lookup:
        key = CacheKey("ssm", path, PATH_SELECTOR + (":recursive" if recursive else ""), decrypt)
        ttl = self.config.ssm_ttl

        async def load() -> bytes:
            found = await self.backends.get_parameters_by_path(path, recursive, decrypt)
            shaped = [responses.parameter(p) for p in found]
            for p in shaped:
                single = json.dumps({"Parameter": p, "ResultMetadata": {}}, separators=(",", ":"))
                self.cache.put(parameter_key(p["Name"], "", decrypt), single.encode(), ttl)
            return responses.parameters_body(shaped, None)

        return await self.read(key, load, ttl, refresh)

    async def parameters(self, names: list[str], decrypt: bool, *, refresh: bool = False) -> bytes:
        """GetParameters in chunks of 10; fresh entries come from the cache."""
        await self._after_prefetch()
        wanted = _unique(names)
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for name in wanted:
            body = None if refresh else self.cache.fresh(parameter_key(name, "", decrypt))
            if body is None:
                missing.append(name)
            else:
                found[name] = json.loads(body)["Parameter"]
        invalid: set[str] = set()
        if missing:
            self.cache.service_stats("ssm").misses += len(missing)
            chunks = _chunks(missing, SSM_BATCH_LIMIT)
            results = await asyncio.gather(
                *(self.backends.get_parameters(c, decrypt) for c in chunks)
            )
            for chunk, result in zip(chunks, results, strict=True):
                invalid.update(result.get("InvalidParameters") or [])
                by_name = self._match_parameters(chunk, result.get("Parameters") or [])
                for name, raw in by_name.items():
                    shaped = responses.parameter(raw)
                    found[name] = shaped
                    single = json.dumps(
                        {"Parameter": shaped, "ResultMetadata": {}}, separators=(",", ":")
                    )
                    self.cache.put(
                        parameter_key(name, "", decrypt), single.encode(), self.config.ssm_ttl
                    )
        ordered = [found[n] for n in wanted if n in found]
        return responses.parameters_body(
            ordered, [n for n in wanted if n in invalid and n not in found]
        )

    @staticmethod
    def _match_parameters(
        requested: list[str], returned: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Pair returned parameters with the names asked for (a name, a name:selector or an ARN)."""
        out: dict[str, dict[str, Any]] = {}
        for p in returned:
            forms = {p.get("Name"), p.get("ARN"), f"{p.get('Name')}{p.get('Selector') or ''}"}
            for name in requested:
                if name in forms and name not in out:
                    out[name] = p
        return out

    async def secrets(self, secret_ids: list[str], *, refresh: bool = False) -> bytes:
        """BatchGetSecretValue in chunks of 20; fresh entries come from the cache."""
        await self._after_prefetch()
        wanted = _unique(secret_ids)
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for secret_id in wanted:
            body = None if refresh else self.cache.fresh(secret_key(secret_id, None, None))
            if body is None:
                missing.append(secret_id)
            else:
                entry = json.loads(body)
                entry.pop("ResultMetadata", None)
                found[secret_id] = entry
        errors: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        if missing:
            self.cache.service_stats("secretsmanager").misses += len(missing)
            chunks = _chunks(missing, SECRETS_BATCH_LIMIT)
            results = await asyncio.gather(
                *(self.backends.batch_get_secret_value(c) for c in chunks)
            )
            for chunk, result in zip(chunks, results, strict=True):
                errors.extend(result.get("Errors") or [])
                for raw in result.get("SecretValues") or []:
                    shaped = responses.secret_value(raw)
                    matched = self._match_secret(chunk, raw)
                    if matched is None:
                        extra.append(shaped)
                        continue
                    found[matched] = shaped
                    single = json.dumps({**shaped, "ResultMetadata": {}}, separators=(",", ":"))
                    self.cache.put(
                        secret_key(matched, None, None),
                        single.encode(),
                        self.config.secrets_manager_ttl,
                    )
        values = [found[s] for s in wanted if s in found] + extra
        return responses.secret_values_body(values, errors)

    @staticmethod
    def _match_secret(requested: list[str], raw: dict[str, Any]) -> str | None:
        name, arn = raw.get("Name"), str(raw.get("ARN") or "")
        for secret_id in requested:
            if secret_id in (name, arn) or (
                secret_id.startswith("arn:") and arn.startswith(secret_id)
            ):
                return secret_id
        return None

    async def read(self, key: CacheKey, load: Loader, ttl: float, refresh: bool) -> Lookup:
        """A fresh entry, or one upstream load shared by every waiter (after any prefetch)."""
        if not refresh:
            body = self.cache.fresh(key, load)
            if body is not None:
                return Lookup(body, "hit")
        if self._prefetching is not None:
            await self._after_prefetch()
            if not refresh:
                body = self.cache.fresh(key, load)
                if body is not None:
                    return Lookup(body, "hit")
        return await self.cache.get(
            key, load, ttl, refresh=refresh, not_found_ttl=self.config.not_found_ttl
        )
