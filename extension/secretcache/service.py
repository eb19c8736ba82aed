"""The AWS services the extension reads from; one name for each, used by every module."""

from __future__ import annotations

from enum import Enum


class Service(str, Enum):
    """A service's value is its AWS SDK name, also the name /metrics and the logs use."""

    SECRETS_MANAGER = "secretsmanager"
    SSM = "ssm"
    KMS = "kms"

    def __str__(self) -> str:
        return self.value
