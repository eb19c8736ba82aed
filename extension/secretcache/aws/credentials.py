"""AWS credentials: the environment, the container credentials endpoint, else botocore's chain.

In Lambda the credentials are in the environment, or (SnapStart, Lambda managed instances)
served by the container credentials endpoint: those two cost nothing to import here. Anything
else (profiles, SSO, instance metadata when run standalone, assumed roles) goes through
botocore's own provider chain, imported only then, in a thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from .transport import fetch

#: Refresh this long before expiry (botocore's advisory window) ...
ADVISORY_REFRESH_SECONDS = 15 * 60
#: ... and refuse to sign with credentials closer than this to it (botocore's mandatory window).
MANDATORY_REFRESH_SECONDS = 10 * 60
CONTAINER_TIMEOUT_SECONDS = 2.0
_ECS_HOST = "169.254.170.2"
#: Hosts the container credentials endpoint may use over plain HTTP (as botocore allows).
_ALLOWED_HTTP_HOSTS = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23", "localhost")


class NoCredentialsError(Exception):
    """No credentials could be found (named as botocore's, so errors map the same way)."""


class CredentialRetrievalError(Exception):
    """The credentials endpoint failed or answered something unusable (never echoed)."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    #: Unix time the credentials stop working; None = they do not expire.
    expires_at: float | None = None


class CredentialSource(Protocol):
    """Anything that hands out current credentials: the chain, or an assumed role's."""

    async def get(self) -> Credentials: ...


def from_environment(env: Mapping[str, str]) -> Credentials | None:
    """AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), as Lambda sets them."""
    access = (env.get("AWS_ACCESS_KEY_ID") or "").strip()
    secret = (env.get("AWS_SECRET_ACCESS_KEY") or "").strip()
    if not access or not secret:
        return None
    token = (env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or "").strip()
    return Credentials(access, secret, token or None)


def container_endpoint(env: Mapping[str, str]) -> str | None:
    """AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS) or AWS_CONTAINER_CREDENTIALS_FULL_URI."""
    relative = (env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or "").strip()
    if relative:
        return f"http://{_ECS_HOST}{relative}"
    full = (env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or "").strip()
    return full or None


def _allowed_container_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname in _ALLOWED_HTTP_HOSTS:
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _expiry(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ContainerCredentials:
    """Credentials from the container endpoint, refreshed before they expire."""

    def __init__(self, url: str, env: Mapping[str, str], clock: Callable[[], float] = time.time):
        self._url = url
        self._env = env
        self._clock = clock
        self._current: Credentials | None = None
        self._lock = asyncio.Lock()

    def _authorization(self) -> str | None:
        token = (self._env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or "").strip()
        path = (self._env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") or "").strip()
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as exc:
                raise CredentialRetrievalError(
                    f"cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE ({exc.strerror})"
                ) from None
        if "\r" in token or "\n" in token:
            raise CredentialRetrievalError("the container authorization token has a line break")
        return token or None

    def _fresh(self, margin: float) -> bool:
        current = self._current
        return current is not None and (
            current.expires_at is None or current.expires_at - self._clock() > margin
        )

    def invalidate(self) -> None:
        """Forget the credentials held: the next call reads them from the endpoint again."""
        self._current = None

    async def get(self) -> Credentials:
        if self._fresh(ADVISORY_REFRESH_SECONDS):
            assert self._current is not None
            return self._current
        async with self._lock:
            if self._fresh(ADVISORY_REFRESH_SECONDS):
                assert self._current is not None
                return self._current
            try:
                self._current = await self._load()
            except (CredentialRetrievalError, OSError, asyncio.TimeoutError, ValueError) as exc:
                if self._fresh(MANDATORY_REFRESH_SECONDS):
                    assert self._current is not None
                    return self._current  # still good for a while: try again next call
                if isinstance(exc, CredentialRetrievalError):
                    raise
                raise CredentialRetrievalError(
                    f"the container credentials endpoint failed ({type(exc).__name__})"
                ) from None
            return self._current

    async def _load(self) -> Credentials:
        if not _allowed_container_url(self._url):
            raise CredentialRetrievalError(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https or a loopback/container host"
            )
        headers = {"Accept": "application/json"}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        status, _, body = await fetch("GET", self._url, headers, b"", CONTAINER_TIMEOUT_SECONDS)
        if status != 200:
            raise CredentialRetrievalError(f"the container credentials endpoint answered {status}")
        data = json.loads(body)
        try:
            return Credentials(
                str(data["AccessKeyId"]),
                str(data["SecretAccessKey"]),
                str(data.get("Token") or "") or None,
                _expiry(data.get("Expiration")),
            )
        except (KeyError, TypeError):
            raise CredentialRetrievalError(
                "the container credentials endpoint's answer lacks a key"
            ) from None


class BotocoreCredentials:
    """botocore's whole provider chain, for what the two cheap sources above do not cover."""

    def __init__(self) -> None:
        self._source: Any = None  # botocore.credentials.Credentials, once resolved

    async def get(self) -> Credentials:
        return await asyncio.to_thread(self._get_blocking)

    def _get_blocking(self) -> Credentials:
        if self._source is None:
            import botocore.session

            self._source = botocore.session.Session().get_credentials()
        if self._source is None:
            raise NoCredentialsError("no AWS credentials were found")
        frozen = self._source.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


class CredentialChain:
    """The first source that applies: environment, container endpoint, botocore."""

    def __init__(self, env: Mapping[str, str]) -> None:
        url = container_endpoint(env)
        snapstart = (env.get("AWS_LAMBDA_INITIALIZATION_TYPE") or "").strip() == "snap-start"
        # Under SnapStart the container endpoint is Lambda's source; keys in the environment
        # would be the snapshot's.
        self._static = None if snapstart and url else from_environment(env)
        url = url if self._static is None else None
        self._container = ContainerCredentials(url, env) if url else None
        self._botocore: BotocoreCredentials | None = None
        self.source = "environment" if self._static else "container" if url else "botocore"

    def invalidate(self) -> None:
        """After a restore: the next call reads the credentials from their source again."""
        if self._container is not None:
            self._container.invalidate()

    async def get(self) -> Credentials:
        if self._static is not None:
            return self._static
        if self._container is not None:
            return await self._container.get()
        if self._botocore is None:
            self._botocore = BotocoreCredentials()
        return await self._botocore.get()
