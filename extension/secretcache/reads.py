"""The read core: typed read requests in, the cache policy applied, AWS-shaped bytes out.

Every front door (the fast path, the aiohttp app, prefetch) hands a value from `read_requests`
to `Reads`, and `Reads.respond` is the one function from a request to (status, headers, body).
The fast path asks `Reads.cached` first, so a hit is one dict lookup. Each service's cache
policy (`cache_policies`) is fixed at start and held by the cache; nothing passes a TTL around.
Each single read is cached under the key a lone request would use, so a batch or path read warms
the entries that later single reads hit, with the same bytes (`responses` serialises every body).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from . import responses
from .cache import CacheKey, Loader, Lookup, Policy, TtlCache
from .config import Config
from .errors import PathTooLarge, SecretcacheError, agent_error
from .log import log, where
from .read_requests import (
    DecryptRead,
    ParameterRead,
    ParametersRead,
    PathRead,
    Read,
    SecretRead,
    SecretsRead,
    SingleRead,
)
from .rotation import RotationWatch
from .service import Service
from .throttle import retry_after

#: Set inside the prefetch's own reads, which must not wait for the prefetch to finish.
in_prefetch: contextvars.ContextVar[bool] = contextvars.ContextVar("in_prefetch", default=False)
#: Lambda gives extensions and the runtime 10 s of INIT in all; leave room for the rest.
PREFETCH_BUDGET_SECONDS = 7.0
SSM_BATCH_LIMIT = 10
SECRETS_BATCH_LIMIT = 20
#: Selector slot of a by-path entry; parameter selectors always start with ":" so never collide.
PATH_SELECTOR = "bypath"
#: A path read warms single-parameter entries only while they fit in this share of the cache,
#: so one path cannot push everything else out.
PATH_SHARE_OF_CACHE = 0.25


class Upstream(Protocol):
    """What the read core needs from AWS: one coroutine per operation, results as the SDK's dicts.

    `backends.AwsBackends` (aiobotocore) implements it; any object with these members can be
    passed to `Reads` instead. Errors are raised as `SecretcacheError` subclasses.
    """

    @property
    def loaded(self) -> bool:
        """Whether the SDK has loaded (/health reports "starting" until then)."""

    async def get_secret_value(
        self,
        secret_id: str,
        version_id: str | None,
        version_stage: str | None,
        *,
        role_arn: str | None = None,
    ) -> dict[str, Any]: ...

    async def describe_secret(
        self, secret_id: str, *, role_arn: str | None = None
    ) -> dict[str, Any]: ...

    async def get_parameter(self, name: str, with_decryption: bool) -> dict[str, Any]: ...

    async def get_parameters(self, names: list[str], with_decryption: bool) -> dict[str, Any]: ...

    async def get_parameters_by_path(
        self, path: str, recursive: bool, with_decryption: bool, *, limit: int | None = None
    ) -> list[dict[str, Any]]: ...

    async def batch_get_secret_value(
        self, secret_ids: list[str], *, role_arn: str | None = None
    ) -> dict[str, Any]: ...

    async def decrypt(
        self,
        ciphertext: bytes,
        encryption_context: dict[str, str] | None,
        key_id: str | None,
        algorithm: str | None = None,
    ) -> dict[str, Any]: ...


class Response(NamedTuple):
    """What both HTTP stacks send: a status, headers beyond the JSON ones, and the body."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def cache_key(read: SingleRead) -> CacheKey:
    """Two reads AWS would answer differently never share a key."""
    if type(read) is SecretRead:
        # The Agent's body is another rendering of the same value: its own entry, "|agent".
        selector = f"{read.version_id or ''}|{read.version_stage or ''}"
        if read.agent:
            selector += "|agent"
        return CacheKey(
            Service.SECRETS_MANAGER, read.secret_id, selector, False, read.role_arn or ""
        )
    if type(read) is ParameterRead:
        return CacheKey(Service.SSM, read.name, read.selector, read.decrypt)
    if type(read) is PathRead:
        selector = PATH_SELECTOR + (":recursive" if read.recursive else "")
        return CacheKey(Service.SSM, read.path, selector, read.decrypt)
    assert type(read) is DecryptRead
    return CacheKey(Service.KMS, read.digest())


