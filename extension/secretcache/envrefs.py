"""References in environment variables: CloudFormation's dynamic-reference grammar, parsed strictly.

A value may hold any number of references among literal text::

    {{resolve:secretsmanager:SECRET-ID[:[SecretString][:[JSON-KEY][:[VERSION-STAGE][:[VERSION-ID]]]]]}}
    {{resolve:ssm:PARAMETER-NAME[:VERSION]}}
    {{resolve:ssm-secure:PARAMETER-NAME[:VERSION]}}
    {{resolve:kms:CIPHERTEXT-VARIABLE[:CONTEXT-KEY=VALUE[,CONTEXT-KEY=VALUE...]]}}

Every ``{{resolve:`` starts a reference; anything that does not match the grammar exactly is a
:class:`MalformedReference`, whose message names the variable and the position, never any text
of the value (a malformed value may hold a secret pasted by mistake). A well-formed reference
holds identifiers only, so its text may be shown in messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Mapping

OPEN = "{{resolve:"
CLOSE = "}}"

# Secrets Manager: names are 1-512 of these; a full ARN is arn:PARTITION:secretsmanager:REGION:
# ACCOUNT:secret:NAME-XXXXXX (its colons are part of the id, so it is matched as a whole).
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_SECRET_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}"
)
_VERSION_STAGE = re.compile(r"[A-Za-z0-9/_+=.@-]{1,256}")
_VERSION_ID = re.compile(r"[A-Za-z0-9-]{32,64}")
# JSON key: printable ASCII without whitespace, ':' (the separator) or braces.
_JSON_KEY = re.compile(r"[!-9;-z|~]{1,256}")
# SSM: names of letters, digits, _ . - and /, or a parameter ARN.
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_./-]{1,2048}")
_PARAMETER_ARN = re.compile(
    r"arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/[A-Za-z0-9_./-]{1,2048}"
)
_PARAMETER_VERSION = re.compile(r"[1-9][0-9]{0,18}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_CONTEXT_PART = re.compile(r"[A-Za-z0-9_./@+-]{1,384}")
SERVICES = ("secretsmanager", "ssm", "ssm-secure", "kms")


class MalformedReference(ValueError):
    """A value that does not follow the grammar; the message never quotes the value."""

    def __init__(self, variable: str, position: int, reason: str) -> None:
        self.variable = variable
        self.position = position
        self.reason = reason
        super().__init__(f"{variable}: malformed reference at character {position + 1}: {reason}")


@dataclass(frozen=True)
class SecretReference:
    """``{{resolve:secretsmanager:...}}``: a secret's SecretString, or one key of it."""

    secret_id: str
    json_key: str | None = None
    version_stage: str | None = None
    version_id: str | None = None

    @property
    def text(self) -> str:
        fields = [self.secret_id, "SecretString", self.json_key or "", self.version_stage or ""]
        fields.append(self.version_id or "")
        while fields[-1] == "" or (len(fields) == 2 and fields[-1] == "SecretString"):
            fields.pop()
        return OPEN + "secretsmanager:" + ":".join(fields) + CLOSE


@dataclass(frozen=True)
class ParameterReference:
    """``{{resolve:ssm:...}}`` (String, StringList) or ``{{resolve:ssm-secure:...}}``."""

    name: str
    version: int | None = None
    secure: bool = False

    @property
    def text(self) -> str:
        service = "ssm-secure" if self.secure else "ssm"
        version = "" if self.version is None else f":{self.version}"
        return f"{OPEN}{service}:{self.name}{version}{CLOSE}"


@dataclass(frozen=True)
class KmsReference:
    """``{{resolve:kms:VAR[:k=v,...]}}``: KMS Decrypt of the base64 ciphertext held in ``VAR``."""

    variable: str
    context: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        context = ",".join(f"{k}={v}" for k, v in self.context)
        return f"{OPEN}kms:{self.variable}{':' + context if context else ''}{CLOSE}"


Reference = SecretReference | ParameterReference | KmsReference


@dataclass(frozen=True)
class Template:
    """One variable's value cut into literal text and references, in order."""

    variable: str
    parts: tuple[str | Reference, ...]
    #: Each reference's text as written (validated, so safe to show), in the order of ``parts``.
    sources: tuple[str, ...] = ()

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(p for p in self.parts if not isinstance(p, str))

    def render(self, values: Mapping[Reference, str]) -> str:
        """The value with every reference replaced by its resolved text."""
        return "".join(p if isinstance(p, str) else values[p] for p in self.parts)


def has_reference(value: str) -> bool:
    return OPEN in value


def parse_value(variable: str, value: str) -> Template:
    """Split a value into literal text and references; raise :class:`MalformedReference`."""
    parts: list[str | Reference] = []
    sources: list[str] = []
    position = 0
    while True:
        start = value.find(OPEN, position)
        if start < 0:
            break
        if start > position:
            parts.append(value[position:start])
        end = value.find(CLOSE, start + len(OPEN))
        if end < 0:
            raise MalformedReference(variable, start, "no closing '}}'")
        body = value[start + len(OPEN) : end]
        parts.append(_parse_body(variable, start, body))
        sources.append(value[start : end + len(CLOSE)])
        position = end + len(CLOSE)
    if position < len(value):
        parts.append(value[position:])
    return Template(variable, tuple(parts), tuple(sources))


