"""Typed read requests, parsed once, by one parser, for every front door.

Both HTTP stacks build these from a query (`from_query`) or the Agent's path (`from_agent_path`),
and SECRETCACHE_PREFETCH items are parsed into the same values, so one rule decides what a
request means: `version=007` is version 7 everywhere and `version=0` is refused everywhere.
Bad input raises `BadRequest`; nothing here does I/O. Each is a NamedTuple: immutable, hashable
(identical batch reads share one upstream call) and cheap to build on the hot path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import NamedTuple

from .arns import validate_role_arn
from .errors import BadRequest
from .query import MAX_QUERY_VALUE, Pairs, all_values, first, flag, required, ssm_selector
from .service import Service

#: The query parameters the Secrets Manager Agent takes on a secret read (besides secretId).
AGENT_SECRET_OPTIONS = frozenset({"versionId", "versionStage", "refreshNow", "roleArn"})


def parse_role_arn(pairs: Pairs) -> str | None:
    """`roleArn`, validated by the Agent's rule; None when absent (an empty one is refused)."""
    value = first(pairs, "roleArn")
    return None if value is None else validate_role_arn(value)


def refuse_role_arn(pairs: Pairs) -> None:
    """Reads other than secrets do not assume roles: refuse rather than read as the function."""
    if first(pairs, "roleArn") is not None:
        raise BadRequest(
            "roleArn applies to secret reads only (/secretsmanager/get, /secretsmanager/batchget, "
            "/v1/<id>); this read would use the function's own role",
            error_type="UnsupportedParameter",
        )


class SecretRead(NamedTuple):
    """GetSecretValue: `GET /secretsmanager/get` or the Agent's `GET /v1/<secret id>`.

    `agent` asks for the Secrets Manager Agent's shapes (body, errors, statuses) and its
    stricter query rules (an unknown parameter is a 400); it is part of the cache key, as is
    `role_arn` (the role the read assumes; None = the function's own credentials).
    """

    secret_id: str
    version_id: str | None = None
    version_stage: str | None = None
    refresh: bool = False
    agent: bool = False
    role_arn: str | None = None

    @property
    def service(self) -> Service:
        return Service.SECRETS_MANAGER

    @classmethod
    def from_query(cls, pairs: Pairs) -> SecretRead:
        return cls._with_options(required(pairs, "secretId"), pairs)

    @classmethod
    def from_agent_query(cls, pairs: Pairs) -> SecretRead:
        """`/secretsmanager/get` under SECRETCACHE_COMPAT=agent: the Agent's rules and shapes."""
        _refuse_unknown(pairs, AGENT_SECRET_OPTIONS | {"secretId"})
        return cls._with_options(required(pairs, "secretId"), pairs, agent=True)

    @classmethod
    def from_agent_path(cls, secret_id: str, pairs: Pairs) -> SecretRead:
        """`/v1/<secret id>`: every slash after `/v1/` is part of the id, as in the Agent."""
        _refuse_unknown(pairs, AGENT_SECRET_OPTIONS)
        if not secret_id:
            raise BadRequest(
                "missing secret ID: use /v1/<secret id>", error_type="MissingParameter"
            )
        if len(secret_id) > MAX_QUERY_VALUE:
            raise BadRequest(f"the secret id is over {MAX_QUERY_VALUE} characters")
        return cls._with_options(secret_id, pairs, agent=True)

    @classmethod
    def _with_options(cls, secret_id: str, pairs: Pairs, *, agent: bool = False) -> SecretRead:
        return cls(
            secret_id,
            first(pairs, "versionId") or None,
            first(pairs, "versionStage") or None,
            flag(pairs, "refreshNow"),
            agent,
            parse_role_arn(pairs),
        )


def _refuse_unknown(pairs: Pairs, known: frozenset[str]) -> None:
    """The Agent's rule: a query parameter it does not know is a 400, never ignored."""
    for name, _ in pairs:
        if name in known:
            continue
        raise BadRequest(f"unknown parameter: {name[:64]}", error_type="UnknownParameter")


class ParameterRead(NamedTuple):
    """GetParameter: `selector` is `:version` or `:label` (normalised: `:007` becomes `:7`)."""

    name: str
    selector: str = ""
    decrypt: bool = False
    refresh: bool = False

    @property
    def service(self) -> Service:
        return Service.SSM

    @classmethod
    def from_query(cls, pairs: Pairs) -> ParameterRead:
        refuse_role_arn(pairs)
        return cls(
            required(pairs, "name"),
            ssm_selector(pairs),
            flag(pairs, "withDecryption"),
            flag(pairs, "refreshNow"),
        )


