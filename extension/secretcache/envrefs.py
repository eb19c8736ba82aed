"""References in environment variables: CloudFormation's dynamic-reference grammar, parsed strictly.

A value may hold any number of references among literal text::

    {{resolve:secretsmanager:SECRET-ID[:[SecretString][:[JSON-KEY][:[VERSION-STAGE][:[VERSION-ID]]]]]}}
    {{resolve:ssm:PARAMETER-NAME[:VERSION]}}
    {{resolve:ssm-secure:PARAMETER-NAME[:VERSION]}}
    {{resolve:kms:CIPHERTEXT-VARIABLE[:CONTEXT-KEY=VALUE[,CONTEXT-KEY=VALUE...]]}}

``{{secretcache:...}}`` is the same grammar under another opener, for templates CloudFormation
deploys (it resolves ``{{resolve:...}}`` itself). Every ``{{resolve:`` or ``{{secretcache:``
starts a reference; anything that does not match the grammar exactly is a
:class:`MalformedReference`, whose message names the variable and the position, never any text
of the value (a malformed value may hold a secret pasted by mistake). A well-formed reference
holds identifiers only, so its text may be shown in messages.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Mapping

# No re and no dataclasses here: the exec wrapper imports this module on every cold start, and
# those two imports cost more than everything else it does before its requests go out.

OPEN = "{{resolve:"
#: The same grammar under a name CloudFormation leaves alone: in a template, CloudFormation itself
#: resolves ``{{resolve:...}}`` at deploy time and would store the value in the configuration.
OPEN_ALIAS = "{{secretcache:"
OPENERS = (OPEN, OPEN_ALIAS)
CLOSE = "}}"
SERVICES = ("secretsmanager", "ssm", "ssm-secure", "kms")

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
#: Secrets Manager names and version stages.
_SECRET_CHARS = frozenset(_LETTERS + _DIGITS + "/_+=.@-")
_VERSION_ID_CHARS = frozenset(_LETTERS + _DIGITS + "-")
#: JSON key: printable ASCII without whitespace, ':' (the separator) or braces.
_JSON_KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset(":{}")
_PARAMETER_CHARS = frozenset(_LETTERS + _DIGITS + "_./-")
_VARIABLE_CHARS = frozenset(_LETTERS + _DIGITS + "_")
_CONTEXT_CHARS = frozenset(_LETTERS + _DIGITS + "_./@+-")
_PARTITION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz-")
_REGION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _made_of(text: str, chars: frozenset[str], low: int, high: int) -> bool:
    return low <= len(text) <= high and all(c in chars for c in text)


def _arn_head_ok(parts: list[str], service: str) -> bool:
    """arn:PARTITION:SERVICE:REGION:ACCOUNT (the first five fields of an ARN)."""
    return (
        parts[0] == "arn"
        and parts[1].startswith("aws")
        and _made_of(parts[1], _PARTITION_CHARS, 3, 32)
        and parts[2] == service
        and _made_of(parts[3], _REGION_CHARS, 1, 32)
        and len(parts[4]) == 12
        and parts[4].isascii()
        and parts[4].isdigit()
    )


def _is_secret_arn(text: str) -> bool:
    """arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME."""
    parts = text.split(":")
    return (
        len(parts) == 7
        and _arn_head_ok(parts, "secretsmanager")
        and parts[5] == "secret"
        and _made_of(parts[6], _SECRET_CHARS, 1, 512)
    )


def _is_parameter_arn(text: str) -> bool:
    """arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME."""
    parts = text.split(":")
    return (
        len(parts) == 6
        and _arn_head_ok(parts, "ssm")
        and parts[5].startswith("parameter/")
        and _made_of(parts[5][len("parameter/") :], _PARAMETER_CHARS, 1, 2048)
    )


def _is_positive_integer(text: str) -> bool:
    return 1 <= len(text) <= 19 and text.isascii() and text.isdigit() and text[0] != "0"


def _is_variable_name(text: str) -> bool:
    return _made_of(text, _VARIABLE_CHARS, 1, 256) and not text[0].isdigit()


class _Value:
    """An immutable value object: equality, hash and repr from its slots."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other._fields() == self._fields()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._fields()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({inner})"


class MalformedReference(ValueError):
    """A value that does not follow the grammar; the message never quotes the value."""

    def __init__(self, variable: str, position: int, reason: str) -> None:
        self.variable = variable
        self.position = position
        self.reason = reason
        super().__init__(f"{variable}: malformed reference at character {position + 1}: {reason}")


class SecretReference(_Value):
    """``{{resolve:secretsmanager:...}}``: a secret's SecretString, or one key of it."""

    __slots__ = ("json_key", "secret_id", "version_id", "version_stage")
    secret_id: str
    json_key: str | None
    version_stage: str | None
    version_id: str | None

    def __init__(
        self,
        secret_id: str,
        json_key: str | None = None,
        version_stage: str | None = None,
        version_id: str | None = None,
    ) -> None:
        super().__init__(
            secret_id=secret_id,
            json_key=json_key,
            version_stage=version_stage,
            version_id=version_id,
        )

    @property
    def text(self) -> str:
        fields = [self.secret_id, "SecretString", self.json_key or "", self.version_stage or ""]
        fields.append(self.version_id or "")
        while fields[-1] == "" or (len(fields) == 2 and fields[-1] == "SecretString"):
            fields.pop()
        return OPEN + "secretsmanager:" + ":".join(fields) + CLOSE