def parse_environment(
    environ: Mapping[str, str],
) -> tuple[list[Template], list[MalformedReference]]:
    """Every variable holding a reference, parsed; malformed ones are returned, not raised."""
    templates: list[Template] = []
    malformed: list[MalformedReference] = []
    for name in sorted(environ):
        value = environ[name]
        if OPEN not in value:
            continue
        try:
            templates.append(parse_value(name, value))
        except MalformedReference as exc:
            malformed.append(exc)
    return templates, malformed


def _parse_body(variable: str, at: int, body: str) -> Reference:
    service, sep, rest = body.partition(":")
    if service not in SERVICES:
        return _fail(variable, at, "unknown service (secretsmanager, ssm, ssm-secure or kms)")
    if not sep or not rest:
        return _fail(variable, at, f"{service} reference without an identifier")
    if service == "secretsmanager":
        return _parse_secret(variable, at, rest)
    if service == "kms":
        return _parse_kms(variable, at, rest)
    return _parse_parameter(variable, at, rest, secure=service == "ssm-secure")


def _fail(variable: str, at: int, reason: str) -> Reference:
    raise MalformedReference(variable, at, reason)


def _split_arn(rest: str, arn_fields: int) -> tuple[str, list[str]]:
    """The identifier (an ARN keeps its own colons) and the fields after it."""
    fields = rest.split(":")
    if fields[0] == "arn":
        return ":".join(fields[:arn_fields]), fields[arn_fields:]
    return fields[0], fields[1:]


def _parse_secret(variable: str, at: int, rest: str) -> Reference:
    secret_id, fields = _split_arn(rest, 7)
    if secret_id.startswith("arn:"):
        if not _SECRET_ARN.fullmatch(secret_id):
            return _fail(variable, at, "secretsmanager: not a valid secret ARN")
    elif not _SECRET_NAME.fullmatch(secret_id):
        return _fail(variable, at, "secretsmanager: not a valid secret name")
    if len(fields) > 4:
        return _fail(variable, at, "secretsmanager: too many fields (at most 5 after the service)")
    fields += [""] * (4 - len(fields))
    kind, json_key, stage, version_id = fields
    if kind not in ("", "SecretString"):
        return _fail(variable, at, "secretsmanager: the second field must be SecretString or empty")
    if json_key and not _JSON_KEY.fullmatch(json_key):
        return _fail(variable, at, "secretsmanager: not a valid JSON key")
    if stage and not _VERSION_STAGE.fullmatch(stage):
        return _fail(variable, at, "secretsmanager: not a valid version stage")
    if version_id and not _VERSION_ID.fullmatch(version_id):
        return _fail(variable, at, "secretsmanager: not a valid version id")
    if stage and version_id:
        return _fail(variable, at, "secretsmanager: give a version stage or a version id, not both")
    return SecretReference(secret_id, json_key or None, stage or None, version_id or None)


def _parse_parameter(variable: str, at: int, rest: str, *, secure: bool) -> Reference:
    service = "ssm-secure" if secure else "ssm"
    name, fields = _split_arn(rest, 6)
    if name.startswith("arn:"):
        if not _PARAMETER_ARN.fullmatch(name):
            return _fail(variable, at, f"{service}: not a valid parameter ARN")
    elif not _PARAMETER_NAME.fullmatch(name):
        return _fail(variable, at, f"{service}: not a valid parameter name")
    if len(fields) > 1:
        return _fail(variable, at, f"{service}: too many fields (a name and a version at most)")
    version = None
    if fields:
        if not _PARAMETER_VERSION.fullmatch(fields[0]):
            return _fail(variable, at, f"{service}: the version must be a positive integer")
        version = int(fields[0])
    return ParameterReference(name, version, secure)


def _parse_kms(variable: str, at: int, rest: str) -> Reference:
    source, sep, context_text = rest.partition(":")
    if not _VARIABLE.fullmatch(source):
        return _fail(variable, at, "kms: the first field must be an environment variable name")
    if source == variable:
        return _fail(variable, at, "kms: the ciphertext must be in another variable")
    if sep and not context_text:
        return _fail(variable, at, "kms: empty encryption context")
    context: dict[str, str] = {}
    if context_text:
        for pair in context_text.split(","):
            key, eq, val = pair.partition("=")
            if not eq or not _CONTEXT_PART.fullmatch(key) or not _CONTEXT_PART.fullmatch(val):
                return _fail(variable, at, "kms: the encryption context must be KEY=VALUE,...")
            if key in context:
                return _fail(variable, at, "kms: an encryption context key appears twice")
            context[key] = val
    return KmsReference(source, tuple(sorted(context.items())))
