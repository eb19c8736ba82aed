"""What every lean service client shares: one endpoint, a connection pool, SigV4-signed POSTs.

The services differ only in how a request body is written and an answer read (JSON protocol in
`protocol`, STS's query protocol in `sts`); signing and sending are the same and live here.
"""

from __future__ import annotations

import time
from typing import Any

from . import sigv4
from .credentials import CredentialSource
from .transport import ConnectionPool, Endpoint


class SignedClient:
    """A client for one service at one endpoint and region, signing as `signing_name`."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource,
        *,
        signing_name: str,
        max_idle: int,
        timeout: float,
        clock: Any = time.time,
    ) -> None:
        self._endpoint = Endpoint(endpoint_url)
        self._pool = ConnectionPool(self._endpoint, max_idle=max_idle)
        self._region = region
        self._credentials = credentials
        self._signing_name = signing_name
        self._timeout = timeout
        self._clock = clock

    async def _post(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """POST `body` to the endpoint, signed with the current credentials.

        Returns status, response headers (lower-case names) and body.
        """
        credentials = await self._credentials.get()
        signed = sigv4.sign(
            method="POST",
            host=self._endpoint.host_header.lower(),
            path=self._endpoint.path,
            query=self._endpoint.query,
            headers=headers,
            body=body,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            token=credentials.token,
            region=self._region,
            service=self._signing_name,
            amz_date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock())),
        )
        target = self._endpoint.path + (f"?{self._endpoint.query}" if self._endpoint.query else "")
        return await self._pool.request("POST", target, {**headers, **signed}, body, self._timeout)

    def close(self) -> None:
        self._pool.close()