class ParametersRead(NamedTuple):
    """GetParameters for up to MAX_BATCH_ITEMS names (in chunks of 10 upstream)."""

    names: tuple[str, ...]
    decrypt: bool = False
    refresh: bool = False

    @property
    def service(self) -> Service:
        return Service.SSM

    @classmethod
    def from_query(cls, pairs: Pairs) -> ParametersRead:
        refuse_role_arn(pairs)
        return cls(
            tuple(all_values(pairs, "name")),
            flag(pairs, "withDecryption"),
            flag(pairs, "refreshNow"),
        )


class PathRead(NamedTuple):
    """GetParametersByPath, every page (up to the configured bound)."""

    path: str
    recursive: bool = False
    decrypt: bool = False
    refresh: bool = False

    @property
    def service(self) -> Service:
        return Service.SSM

    @classmethod
    def from_query(cls, pairs: Pairs) -> PathRead:
        refuse_role_arn(pairs)
        path = required(pairs, "path")
        if not path.startswith("/"):
            raise BadRequest("query parameter 'path' must start with '/'")
        return cls(
            path, flag(pairs, "recursive"), flag(pairs, "withDecryption"), flag(pairs, "refreshNow")
        )


class SecretsRead(NamedTuple):
    """BatchGetSecretValue for up to MAX_BATCH_ITEMS ids (in chunks of 20 per region upstream)."""

    secret_ids: tuple[str, ...]
    refresh: bool = False
    role_arn: str | None = None

    @property
    def service(self) -> Service:
        return Service.SECRETS_MANAGER

    @classmethod
    def from_query(cls, pairs: Pairs) -> SecretsRead:
        return cls(
            tuple(all_values(pairs, "secretId")), flag(pairs, "refreshNow"), parse_role_arn(pairs)
        )


_DECRYPT_FIELDS = frozenset({"CiphertextBlob", "EncryptionContext", "KeyId", "EncryptionAlgorithm"})


class DecryptRead(NamedTuple):
    """KMS Decrypt: `POST /kms/decrypt` with the Decrypt request's JSON shape."""

    blob: bytes
    context: tuple[tuple[str, str], ...] = ()
    key_id: str | None = None
    algorithm: str | None = None
    refresh: bool = False

    @property
    def service(self) -> Service:
        return Service.KMS

    @classmethod
    def from_body(cls, raw: bytes, pairs: Pairs) -> DecryptRead:
        """Validate a Decrypt request body (JSON) and the query's refreshNow."""
        refuse_role_arn(pairs)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body must be a JSON object") from None
        except RecursionError:
            raise BadRequest("the body is nested too deeply") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        unknown = set(body) - _DECRYPT_FIELDS
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(n[:64] for n in unknown))}")
        blob_b64 = body.get("CiphertextBlob")
        if not isinstance(blob_b64, str) or not blob_b64:
            raise BadRequest(
                "CiphertextBlob must be a non-empty base64 string", error_type="MissingParameter"
            )
        try:
            blob = base64.b64decode(blob_b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("CiphertextBlob is not valid base64") from None
        if not blob:
            raise BadRequest("CiphertextBlob is empty")
        context = body.get("EncryptionContext")
        if context is not None and (
            not isinstance(context, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in context.items())
        ):
            raise BadRequest("EncryptionContext must be an object of strings")
        key_id = body.get("KeyId")
        if key_id is not None and (not isinstance(key_id, str) or not key_id):
            raise BadRequest("KeyId must be a non-empty string")
        algorithm = body.get("EncryptionAlgorithm")
        if algorithm is not None and (not isinstance(algorithm, str) or not algorithm):
            raise BadRequest("EncryptionAlgorithm must be a non-empty string")
        return cls(
            blob,
            tuple(sorted((context or {}).items())),
            key_id,
            algorithm,
            flag(pairs, "refreshNow"),
        )

    @property
    def encryption_context(self) -> dict[str, str] | None:
        return dict(self.context) if self.context else None

    def digest(self) -> str:
        """The cache identifier: a hash of everything that changes the answer, never the blob."""
        canonical = json.dumps(
            {
                "a": self.algorithm or "",
                "b": base64.b64encode(self.blob).decode(),
                "c": dict(self.context),
                "k": self.key_id or "",
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


#: A read that is answered from one cache entry.
SingleRead = SecretRead | ParameterRead | PathRead | DecryptRead
#: Every read request.
Read = SecretRead | ParameterRead | PathRead | DecryptRead | ParametersRead | SecretsRead