def cache_policies(config: Config) -> dict[Service, Policy]:
    """Each service's cache policy, fixed at start from the configuration."""
    stale = config.max_stale_seconds
    not_found = config.not_found_ttl
    backoff = float(config.throttle_backoff_seconds)
    return {
        Service.SECRETS_MANAGER: Policy(
            config.secrets_manager_ttl, not_found, stale, throttle_backoff=backoff
        ),
        Service.SSM: Policy(config.ssm_ttl, not_found, stale, throttle_backoff=backoff),
        Service.KMS: Policy(config.kms_ttl, not_found, stale, throttle_backoff=backoff),
    }


def single_body(read: SecretRead | ParameterRead, result: dict[str, Any]) -> bytes:
    """The bytes a single read stores for an upstream answer: GetSecretValue's output (or a
    BatchGetSecretValue entry, same fields) for a secret, a Parameter for a parameter. The single
    read's loader and the batched prefetch both render through here, so their entries are equal.
    """
    if type(read) is SecretRead:
        if read.agent:
            return responses.agent_secret_value_body(result)
        return responses.secret_value_body(result)
    assert type(read) is ParameterRead
    return responses.parameter_body({"Parameter": result}, read.selector)


def error_response(error: SecretcacheError, *, agent: bool = False) -> Response:
    """An error as the client sees it: ours, or (`agent`) as the Secrets Manager Agent sends it."""
    if agent:
        return Response(*agent_error(error))
    return Response(error.status, error.to_body())


def _unique(items: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(items))


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


#: Secrets Manager appends a hyphen and six random characters to a secret's name in its ARN.
_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}\Z")


def secret_id_forms(value: dict[str, Any]) -> set[str]:
    """Every id Secrets Manager resolves to this returned secret: its name, ARN and partial ARN."""
    forms = {str(value["Name"])} if value.get("Name") else set()
    arn = str(value.get("ARN") or "")
    if arn:
        forms.add(arn)
        if _ARN_SUFFIX.search(arn):
            forms.add(arn[:-7])
    return forms


