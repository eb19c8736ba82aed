"""AwsBackends on the lean client: the same operations, retries, timeouts and error mapping.

Only how a service client is made differs: no SDK to load, so the extension is ready to call AWS
as soon as it listens. `AwsBackends.call` drives the clients exactly as it drives aiobotocore's
(one attempt per call, our retries and deadline around it), and the clients raise errors shaped
like botocore's, so `classify` maps them the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..backends import STS, AwsBackends, classify
from .credentials import CredentialChain
from .endpoints import resolve_endpoint
from .protocol import JsonServiceClient


class NoRegionError(Exception):
    """No region is configured (named as botocore's, so errors map the same way)."""


class LeanAwsBackends(AwsBackends):
    """Secrets Manager, SSM and KMS through `secretcache.aws` instead of aiobotocore."""

    def __init__(self, *, environment: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._environment = dict(environment)
        self._credentials = CredentialChain(self._environment)

    @property
    def loaded(self) -> bool:
        return True

    def start_loading(self) -> None:
        """Nothing to load; the future exists so waiting on it behaves as for the SDK."""
        self._ready = asyncio.get_running_loop().create_future()
        self._ready.set_result(None)

    async def _resolve_region(self) -> str:
        if self._region:
            return self._region

        def from_profile() -> str | None:
            # Standalone with a profile's region: botocore knows where that lives.
            import botocore.session

            region = botocore.session.Session().get_config_variable("region")
            return str(region) if region else None

        region = await asyncio.to_thread(from_profile)
        if not region:
            raise NoRegionError("no AWS region is configured")
        self._region = region
        return region

    async def _client(
        self, service: str, region: str | None = None, role: str | None = None
    ) -> Any:
        key = self._client_key(service, region, role)
        client = self._clients.get(key)
        if client is not None:
            return client
        # A role's clients sign with the role's credentials (assumed here if the role is new).
        credentials: Any = await self.roles.credentials(role) if role else self._credentials
        try:
            signing_region = key[1] or await self._resolve_region()
            endpoint = resolve_endpoint(service, signing_region, self._environment)
            if service == STS:
                from .sts import StsClient  # only for reads through a role (xml, expat)

                client = StsClient(
                    endpoint, signing_region, credentials, timeout=self._timeouts[service]
                )
            else:
                client = JsonServiceClient(
                    service,
                    endpoint,
                    signing_region,
                    credentials,
                    max_connections=self._max_connections,
                    timeout=self._timeouts[service],
                )
        except Exception as exc:
            raise classify(exc, service) from None
        return self._clients.setdefault(key, client)

    def after_restore(self) -> None:
        """SnapStart restore: close the connections pooled before the snapshot (they are gone;
        the next call opens new ones) and read the credentials again from their source, roles'
        included (assumed again when next needed)."""
        for client in self._clients.values():
            client.close()
        self._credentials.invalidate()
        self.roles.invalidate()

    async def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
