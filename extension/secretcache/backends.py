"""AWS calls through aiobotocore: one method per operation, retries with full jitter, error mapping.

The SDK (botocore's import and service models cost ~0.3 s) loads in a background thread so the
extension can register and listen first; a request that needs AWS before then waits for it.
Backends know nothing of caching.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .arns import arn_region
from .aws.credentials import Credentials
from .errors import (
    AccessDenied,
    BadRequest,
    NotFound,
    RoleAccessDenied,
    SecretcacheError,
    ServiceUnavailable,
    Throttled,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
)
from .log import log
from .roles import DEFAULT_MAX_ROLES, MANDATORY_REFRESH_SECONDS, RoleRegistry, session_name
from .throttle import upstream_attempts

SERVICES = ("secretsmanager", "ssm", "kms")
#: STS: only AssumeRole, for reads through a role (`roleArn`); not counted in /metrics.
STS = "sts"
#: How long a request waits for the SDK to finish loading before giving up.
SDK_LOAD_WAIT_SECONDS = 30.0
MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 1.0

_NOT_FOUND = frozenset(
    {
        "ResourceNotFoundException",
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "NotFoundException",
    }
)
_ACCESS = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "KMSAccessDeniedException",
    }
)
_THROTTLE = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ThrottledException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
_BAD_REQUEST = frozenset(
    {
        "ValidationException",
        "InvalidParameterException",
        "InvalidRequestException",
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "InvalidKeyUsageException",
        "InvalidGrantTokenException",
        "DisabledException",
        "KMSInvalidStateException",
        "InvalidKeyId",
        "ParameterVersionLabelLimitExceeded",
        "UnsupportedOperationException",
    }
)
_MAX_MESSAGE = 300


async def _close_contexts(contexts: list[Any]) -> None:
    for context in contexts:
        try:
            await context.__aexit__(None, None, None)
        except Exception as exc:
            log.debug("sdk.close_failed", error=type(exc).__name__)


def classify(exc: BaseException, service: str) -> SecretcacheError:
    """Map an SDK or transport exception to our error; the message holds no request data."""
    if isinstance(exc, SecretcacheError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(f"{service} did not answer in time")
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response.get("Error") or {}
        code = str(error.get("Code") or "UnknownError")
        aws_message = str(error.get("Message") or "")[:_MAX_MESSAGE]
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        message = f"{service}: {code}" + (f": {aws_message}" if aws_message else "")
        if code in _NOT_FOUND:
            return NotFound(message, error_type=code)
        if code in _ACCESS:
            return AccessDenied(message, error_type=code)
        if code in _THROTTLE or status == 429:
            return Throttled(message, error_type=code)
        if code in _BAD_REQUEST:
            return BadRequest(message, error_type=code)
        if status >= 500 or status == 0:
            return UpstreamError(message, error_type=code)
        return UpstreamClientError(message, error_type=code)
    name = type(exc).__name__
    if name in ("ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError"):
        return UpstreamTimeout(f"{service} did not answer in time ({name})")
    if name == "ParamValidationError":
        return BadRequest(f"{service}: the request is not valid for the AWS API", error_type=name)
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError"):
        return UpstreamClientError(
            f"{service}: {name}: check the function's AWS configuration", error_type=name
        )
    # Connection refused/reset, truncated responses, DNS: all transient transport failures.
    return UpstreamError(f"{service} is unreachable ({name})", error_type="UpstreamUnavailable")


class AwsBackends:
    """aiobotocore clients for Secrets Manager, SSM and KMS, loaded off the start-up path."""

    def __init__(
        self,
        *,
        max_connections: int,
        timeouts: dict[str, float],
        region: str | None = None,
        rand: Callable[[], float] = random.random,
        max_roles: int = DEFAULT_MAX_ROLES,
        function_name: str | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._timeouts = {STS: max(timeouts.values(), default=5.0), **timeouts}
        self._rand = rand
        self._region = region
        self._session: Any = None
        #: (service, region or "", role ARN or "") -> client; "" = the function's own.
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._client_contexts: list[Any] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._role_sessions: dict[str, Any] = {}
        self._semaphores = {s: asyncio.Semaphore(max_connections) for s in (*SERVICES, STS)}
        self._session_name = session_name(function_name)
        self.roles = RoleRegistry(max_roles, self._assume_role)
        self._ready: asyncio.Future[None] | None = None
        self._create_lock = asyncio.Lock()
        self.load_error: str | None = None
        #: Told of every API call: service, seconds, errorType or None.
        self.call_observer: Callable[[str, float, str | None], None] | None = None

    @property
    def loaded(self) -> bool:
        return self._ready is not None and self._ready.done() and self.load_error is None

    def start_loading(self) -> None:
        """Import aiobotocore and read the service models in a thread; returns at once."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        ready = self._ready

        def finish(error: str | None) -> None:
            self.load_error = error
            if not ready.done():
                ready.set_result(None)

        def load() -> None:
            try:
                from aiobotocore.session import get_session

                session = get_session()
                # Parse the JSON models now, off the event loop; clients reuse the loader's cache.
                loader = session.get_component("data_loader")
                for service in SERVICES:
                    for kind in ("service-2", "endpoint-rule-set-1"):
                        loader.load_service_model(service, kind)
                loader.load_data("partitions")
                self._session = session
                error = None
            except Exception as exc:  # reported to every request that needs AWS
                error = f"{type(exc).__name__}"
            loop.call_soon_threadsafe(finish, error)

        threading.Thread(target=load, name="secretcache-sdk-loader", daemon=True).start()

    async def wait_loaded(self, timeout: float = SDK_LOAD_WAIT_SECONDS) -> None:
        if self._ready is None:
            self.start_loading()
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            raise ServiceUnavailable("the AWS SDK is still loading") from None
        if self.load_error is not None:
            raise ServiceUnavailable(f"the AWS SDK failed to load ({self.load_error})")

    def _client_key(
        self, service: str, region: str | None, role: str | None
    ) -> tuple[str, str, str]:
        """The function's own region is "" whether it was named or not: one client for both."""
        if region == self._region:
            region = None
        return (service, region or "", role or "")

    async def _client(
        self, service: str, region: str | None = None, role: str | None = None
    ) -> Any:
        key = self._client_key(service, region, role)
        client = self._clients.get(key)
        if client is not None:
            return client
        await self.wait_loaded()
        session = self._session
        if role:
            session = self._role_session(role, await self.roles.credentials(role))
        async with self._create_lock:
            client = self._clients.get(key)
            if client is None:
                from aiobotocore.config import AioConfig

                timeout = self._timeouts[service]
                config = AioConfig(
                    max_pool_connections=self._max_connections,
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    # One SDK attempt: we retry ourselves within the deadline. (botocore's
                    # `max_attempts` counts retries, so 1 would mean a second attempt after
                    # a hidden backoff of up to 1 s.)
                    retries={"total_max_attempts": 1, "mode": "standard"},
                )
                context = session.create_client(
                    service, region_name=key[1] or self._region, config=config
                )
                try:
                    client = await context.__aenter__()
                except Exception as exc:
                    raise classify(exc, service) from None
                self._client_contexts.append(context)
                self._clients[key] = client
        return client

    def _role_session(self, role: str, source: Any) -> Any:
        """An aiobotocore session whose credentials are the role's, refreshed through `roles`."""
        session = self._role_sessions.get(role)
        if session is not None:
            return session
        import logging

        from aiobotocore.credentials import AioDeferredRefreshableCredentials
        from aiobotocore.session import AioSession

        # A failed refresh reaches the read as its error; botocore's own warning would print a
        # traceback on stderr (the process's lastResort handler), so it is not let through.
        quiet = logging.getLogger("aiobotocore.credentials")
        quiet.handlers[:] = [logging.NullHandler()]
        quiet.propagate = False

        class RoleSessionCredentials(AioDeferredRefreshableCredentials):  # type: ignore[misc]
            # botocore refuses credentials within 10 min of expiry; ours keep old ones to 1 min.
            _mandatory_refresh_timeout = MANDATORY_REFRESH_SECONDS

        async def refresh() -> dict[str, Any]:
            current: Credentials = await source.get()
            expiry = datetime.fromtimestamp(current.expires_at or 0, tz=timezone.utc)
            return {
                "access_key": current.access_key,
                "secret_key": current.secret_key,
                "token": current.token,
                "expiry_time": expiry.isoformat(),
            }

        credentials = RoleSessionCredentials(refresh_using=refresh, method="assume-role")

        class FixedProvider:
            async def load_credentials(self) -> Any:
                return credentials

        session = AioSession()
        session.register_component("data_loader", self._session.get_component("data_loader"))
        session.register_component("credential_provider", FixedProvider())
        self._role_sessions[role] = session
        return session

    async def _assume_role(self, role_arn: str) -> Credentials:
        """STS AssumeRole with the function's own credentials, in the function's region."""
        params = {"RoleArn": role_arn, "RoleSessionName": self._session_name}
        try:
            result = await self.call(STS, "assume_role", params)
        except AccessDenied as exc:
            raise RoleAccessDenied(
                f"cannot assume role {role_arn}: {exc.message}",
                role_arn=role_arn,
                error_type=exc.error_type,
            ) from None
        found = result.get("Credentials") or {}
        expiration = found.get("Expiration")
        if isinstance(expiration, datetime):
            expiration = expiration.timestamp()
        if not (
            found.get("AccessKeyId")
            and found.get("SecretAccessKey")
            and found.get("SessionToken")
            and isinstance(expiration, (int, float))
        ):
            raise UpstreamError(
                f"sts: the AssumeRole answer for {role_arn} lacks credentials",
                error_type="InvalidAssumeRoleAnswer",
            )
        return Credentials(
            str(found["AccessKeyId"]),
            str(found["SecretAccessKey"]),
            str(found["SessionToken"]),
            float(expiration),
        )

    async def warm(self) -> None:
        """Create every client once the SDK is loaded (so the first miss pays only the call)."""
        try:
            for service in SERVICES:
                await self._client(service)
        except Exception as exc:
            log.warn("sdk.warm_failed", error=type(exc).__name__)

    async def call(
        self,
        service: str,
        operation: str,
        params: dict[str, Any],
        *,
        region: str | None = None,
        role_arn: str | None = None,
    ) -> dict[str, Any]:
        """One AWS operation, retried on transient errors within the service's timeout.

        `region` (another region's ARN) and `role_arn` (a role to assume) pick the client; None
        is the function's own region and credentials. At most MAX_ATTEMPTS attempts, or what
        `throttle.upstream_attempts` allows (a background refresh while AWS throttles: one).
        """
        client = await self._client(service, region, role_arn)
        if role_arn:
            # The role's credentials first, on STS's own deadline and retries: refreshed inside
            # an attempt, a failing STS would be retried once per attempt and end as a timeout.
            await (await self.roles.credentials(role_arn)).get()
        observer = self.call_observer if service in SERVICES else None
        method = getattr(client, operation)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeouts[service]
        semaphore = self._semaphores[service]
        max_attempts = upstream_attempts.get() or MAX_ATTEMPTS
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            started = loop.time()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                result: dict[str, Any] = await asyncio.wait_for(
                    self._limited(semaphore, method, params), remaining
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = classify(exc, service)
                if observer is not None:
                    observer(service, loop.time() - started, error.error_type)
                attempt += 1
                if (
                    not error.transient
                    or isinstance(error, UpstreamTimeout)
                    or attempt >= max_attempts
                ):
                    raise error from None
                backoff = self._rand() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
                if loop.time() + backoff >= deadline:
                    raise error from None
                log.debug(
                    "upstream.retry",
                    service=service,
                    operation=operation,
                    errorType=error.error_type,
                    attempt=attempt,
                )
                await asyncio.sleep(backoff)
                continue
            if observer is not None:
                observer(service, loop.time() - started, None)
            return result

    @staticmethod
    async def _limited(semaphore: asyncio.Semaphore, method: Any, params: dict[str, Any]) -> Any:
        async with semaphore:
            return await method(**params)

    def after_restore(self) -> None:
        """SnapStart restore: connections pooled before the snapshot are gone. The clients are
        dropped (closed in the background) and made again on the next call. (botocore's container
        provider renews credentials by their expiry only; the lean client re-reads them.)
        Roles' credentials are assumed again: their sessions (which hold the credentials until
        botocore's refresh window) are dropped with the clients."""
        contexts, self._client_contexts = self._client_contexts, []
        self._clients = {}
        self._role_sessions = {}
        self.roles.invalidate()
        if contexts:
            task = asyncio.get_running_loop().create_task(_close_contexts(contexts))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for context in self._client_contexts:
            try:
                await context.__aexit__(None, None, None)
            except Exception as exc:
                log.debug("sdk.close_failed", error=type(exc).__name__)
        self._client_contexts.clear()
        self._clients.clear()
        for task in list(self._closing):
            task.cancel()
        self._role_sessions.clear()

    # One function per AWS operation -------------------------------------------------------

    async def get_secret_value(
        self,
        secret_id: str,
        version_id: str | None,
        version_stage: str | None,
        *,
        role_arn: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"SecretId": secret_id}
        if version_id:
            params["VersionId"] = version_id
        if version_stage:
            params["VersionStage"] = version_stage
        region = arn_region(secret_id, "secretsmanager")
        return await self.call(
            "secretsmanager", "get_secret_value", params, region=region, role_arn=role_arn
        )

    async def describe_secret(
        self, secret_id: str, *, role_arn: str | None = None
    ) -> dict[str, Any]:
        """DescribeSecret: the secret's rotation schedule and version stages, never its value."""
        return await self.call(
            "secretsmanager",
            "describe_secret",
            {"SecretId": secret_id},
            region=arn_region(secret_id, "secretsmanager"),
            role_arn=role_arn,
        )

    async def get_parameter(self, name: str, with_decryption: bool) -> dict[str, Any]:
        return await self.call(
            "ssm",
            "get_parameter",
            {"Name": name, "WithDecryption": with_decryption},
            region=arn_region(name, "ssm"),
        )

    async def decrypt(
        self,
        ciphertext: bytes,
        encryption_context: dict[str, str] | None,
        key_id: str | None,
        algorithm: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"CiphertextBlob": ciphertext}
        if algorithm:
            params["EncryptionAlgorithm"] = algorithm
        if encryption_context:
            params["EncryptionContext"] = encryption_context
        if key_id:
            params["KeyId"] = key_id
        region = arn_region(key_id, "kms") if key_id else None
        return await self.call("kms", "decrypt", params, region=region)

    def _by_region(self, identifiers: list[str], service: str) -> dict[str | None, list[str]]:
        """Identifiers grouped by the region their ARN names (None: the function's region)."""
        groups: dict[str | None, list[str]] = {}
        for identifier in identifiers:
            region = arn_region(identifier, service)
            groups.setdefault(None if region == self._region else region, []).append(identifier)
        return groups

    async def get_parameters(self, names: list[str], with_decryption: bool) -> dict[str, Any]:
        """GetParameters for at most 10 names (AWS's limit per call), one call per region."""
        groups = self._by_region(names, "ssm")
        results = await asyncio.gather(
            *(
                self.call(
                    "ssm",
                    "get_parameters",
                    {"Names": group, "WithDecryption": with_decryption},
                    region=region,
                )
                for region, group in groups.items()
            )
        )
        if len(results) == 1:
            return results[0]
        return {
            "Parameters": [p for r in results for p in r.get("Parameters") or []],
            "InvalidParameters": [n for r in results for n in r.get("InvalidParameters") or []],
        }

    async def get_parameters_by_path(
        self, path: str, recursive: bool, with_decryption: bool, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Every page of GetParametersByPath; each page has the service timeout.

        With `limit`, paging stops once more than `limit` parameters have arrived (the caller
        refuses such a path), so an oversized path costs a bounded number of pages. There is no
        deadline on the whole walk: one would throw away every page fetched whenever a large
        path is slow, and the next try would fetch them all again.
        """
        parameters: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "Path": path,
            "Recursive": recursive,
            "WithDecryption": with_decryption,
            "MaxResults": 10,
        }
        while True:
            page = await self.call("ssm", "get_parameters_by_path", params)
            parameters.extend(page.get("Parameters") or [])
            token = page.get("NextToken")
            if not token or (limit is not None and len(parameters) > limit):
                return parameters
            params["NextToken"] = token

    async def batch_get_secret_value(
        self, secret_ids: list[str], *, role_arn: str | None = None
    ) -> dict[str, Any]:
        """BatchGetSecretValue for at most 20 ids (AWS's limit per call), one call per region."""
        groups = self._by_region(secret_ids, "secretsmanager")
        results = await asyncio.gather(
            *(
                self.call(
                    "secretsmanager",
                    "batch_get_secret_value",
                    {"SecretIdList": group},
                    region=region,
                    role_arn=role_arn,
                )
                for region, group in groups.items()
            )
        )
        if len(results) == 1:
            return results[0]
        return {
            "SecretValues": [v for r in results for v in r.get("SecretValues") or []],
            "Errors": [e for r in results for e in r.get("Errors") or []],
        }