def match_secret_values(
    requested: list[str], returned: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Pair each requested id with the one returned secret that id names, by exact forms only.

    An id is matched only when exactly one returned secret answers to it (as a name, full ARN or
    partial ARN), so a value is never served or cached under an id it was not proven to answer:
    matching by prefix once served `rt/prod-db` for the partial ARN of `rt/prod`.
    """
    forms = [(raw, secret_id_forms(raw)) for raw in returned]
    out: dict[str, dict[str, Any]] = {}
    for secret_id in requested:
        candidates = [raw for raw, names in forms if secret_id in names]
        if len(candidates) == 1:
            out[secret_id] = candidates[0]
    return out


class Reads:
    """What the extension can read, with each service's cache policy applied."""

    def __init__(self, config: Config, cache: TtlCache, backends: Upstream) -> None:
        self.config = config
        self.cache = cache
        self.backends = backends
        self._prefetching: asyncio.Event | None = None
        self._batches: dict[Read, asyncio.Task[Lookup]] = {}
        #: Items a batch refresh-ahead is fetching, and the tasks doing it.
        self._batch_refreshing: set[CacheKey] = set()
        self._background: set[asyncio.Task[None]] = set()
        #: SECRETCACHE_ROTATION_AWARE: ends a rotating secret's entries at its next rotation.
        self.rotation: RotationWatch | None = None
        if config.rotation_aware and config.secrets_manager_ttl > 0:
            self.rotation = RotationWatch(
                backends, cache.metrics, recheck=float(config.rotation_recheck)
            )
            cache.lifetime_limit = self.rotation.lifetime_limit

    # Prefetch ordering ------------------------------------------------------------------------

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
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), PREFETCH_BUDGET_SECONDS)

    # The front doors' entry points ------------------------------------------------------------

    def cached(self, read: SecretRead | ParameterRead | DecryptRead) -> bytes | None:
        """The hot path: the stored body of a fresh entry, else None (then call `respond`)."""
        if read.refresh:
            return None
        return self.cache.fresh(cache_key(read), self._loader(read))

    async def respond(self, read: Read) -> Response:
        """The one function from a read request to (status, headers, body); never raises."""
        agent = type(read) is SecretRead and read.agent
        try:
            lookup = await self.fetch(read)
        except SecretcacheError as exc:
            if exc.status >= 500:
                log.warn("request.failed", status=exc.status, errorType=exc.error_type)
            response = error_response(exc, agent=agent)
            if exc.retry_after is not None:  # throttled: the key's back-off (429)
                return response._replace(headers=(("Retry-After", retry_after(exc.retry_after)),))
            return response
        except Exception as exc:
            log.error("request.internal_error", error=type(exc).__name__, where=where(exc))
            return error_response(SecretcacheError("internal error"), agent=agent)
        if lookup.outcome == "stale":
            stale = (("Age", str(int(lookup.age))), ("X-Secretcache-Stale", "true"))
            return Response(200, lookup.body, stale)
        return Response(200, lookup.body)

    async def fetch(self, read: Read) -> Lookup:
        """Serve `read` from the cache or AWS; raises `SecretcacheError` (prefetch uses this)."""
        self.cache.clock()  # a restore shows here (wall-clock jump) before anything goes upstream
        if isinstance(read, ParametersRead):
            return await self._shared(read, self._parameters)
        if isinstance(read, SecretsRead):
            return await self._shared(read, self._secrets)
        return await self._single(read)

    async def _single(self, read: SingleRead) -> Lookup:
        """A fresh entry, or one upstream load shared by every waiter (after any prefetch)."""
        key = cache_key(read)
        load = self._loader(read)
        refresh = read.refresh
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
        return await self.cache.get(key, load, refresh=refresh)

    # Single reads -----------------------------------------------------------------------------

    def _loader(self, read: SingleRead) -> Loader:
        """The upstream call that answers `read`, as the bytes the cache stores."""
        backends = self.backends
        if type(read) is SecretRead:

            async def get_value() -> dict[str, Any]:
                if read.role_arn:
                    return await backends.get_secret_value(
                        read.secret_id, read.version_id, read.version_stage, role_arn=read.role_arn
                    )
                return await backends.get_secret_value(
                    read.secret_id, read.version_id, read.version_stage
                )

            fetch: Callable[[], Awaitable[dict[str, Any]]] = get_value
            # Only when the answer is stored: an uncached read has no entry to end early.
            if self.rotation is not None and read.version_id is None and self.cache.enabled:
                fetch = self.rotation.watch(
                    cache_key(read), read.secret_id, read.version_stage, get_value, read.role_arn
                )

            async def load_secret() -> bytes:
                return single_body(read, await fetch())

            return load_secret
        if type(read) is ParameterRead:

            async def load_parameter() -> bytes:
                result = await backends.get_parameter(read.name + read.selector, read.decrypt)
                return single_body(read, result.get("Parameter") or {})

            return load_parameter
        if type(read) is PathRead:

            async def load_path() -> bytes:
                return await self._load_path(read)

            return load_path
        assert type(read) is DecryptRead

        async def load_decrypt() -> bytes:
            context = read.encryption_context
            if read.algorithm:
                result = await backends.decrypt(read.blob, context, read.key_id, read.algorithm)
            else:
                result = await backends.decrypt(read.blob, context, read.key_id)
            return responses.decrypt_body(result)

        return load_decrypt

    async def _load_path(self, read: PathRead) -> bytes:
        """Every page of a path, up to SECRETCACHE_PATH_MAX_PARAMETERS parameters.

        The backend stops paging once it has more than the bound, so an oversized path costs a
        bounded number of pages and is refused, rather than fetched in full on every retry.
        """
        limit = self.config.path_max_parameters
        found = await self.backends.get_parameters_by_path(
            read.path, read.recursive, read.decrypt, limit=limit
        )
        if len(found) > limit:
            raise PathTooLarge(
                f"the path holds more than {limit} parameters; raise "
                "SECRETCACHE_PATH_MAX_PARAMETERS (and the cache size) to read it"
            )
        shaped = [responses.parameter(p) for p in found]
        if len(shaped) <= self.cache.max_entries * PATH_SHARE_OF_CACHE:
            for p in shaped:
                key = CacheKey(Service.SSM, p["Name"], "", read.decrypt)
                self.cache.put(key, responses.shaped_parameter_body(p))
        return responses.parameters_body(shaped, None)

    # Batch reads ------------------------------------------------------------------------------
    #
    # A batch read keeps the resilience of single reads, item by item: each item is cached under
    # its single-read key; a fresh item in its refresh-ahead window is refreshed in the
    # background, together with the batch's other such items, in one batch call; and when the
    # call for a chunk of missing items fails transiently, the chunk is answered from the items'
    # expired entries under the stale policy (all of the chunk's items, or the error).

    async def _shared(self, read: ParametersRead | SecretsRead, load: Any) -> Lookup:
        """One upstream batch for identical concurrent batch reads (forced refreshes excepted)."""
        await self._after_prefetch()
        if read.refresh:
            lookup: Lookup = await load(read)
            return lookup
        pending = self._batches.get(read)
        if pending is not None:
            self.cache.metrics.service(read.service).coalesced += 1
            return await asyncio.shield(pending)
        task: asyncio.Task[Lookup] = asyncio.get_running_loop().create_task(load(read))
        self._batches[read] = task

        def done(finished: asyncio.Task[Lookup]) -> None:
            if self._batches.get(read) is finished:
                del self._batches[read]
            if not finished.cancelled():
                finished.exception()  # retrieved, even if every caller has gone

        task.add_done_callback(done)
        return await asyncio.shield(task)

    def _from_cache(
        self, keys: dict[str, CacheKey], refresh: bool
    ) -> tuple[dict[str, bytes], list[str], list[str]]:
        """Fresh bodies by id, the ids to fetch, and the ids to refresh ahead.

        Once one fresh item is in its refresh-ahead window, every fresh item of the batch not
        already being refreshed is renewed with it: the items' jittered lifetimes differ, and
        renewing them one by one as each window opens would make a call per item.
        """
        cached: dict[str, bytes] = {}
        missing: list[str] = []
        due = False
        for item, key in keys.items():
            body = None if refresh else self.cache.fresh(key)
            if body is None:
                missing.append(item)
                continue
            cached[item] = body
            due = due or self.cache.refresh_due(key)
        ahead = [i for i in cached if keys[i] not in self._batch_refreshing] if due else []
        return cached, missing, ahead

    def _stale_chunk(
        self, chunk: list[str], keys: dict[str, CacheKey], error: BaseException
    ) -> tuple[dict[str, bytes], float]:
        """The chunk's items from their expired entries when the stale policy allows all of them;
        else the chunk's error is raised, as before."""
        lookups = None
        if isinstance(error, SecretcacheError):
            lookups = self.cache.stale([keys[item] for item in chunk], error)
        if lookups is None:
            raise error
        bodies = {item: lookup.body for item, lookup in zip(chunk, lookups, strict=True)}
        return bodies, max(lookup.age for lookup in lookups)

    def _refresh_ahead(
        self,
        service: Service,
        keys: list[CacheKey],
        fetch: Callable[[], Awaitable[Any]],
    ) -> None:
        """Run `fetch` (which stores what it gets) in the background, once per key at a time."""
        self._batch_refreshing.update(keys)
        self.cache.metrics.service(service).refreshes += len(keys)

        async def run() -> None:
            try:
                await fetch()
            except Exception as exc:  # the entries expire as usual; the next read fetches
                log.debug("batch.refresh_failed", errorType=getattr(exc, "error_type", "internal"))
            finally:
                self._batch_refreshing.difference_update(keys)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _parameters(self, read: ParametersRead) -> Lookup:
        """GetParameters in chunks of 10; fresh entries come from the cache."""
        wanted = _unique(read.names)
        decrypt = read.decrypt
        keys = {name: CacheKey(Service.SSM, name, "", decrypt) for name in wanted}
        cached, missing, due = self._from_cache(keys, read.refresh)
        found = {name: json.loads(body)["Parameter"] for name, body in cached.items()}
        invalid: set[str] = set()
        stale_age: float | None = None
        if missing:
            self.cache.metrics.service(Service.SSM).misses += len(missing)
            chunks = _chunks(missing, SSM_BATCH_LIMIT)
            results = await asyncio.gather(
                *(self._parameter_chunk(c, decrypt) for c in chunks), return_exceptions=True
            )
            for chunk, result in zip(chunks, results, strict=True):
                if isinstance(result, BaseException):
                    bodies, age = self._stale_chunk(chunk, keys, result)
                    found.update({n: json.loads(b)["Parameter"] for n, b in bodies.items()})
                    stale_age = max(age, stale_age or 0.0)
                    continue
                chunk_found, chunk_invalid = result
                found.update(chunk_found)
                invalid |= chunk_invalid
        if due:

            async def refresh() -> None:
                await asyncio.gather(
                    *(self._parameter_chunk(c, decrypt) for c in _chunks(due, SSM_BATCH_LIMIT))
                )

            self._refresh_ahead(Service.SSM, [keys[n] for n in due], refresh)
        ordered = [found[n] for n in wanted if n in found]
        body = responses.parameters_body(
            ordered, [n for n in wanted if n in invalid and n not in found]
        )
        return _batch_lookup(body, stale_age)

    async def _parameter_chunk(
        self, chunk: list[str], decrypt: bool
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """One GetParameters call: what it found (each item stored) and the invalid names."""
        result = await self.backends.get_parameters(chunk, decrypt)
        found: dict[str, dict[str, Any]] = {}
        for name, raw in self._match_parameters(chunk, result.get("Parameters") or []).items():
            shaped = responses.parameter(raw)
            found[name] = shaped
            key = CacheKey(Service.SSM, name, "", decrypt)
            self.cache.put(key, responses.shaped_parameter_body(shaped))
        return found, set(result.get("InvalidParameters") or [])

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

    async def _secrets(self, read: SecretsRead) -> Lookup:
        """BatchGetSecretValue in chunks of 20; fresh entries come from the cache."""
        wanted = _unique(read.secret_ids)
        role = read.role_arn
        keys = {secret_id: cache_key(SecretRead(secret_id, role_arn=role)) for secret_id in wanted}
        cached, missing, due = self._from_cache(keys, read.refresh)
        found = {secret_id: _batch_item(body) for secret_id, body in cached.items()}
        errors: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        stale_age: float | None = None
        if missing:
            self.cache.metrics.service(Service.SECRETS_MANAGER).misses += len(missing)
            chunks = _chunks(missing, SECRETS_BATCH_LIMIT)
            results = await asyncio.gather(
                *(self._secret_chunk(c, role) for c in chunks), return_exceptions=True
            )
            for chunk, result in zip(chunks, results, strict=True):
                if isinstance(result, BaseException):
                    bodies, age = self._stale_chunk(chunk, keys, result)
                    found.update({s: _batch_item(b) for s, b in bodies.items()})
                    stale_age = max(age, stale_age or 0.0)
                    continue
                chunk_found, chunk_errors, chunk_extra = result
                found.update(chunk_found)
                errors.extend(chunk_errors)
                extra.extend(chunk_extra)
        if due:

            async def refresh() -> None:
                await asyncio.gather(
                    *(self._secret_chunk(c, role) for c in _chunks(due, SECRETS_BATCH_LIMIT))
                )

            self._refresh_ahead(Service.SECRETS_MANAGER, [keys[s] for s in due], refresh)
        values = [found[s] for s in wanted if s in found] + extra
        return _batch_lookup(responses.secret_values_body(values, errors), stale_age)

    async def _secret_chunk(
        self, chunk: list[str], role: str | None
    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """One BatchGetSecretValue call (through `role` when named): the values matched to ids
        (each stored), AWS's errors, and values returned that no id asked for can be proven to
        name."""
        if role:
            result = await self.backends.batch_get_secret_value(chunk, role_arn=role)
        else:
            result = await self.backends.batch_get_secret_value(chunk)
        returned = result.get("SecretValues") or []
        matched = match_secret_values(chunk, returned)
        claimed = {id(raw) for raw in matched.values()}
        extra = [responses.secret_value(raw) for raw in returned if id(raw) not in claimed]
        found: dict[str, dict[str, Any]] = {}
        for secret_id, raw in matched.items():
            shaped = responses.secret_value(raw)
            found[secret_id] = shaped
            key = cache_key(SecretRead(secret_id, role_arn=role))
            self.cache.put(key, responses.shaped_secret_value_body(shaped))
        return found, list(result.get("Errors") or []), extra


def _batch_item(body: bytes) -> dict[str, Any]:
    """A single read's stored body as an item of a batch answer (no ResultMetadata)."""
    entry: dict[str, Any] = json.loads(body)
    entry.pop("ResultMetadata", None)
    return entry


def _batch_lookup(body: bytes, stale_age: float | None) -> Lookup:
    """A batch answer: stale (with the oldest item's age) when any chunk was served stale."""
    if stale_age is None:
        return Lookup(body, "batch")
    return Lookup(body, "stale", stale_age)
