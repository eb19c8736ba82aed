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
from .service import Service

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
    return {
        Service.SECRETS_MANAGER: Policy(config.secrets_manager_ttl, not_found, stale),
        Service.SSM: Policy(config.ssm_ttl, not_found, stale),
        Service.KMS: Policy(config.kms_ttl, not_found, stale),
    }


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
        self._batches: dict[Read, asyncio.Task[bytes]] = {}

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
            return error_response(exc, agent=agent)
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
            return Lookup(await self._shared(read, self._parameters), "batch")
        if isinstance(read, SecretsRead):
            return Lookup(await self._shared(read, self._secrets), "batch")
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
            render = (
                responses.agent_secret_value_body if read.agent else responses.secret_value_body
            )

            async def load_secret() -> bytes:
                if read.role_arn:
                    result = await backends.get_secret_value(
                        read.secret_id, read.version_id, read.version_stage, role_arn=read.role_arn
                    )
                else:
                    result = await backends.get_secret_value(
                        read.secret_id, read.version_id, read.version_stage
                    )
                return render(result)

            return load_secret
        if type(read) is ParameterRead:

            async def load_parameter() -> bytes:
                result = await backends.get_parameter(read.name + read.selector, read.decrypt)
                return responses.parameter_body(result, read.selector)

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

    async def _shared(self, read: ParametersRead | SecretsRead, load: Any) -> bytes:
        """One upstream batch for identical concurrent batch reads (forced refreshes excepted)."""
        await self._after_prefetch()
        if read.refresh:
            body: bytes = await load(read)
            return body
        pending = self._batches.get(read)
        if pending is not None:
            self.cache.metrics.service(read.service).coalesced += 1
            return await asyncio.shield(pending)
        task: asyncio.Task[bytes] = asyncio.get_running_loop().create_task(load(read))
        self._batches[read] = task

        def done(finished: asyncio.Task[bytes]) -> None:
            if self._batches.get(read) is finished:
                del self._batches[read]
            if not finished.cancelled():
                finished.exception()  # retrieved, even if every caller has gone

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _parameters(self, read: ParametersRead) -> bytes:
        """GetParameters in chunks of 10; fresh entries come from the cache."""
        wanted = _unique(read.names)
        decrypt = read.decrypt
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for name in wanted:
            key = CacheKey(Service.SSM, name, "", decrypt)
            body = None if read.refresh else self.cache.fresh(key)
            if body is None:
                missing.append(name)
            else:
                found[name] = json.loads(body)["Parameter"]
        invalid: set[str] = set()
        if missing:
            self.cache.metrics.service(Service.SSM).misses += len(missing)
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
                    key = CacheKey(Service.SSM, name, "", decrypt)
                    self.cache.put(key, responses.shaped_parameter_body(shaped))
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

    async def _secrets(self, read: SecretsRead) -> bytes:
        """BatchGetSecretValue in chunks of 20; fresh entries come from the cache."""
        wanted = _unique(read.secret_ids)
        role = read.role_arn
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for secret_id in wanted:
            key = cache_key(SecretRead(secret_id, role_arn=role))
            body = None if read.refresh else self.cache.fresh(key)
            if body is None:
                missing.append(secret_id)
            else:
                entry = json.loads(body)
                entry.pop("ResultMetadata", None)
                found[secret_id] = entry
        errors: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        if missing:
            self.cache.metrics.service(Service.SECRETS_MANAGER).misses += len(missing)
            chunks = _chunks(missing, SECRETS_BATCH_LIMIT)
            results = await asyncio.gather(
                *(
                    self.backends.batch_get_secret_value(c, role_arn=role)
                    if role
                    else self.backends.batch_get_secret_value(c)
                    for c in chunks
                )
            )
            for chunk, result in zip(chunks, results, strict=True):
                errors.extend(result.get("Errors") or [])
                returned = result.get("SecretValues") or []
                matched = match_secret_values(chunk, returned)
                claimed = {id(raw) for raw in matched.values()}
                extra.extend(
                    responses.secret_value(raw) for raw in returned if id(raw) not in claimed
                )
                for secret_id, raw in matched.items():
                    shaped = responses.secret_value(raw)
                    found[secret_id] = shaped
                    key = cache_key(SecretRead(secret_id, role_arn=role))
                    self.cache.put(key, responses.shaped_secret_value_body(shaped))
        values = [found[s] for s in wanted if s in found] + extra
        return responses.secret_values_body(values, errors)
