"""Error hierarchy: each error knows its HTTP status and errorType; rendered in one place.

Messages are written by us from identifiers and AWS error codes, never from request bodies or
values, so no error text can carry a secret. Each error renders two ways: ours
(`{"errorType", "message"}` with our status, `to_body`) and the Secrets Manager Agent's
(`{"__type", "message"}` with the status the Agent would send, `agent_error`).
"""

from __future__ import annotations

from .json_body import json_body


class SecretcacheError(Exception):
    """Base of every error a client can see."""

    status: int = 500
    error_type: str = "InternalError"
    #: Whether a retry (or a stale value) may help: throttling, 5xx, timeouts, connection failures.
    transient: bool = False
    #: Seconds after which asking again may succeed (sent as Retry-After); None when unknown.
    retry_after: float | None = None

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_type is not None:
            self.error_type = error_type

    def to_body(self) -> bytes:
        """The JSON body sent to the client."""
        return json_body({"errorType": self.error_type, "message": self.message})


class BadRequest(SecretcacheError):
    status = 400
    error_type = "BadRequest"


class Unauthorized(SecretcacheError):
    status = 401
    error_type = "Unauthorized"


class Forbidden(SecretcacheError):
    """Refused by us (e.g. a foreign Host header), not by AWS."""

    status = 403
    error_type = "Forbidden"


class AccessDenied(SecretcacheError):
    status = 403
    error_type = "AccessDeniedException"


class NotFound(SecretcacheError):
    status = 404
    error_type = "NotFound"


class MethodNotAllowed(SecretcacheError):
    status = 405
    error_type = "MethodNotAllowed"


class RequestTimeout(SecretcacheError):
    """A request head or body did not arrive in full within the request timeout."""

    status = 408
    error_type = "RequestTimeout"


class PayloadTooLarge(SecretcacheError):
    status = 413
    error_type = "PayloadTooLarge"


class RequestLineTooLong(SecretcacheError):
    status = 414
    error_type = "RequestLineTooLong"


class HeadersTooLarge(SecretcacheError):
    """The request line and headers together exceed the bound."""

    status = 431
    error_type = "HeadersTooLarge"


class Throttled(SecretcacheError):
    status = 429
    error_type = "ThrottlingException"
    transient = True


class UpstreamError(SecretcacheError):
    status = 502
    error_type = "UpstreamError"
    transient = True


class UpstreamClientError(SecretcacheError):
    """AWS rejected the request for a reason a retry will not fix (e.g. DecryptionFailure)."""

    status = 502
    error_type = "UpstreamError"


class UpstreamTimeout(SecretcacheError):
    status = 504
    error_type = "UpstreamTimeout"
    transient = True


class PathTooLarge(SecretcacheError):
    """A by-path read found more parameters than SECRETCACHE_PATH_MAX_PARAMETERS allows."""

    status = 400
    error_type = "PathTooLarge"


class MaxRolesExceeded(SecretcacheError):
    """A read names a new role while SECRETCACHE_MAX_ROLES roles are in use (never an eviction)."""

    status = 400
    error_type = "MaxRolesExceeded"


class RoleAccessDenied(AccessDenied):
    """STS refused to let the function assume the role a read names (`roleArn`)."""

    def __init__(self, message: str, *, role_arn: str, error_type: str | None = None) -> None:
        super().__init__(message, error_type=error_type)
        self.role_arn = role_arn


class ServiceUnavailable(SecretcacheError):
    """We are shutting down or the AWS SDK failed to load."""

    status = 503
    error_type = "ServiceUnavailable"
    transient = True


class TooManyConnections(SecretcacheError):
    """Every connection SECRETCACHE_MAX_CLIENT_CONNECTIONS allows is serving a request (none is
    idle to close for the newcomer). 503 on our routes; the Agent answers 429."""

    status = 503
    error_type = "TooManyConnections"


#: Our errorType -> the Agent's __type where the Agent names the failure itself (its
#: TimeoutError, ConnectionError and InternalFailure for failures that are not AWS's answer).
_AGENT_TYPES = {
    "UpstreamTimeout": "TimeoutError",
    "UpstreamUnavailable": "ConnectionError",
    "InternalError": "InternalFailure",
}
#: Errors that carry an AWS error code; the Agent passes on AWS's status, which for Secrets
#: Manager (a JSON-protocol service) is 400 for every client error, throttling included.
_AWS_CLIENT_ERRORS = (AccessDenied, Throttled, UpstreamClientError)


def agent_error(error: SecretcacheError) -> tuple[int, bytes]:
    """The Agent's rendering: its status and `{"__type", "message"}` (compact, keys sorted).

    Not-found from AWS is 400 as the Agent (and AWS) send it; our own 404 (an unknown path) never
    reaches here, as no Agent route can be unknown. The connection cap is 429 as the Agent's
    (`Connection limit exceeded`). 5xx follow the Agent: 504 for a timeout, 502
    for a connection failure, 500 for AWS's own 5xx and for anything internal. A role STS refused
    is the Agent's 403 `Failed to create caching client from role: <arn>`.
    """
    if isinstance(error, RoleAccessDenied):
        message = f"Failed to create caching client from role: {error.role_arn}"
        return 403, json_body({"__type": "AccessDeniedException", "message": message})
    status = error.status
    if isinstance(error, _AWS_CLIENT_ERRORS) or (
        isinstance(error, NotFound) and error.error_type != "UnknownPath"
    ):
        status = 400
    elif isinstance(error, UpstreamTimeout):
        status = 504
    elif isinstance(error, TooManyConnections):
        status = 429
    elif isinstance(error, UpstreamError):
        status = 502 if error.error_type == "UpstreamUnavailable" else 500
    error_type = _AGENT_TYPES.get(error.error_type, error.error_type)
    return status, json_body({"__type": error_type, "message": error.message})
