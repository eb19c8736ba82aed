"""Exceptions raised by the secretcache client.

Every exception carries ``error_type`` (the extension's ``errorType``, an AWS error code or
ours) and ``status`` (the HTTP status, or ``None`` when no response arrived). Messages are
built only from the extension's error text with the token scrubbed out, never from a secret
value, so they are safe to log.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BadRequest",
    "ExtensionUnavailable",
    "SecretNotFound",
    "SecretcacheError",
    "Throttled",
    "TransformError",
    "Unauthorized",
    "UpstreamError",
]


class SecretcacheError(Exception):
    """Base class of every error the client raises."""

    default_error_type = "SecretcacheError"

    def __init__(
        self, message: str, *, error_type: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type: str = error_type or self.default_error_type
        self.status: int | None = status

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.error_type}: {self.message}"
        return f"{self.error_type} (HTTP {self.status}): {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"error_type={self.error_type!r}, status={self.status!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing, logging queues).
        return (_rebuild, (type(self), self.message, self.error_type, self.status))


def _rebuild(
    cls: type[SecretcacheError], message: str, error_type: str, status: int | None
) -> SecretcacheError:
    return cls(message, error_type=error_type, status=status)


class SecretNotFound(SecretcacheError):
    """The secret, parameter, version or label does not exist (HTTP 404)."""

    default_error_type = "NotFound"


class AccessDenied(SecretcacheError):
    """The function's role may not read this resource (HTTP 403)."""

    default_error_type = "AccessDeniedException"


class Throttled(SecretcacheError):
    """AWS kept throttling after the extension's own retries (HTTP 429)."""

    default_error_type = "ThrottlingException"


class BadRequest(SecretcacheError):
    """The extension rejected the request as malformed (HTTP 400, 405 and other 4xx)."""

    default_error_type = "BadRequest"


class Unauthorized(SecretcacheError):
    """The token header was missing or wrong (HTTP 401)."""

    default_error_type = "Unauthorized"


class UpstreamError(SecretcacheError):
    """AWS failed or timed out behind the extension (HTTP 502/504/5xx).

    Also raised for the plain-text 400 that AWS's own extension returns for every failure,
    carrying its text.
    """

    default_error_type = "UpstreamError"


class ExtensionUnavailable(SecretcacheError):
    """No usable answer from the extension within the client's timeout.

    The extension was not listening, was still starting, closed the connection, or did not
    answer in time (``error_type`` is then ``"Timeout"``).
    """

    default_error_type = "ExtensionUnavailable"


class TransformError(SecretcacheError, ValueError):
    """The value could not be transformed as asked (not JSON, not base64, ...).

    The message names the transform and the position of the fault, never the value.
    """

    default_error_type = "TransformError"
