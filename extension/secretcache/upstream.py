"""The one place that picks how we call AWS: the lean client (default) or aiobotocore.

SECRETCACHE_UPSTREAM=sdk selects aiobotocore, kept for comparison (bench/) and as a fallback.
"""

from __future__ import annotations

from .backends import AwsBackends
from .config import Config


def make_backends(config: Config) -> AwsBackends:
    """The backends for ``config.upstream``, with the configured limits and timeouts."""
    settings = {
        "max_connections": config.max_connections,
        "timeouts": {
            "secretsmanager": config.secrets_manager_timeout,
            "ssm": config.ssm_timeout,
            "kms": config.kms_timeout,
        },
        "region": config.region,
        "max_roles": config.max_roles,
        "function_name": config.function_name,
    }
    if config.upstream == "sdk":
        return AwsBackends(**settings)  # type: ignore[arg-type]
    from .aws.backend import LeanAwsBackends

    return LeanAwsBackends(environment=dict(config.aws_environment), **settings)
