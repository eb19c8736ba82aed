"""Powertools for AWS Lambda adapter: a parameters provider that reads through secretcache.

Importing this module imports ``aws_lambda_powertools`` (install the ``powertools``
extra); ``import secretcache_client`` alone never does.

    from secretcache_client.powertools import SecretcacheProvider

    ssm = SecretcacheProvider()                            # Parameter Store
    secrets = SecretcacheProvider(service="secretsmanager")
    config = ssm.get("/app/config.json", transform="auto", max_age=60)
    db = secrets.get("prod/db", transform="json")

Powertools' own in-process cache (``max_age``, default 5 minutes) sits in front of the
extension's; ``force_fetch=True`` bypasses both (it sends ``refreshNow=true``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities.parameters.base import BaseProvider

from .client import Client

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters.types import TransformOptions

__all__ = ["SecretcacheProvider"]

Service = Literal["ssm", "secretsmanager"]

_SSM_OPTIONS = frozenset({"WithDecryption", "Version", "Label", "RefreshNow"})
_SECRETS_OPTIONS = frozenset({"VersionId", "VersionStage", "RefreshNow"})
_PATH_OPTIONS = frozenset({"WithDecryption", "Recursive", "RefreshNow"})


class SecretcacheProvider(BaseProvider):
    """A Powertools ``BaseProvider`` backed by the secretcache extension.

    ``service="ssm"`` (default) reads Parameter Store, decrypting SecureStrings unless
    ``WithDecryption=False`` is passed; ``service="secretsmanager"`` reads secrets
    (``SecretString``, or ``SecretBinary`` as bytes, as Powertools' SecretsProvider does).
    Options use the AWS API's names: ``Version``/``Label`` for SSM, ``VersionId``/
    ``VersionStage`` for Secrets Manager.
    """

    def __init__(self, service: Service = "ssm", *, client: Client | None = None) -> None:
        if service not in ("ssm", "secretsmanager"):
            raise ValueError(f"service must be 'ssm' or 'secretsmanager', got {service!r}")
        super().__init__()  # type: ignore[no-untyped-call]  # Powertools leaves it unannotated
        self.service: Service = service
        if client is None:
            from . import default_client

            client = default_client
        self.client = client

    def get(
        self,
        name: str,
        max_age: int | None = None,
        transform: TransformOptions = None,
        force_fetch: bool = False,
        **sdk_options: Any,
    ) -> str | bytes | dict[str, Any] | None:
        """Powertools' ``get``; ``force_fetch`` also makes the extension re-read from AWS."""
        if force_fetch:
            sdk_options.setdefault("RefreshNow", True)
        value: str | bytes | dict[str, Any] | None = super().get(
            name, max_age=max_age, transform=transform, force_fetch=force_fetch, **sdk_options
        )
        return value

    def _get(self, name: str, **sdk_options: Any) -> str | bytes:
        if self.service == "ssm":
            _check_options(sdk_options, _SSM_OPTIONS)
            value: str | bytes = self.client.get_parameter(
                name,
                decrypt=bool(sdk_options.get("WithDecryption", True)),
                version=sdk_options.get("Version"),
                label=sdk_options.get("Label"),
                refresh=bool(sdk_options.get("RefreshNow", False)),
            )
            return value
        _check_options(sdk_options, _SECRETS_OPTIONS)
        return self.client.get_secret(
            name,
            version_id=sdk_options.get("VersionId"),
            version_stage=sdk_options.get("VersionStage"),
            refresh=bool(sdk_options.get("RefreshNow", False)),
        )

    def _get_multiple(self, path: str, **sdk_options: Any) -> dict[str, str]:
        """Parameters under ``path``, named relative to it as Powertools' SSMProvider names them."""
        if self.service != "ssm":
            raise NotImplementedError("Secrets Manager has no read by path")
        _check_options(sdk_options, _PATH_OPTIONS)
        found = self.client.get_parameters_by_path(
            path,
            decrypt=bool(sdk_options.get("WithDecryption", True)),
            recursive=bool(sdk_options.get("Recursive", False)),
            refresh=bool(sdk_options.get("RefreshNow", False)),
        )
        values: dict[str, str] = {}
        for name, value in found.items():
            relative = name[len(path) :] if name.startswith(path) else name
            values[relative.lstrip("/")] = value
        return values


def _check_options(options: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"unsupported option(s) {unknown}; supported: {sorted(allowed)}")
