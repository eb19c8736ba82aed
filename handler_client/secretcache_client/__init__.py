"""secretcache_client: read secrets, parameters and KMS decrypts from the secretcache
Lambda extension (or AWS's Parameters and Secrets Lambda Extension) with the standard
library only.

    from secretcache_client import get_secret, get_parameter

    password = get_secret("prod/db", transform="json")["password"]
    api_url = get_parameter("/app/api-url")

The module-level functions are methods of one default :class:`Client`, created at import
(which reads nothing and opens nothing). ``secretcache_client.aio`` has the same functions
as coroutines; ``secretcache_client.powertools`` adapts the client to Powertools.
"""

from __future__ import annotations

from .client import Client
from .errors import (
    AccessDenied,
    BadRequest,
    ExtensionUnavailable,
    SecretcacheError,
    SecretNotFound,
    Throttled,
    TransformError,
    Unauthorized,
    UpstreamError,
)

__all__ = [
    "AccessDenied",
    "BadRequest",
    "Client",
    "ExtensionUnavailable",
    "SecretNotFound",
    "SecretcacheError",
    "Throttled",
    "TransformError",
    "Unauthorized",
    "UpstreamError",
    "default_client",
    "get_parameter",
    "get_parameters_by_path",
    "get_secret",
    "get_secret_value",
    "kms_decrypt",
]

__version__ = "0.1.0"

default_client = Client()
"""The instance behind the module-level functions (port and token from the environment)."""

get_secret = default_client.get_secret
get_secret_value = default_client.get_secret_value
get_parameter = default_client.get_parameter
get_parameters_by_path = default_client.get_parameters_by_path
kms_decrypt = default_client.kms_decrypt