class ParameterReference(_Value):
    """``{{resolve:ssm:...}}`` (String, StringList) or ``{{resolve:ssm-secure:...}}``."""

    __slots__ = ("name", "secure", "version")
    name: str
    version: int | None
    secure: bool

    def __init__(self, name: str, version: int | None = None, secure: bool = False) -> None:
        super().__init__(name=name, version=version, secure=secure)

    @property
    def text(self) -> str:
        service = "ssm-secure" if self.secure else "ssm"
        version = "" if self.version is None else f":{self.version}"
        return f"{OPEN}{service}:{self.name}{version}{CLOSE}"


class KmsReference(_Value):
    """``{{resolve:kms:VAR[:k=v,...]}}``: KMS Decrypt of the base64 ciphertext held in ``VAR``."""

    __slots__ = ("context", "variable")
    variable: str
    context: tuple[tuple[str, str], ...]

    def __init__(self, variable: str, context: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(variable=variable, context=context)

    @property
    def text(self) -> str:
        context = ",".join(f"{k}={v}" for k, v in self.context)
        return f"{OPEN}kms:{self.variable}{':' + context if context else ''}{CLOSE}"


Reference = SecretReference | ParameterReference | KmsReference


class Template(_Value):
    """One variable's value cut into literal text and references, in order.

    ``sources``: each reference's text as written (validated, so safe to show), in order.
    """

    __slots__ = ("parts", "sources", "variable")
    variable: str
    parts: tuple[str | Reference, ...]
    sources: tuple[str, ...]

    def __init__(
        self, variable: str, parts: tuple[str | Reference, ...], sources: tuple[str, ...] = ()
    ) -> None:
        super().__init__(variable=variable, parts=parts, sources=sources)

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(p for p in self.parts if not isinstance(p, str))

    def render(self, values: Mapping[Reference, str]) -> str:
        """The value with every reference replaced by its resolved text."""
        return "".join(p if isinstance(p, str) else values[p] for p in self.parts)


def has_reference(value: str) -> bool:
    return OPEN in value or OPEN_ALIAS in value


def _next_opener(value: str, position: int) -> tuple[int, str]:
    """Where the next reference starts and its opener; (-1, "") when none is left."""
    found = [(i, o) for o in OPENERS if (i := value.find(o, position)) >= 0]
    return min(found) if found else (-1, "")


def parse_value(variable: str, value: str) -> Template:
    """Split a value into literal text and references; raise :class:`MalformedReference`."""
    parts: list[str | Reference] = []
    sources: list[str] = []
    position = 0
    while True:
        start, opener = _next_opener(value, position)
        if start < 0:
            break
        if start > position:
            parts.append(value[position:start])
        end = value.find(CLOSE, start + len(opener))
        if end < 0:
            raise MalformedReference(variable, start, "no closing '}}'")
        body = value[start + len(opener) : end]
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
        if not has_reference(value):
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
        if not _is_secret_arn(secret_id):
            return _fail(variable, at, "secretsmanager: not a valid secret ARN")
    elif not _made_of(secret_id, _SECRET_CHARS, 1, 512):
        return _fail(variable, at, "secretsmanager: not a valid secret name")
    if len(fields) > 4:
        return _fail(variable, at, "secretsmanager: too many fields (at most 5 after the service)")
    fields += [""] * (4 - len(fields))
    kind, json_key, stage, version_id = fields
    if kind not in ("", "SecretString"):
        return _fail(variable, at, "secretsmanager: the second field must be SecretString or empty")
    if json_key and not _made_of(json_key, _JSON_KEY_CHARS, 1, 256):
        return _fail(variable, at, "secretsmanager: not a valid JSON key")
    if stage and not _made_of(stage, _SECRET_CHARS, 1, 256):
        return _fail(variable, at, "secretsmanager: not a valid version stage")
    if version_id and not _made_of(version_id, _VERSION_ID_CHARS, 32, 64):
        return _fail(variable, at, "secretsmanager: not a valid version id")
    if stage and version_id:
        return _fail(variable, at, "secretsmanager: give a version stage or a version id, not both")
    return SecretReference(secret_id, json_key or None, stage or None, version_id or None)


def _parse_parameter(variable: str, at: int, rest: str, *, secure: bool) -> Reference:
    service = "ssm-secure" if secure else "ssm"
    name, fields = _split_arn(rest, 6)
    if name.startswith("arn:"):
        if not _is_parameter_arn(name):
            return _fail(variable, at, f"{service}: not a valid parameter ARN")
    elif not _made_of(name, _PARAMETER_CHARS, 1, 2048):
        return _fail(variable, at, f"{service}: not a valid parameter name")
    if len(fields) > 1:
        return _fail(variable, at, f"{service}: too many fields (a name and a version at most)")
    version = None
    if fields:
        if not _is_positive_integer(fields[0]):
            return _fail(variable, at, f"{service}: the version must be a positive integer")
        version = int(fields[0])
    return ParameterReference(name, version, secure)


def _parse_kms(variable: str, at: int, rest: str) -> Reference:
    source, sep, context_text = rest.partition(":")
    if not _is_variable_name(source):
        return _fail(variable, at, "kms: the first field must be an environment variable name")
    if source == variable:
        return _fail(variable, at, "kms: the ciphertext must be in another variable")
    if sep and not context_text:
        return _fail(variable, at, "kms: empty encryption context")
    context: dict[str, str] = {}
    if context_text:
        for pair in context_text.split(","):
            key, eq, val = pair.partition("=")
            valid = _made_of(key, _CONTEXT_CHARS, 1, 384) and _made_of(val, _CONTEXT_CHARS, 1, 384)
            if not eq or not valid:
                return _fail(variable, at, "kms: the encryption context must be KEY=VALUE,...")
            if key in context:
                return _fail(variable, at, "kms: an encryption context key appears twice")
            context[key] = val
    return KmsReference(source, tuple(sorted(context.items())))
