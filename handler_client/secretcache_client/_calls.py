"""The client's calls, without I/O: its settings and the five reads.

:class:`~secretcache_client.Client` (blocking sockets) and
:class:`~secretcache_client.aio.AsyncClient` (asyncio streams) are only transports: each
moves a :class:`Call`'s request bytes to the extension and the answer back, attempting it
as :mod:`._attempts` decides. What they must agree on is here and there, once, so they
cannot drift:

- :class:`BaseClient`: the settings both take, validated in one place;
- the reads (:func:`get_secret`, ...): each turns its arguments into a :class:`Call`, the
  request plus how the answer becomes the caller's result. ``Client`` binds each one as a
  blocking method, ``AsyncClient`` as a coroutine method, from the same function, so a read
  added here appears on both.
"""

from __future__ import annotations

from . import _protocol as proto
from ._attempts import IdlePool

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Generic, Literal, TypeVar, overload

    T = TypeVar("T")
    F = TypeVar("F", bound=Callable[..., Any])
else:
    from ._attempts import Generic  # a stand-in: typing is not imported at run time

    T = None


class BaseClient:
    """The settings shared by ``Client`` and ``AsyncClient``.

    ``timeout`` bounds each call, start-up retries included; ``retries`` caps those
    retries (``None``: as many as fit in ``timeout``); at most ``max_idle_connections``
    kept-alive connections stay open between calls.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        token: str | None = None,
        timeout: float = 3.0,
        retries: int | None = None,
        max_idle_connections: int = 4,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries is not None and retries < 0:
            raise ValueError("retries must be >= 0 or None")
        if token is not None:
            proto.resolve_token(token)  # reject an unusable token now, not per call
        self._port = None if port is None else proto.resolve_port(port)
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self._pool: IdlePool[Any] = IdlePool(max_idle_connections)

    def __repr__(self) -> str:
        # Never the token.
        return (
            f"{type(self).__name__}(port={self.port}, timeout={self.timeout!r}, "
            f"retries={self.retries!r})"
        )

    @property
    def port(self) -> int:
        """The extension's port (resolved from the environment on first use)."""
        if self._port is None:
            self._port = proto.resolve_port(None)
        return self._port

    def prepare(
        self, method: str, path: str, body: bytes | None, shape: Callable[[dict[str, Any]], T]
    ) -> Call[T]:
        """The Call for one request, with the token as it is now."""
        token = proto.resolve_token(self._token)
        return Call(proto.request_bytes(method, path, self.port, body, token), token, shape)


class Call(Generic[T]):
    """One prepared request and how its answer becomes the caller's result."""

    __slots__ = ("request", "shape", "token")

    def __init__(
        self, request: bytes, token: str | None, shape: Callable[[dict[str, Any]], T]
    ) -> None:
        self.request = request
        self.token = token  # kept to scrub it out of error text
        self.shape = shape

    def result(self, answer: proto.Answer) -> T:
        """The result of a final answer, or the typed exception for an error answer."""
        if answer.status != 200:
            raise proto.error_for(answer.status, answer.body, self.token)
        return self.shape(proto.parse_success(answer.body))


# -- the reads: one function each, bound onto both clients ---------------------------------


def as_method(method: F, read: Callable[..., Any], owner: str) -> F:
    """Give ``method`` (a client's binding of ``read``) the read's name, docs and signature.

    ``inspect.signature`` (``help()``, IPython's ``?``) follows ``__wrapped__``: it points
    to a copy of ``read`` without the return annotation, which names the Call the read
    builds, not what the method returns (type checkers see the typed binding instead).
    """
    method.__name__ = read.__name__
    method.__qualname__ = f"{owner}.{read.__name__}"
    method.__doc__ = read.__doc__
    function_type: Any = type(read)  # types.FunctionType, without importing types
    shown = function_type(read.__code__, read.__globals__, read.__name__, read.__defaults__)
    shown.__kwdefaults__ = read.__kwdefaults__
    shown.__annotations__ = {k: v for k, v in read.__annotations__.items() if k != "return"}
    method.__wrapped__ = shown  # type: ignore[attr-defined]
    return method


if TYPE_CHECKING:  # the overloads matter only to type checkers

    @overload
    def get_secret(
        client: BaseClient,
        secret_id: str,
        *,
        version_id: str | None = ...,
        version_stage: str | None = ...,
        transform: None = ...,
        refresh: bool = ...,
    ) -> Call[str | bytes]: ...
    @overload
    def get_secret(
        client: BaseClient,
        secret_id: str,
        *,
        version_id: str | None = ...,
        version_stage: str | None = ...,
        transform: Literal["binary"],
        refresh: bool = ...,
    ) -> Call[bytes]: ...
    @overload
    def get_secret(
        client: BaseClient,
        secret_id: str,
        *,
        version_id: str | None = ...,
        version_stage: str | None = ...,
        transform: Literal["json", "auto"],
        refresh: bool = ...,
    ) -> Call[Any]: ...


def get_secret(
    client: BaseClient,
    secret_id: str,
    *,
    version_id: str | None = None,
    version_stage: str | None = None,
    transform: proto.Transform | None = None,
    refresh: bool = False,
) -> Call[Any]:
    """A secret's value: ``SecretString`` (str) or ``SecretBinary`` (bytes).

    ``transform``: ``"json"`` parses it, ``"binary"`` base64-decodes a SecretString
    (a SecretBinary is returned as is), ``"auto"`` picks by the id's ``.json`` /
    ``.binary`` suffix. ``refresh=True`` makes the extension re-read it from AWS.
    """
    proto.check_transform(transform, parameter=False)
    path = proto.secret_path(secret_id, version_id, version_stage, refresh)
    return client.prepare(
        "GET", path, None, lambda document: proto.secret_result(document, secret_id, transform)
    )


def get_secret_value(
    client: BaseClient,
    secret_id: str,
    *,
    version_id: str | None = None,
    version_stage: str | None = None,
    refresh: bool = False,
) -> Call[dict[str, Any]]:
    """The whole GetSecretValue answer (``ARN``, ``Name``, ``SecretString``, ...)."""
    path = proto.secret_path(secret_id, version_id, version_stage, refresh)
    return client.prepare("GET", path, None, _whole)


def _whole(document: dict[str, Any]) -> dict[str, Any]:
    return document


if TYPE_CHECKING:  # the overloads matter only to type checkers

    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: None = ...,
        refresh: bool = ...,
    ) -> Call[str]: ...
    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: Literal["list"],
        refresh: bool = ...,
    ) -> Call[list[str]]: ...
    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: Literal["binary"],
        refresh: bool = ...,
    ) -> Call[bytes]: ...
    @overload
    def get_parameter(
        client: BaseClient,
        name: str,
        *,
        decrypt: bool = ...,
        version: int | str | None = ...,
        label: str | None = ...,
        transform: Literal["json", "auto"],
        refresh: bool = ...,
    ) -> Call[Any]: ...


def get_parameter(
    client: BaseClient,
    name: str,
    *,
    decrypt: bool = True,
    version: int | str | None = None,
    label: str | None = None,
    transform: proto.ParameterTransform | None = None,
    refresh: bool = False,
) -> Call[Any]:
    """A Parameter Store value (SecureStrings decrypted unless ``decrypt=False``).

    ``version`` or ``label`` selects one; ``transform="list"`` splits a StringList.
    """
    proto.check_transform(transform, parameter=True)
    path = proto.parameter_path(name, decrypt, version, label, refresh)
    return client.prepare(
        "GET", path, None, lambda document: proto.parameter_result(document, name, transform)
    )


def get_parameters_by_path(
    client: BaseClient,
    path: str,
    *,
    decrypt: bool = True,
    recursive: bool = False,
    refresh: bool = False,
) -> Call[dict[str, str]]:
    """Every parameter under ``path`` as {full name: value} (secretcache only)."""
    query = proto.parameters_by_path_path(path, decrypt, recursive, refresh)
    return client.prepare("GET", query, None, proto.parameters_by_path_result)


def kms_decrypt(
    client: BaseClient,
    ciphertext: bytes | str,
    *,
    encryption_context: Mapping[str, str] | None = None,
    key_id: str | None = None,
) -> Call[bytes]:
    """KMS Decrypt through the extension; ``str`` ciphertext is taken as base64."""
    body = proto.decrypt_body(ciphertext, encryption_context, key_id)
    return client.prepare("POST", proto.DECRYPT_PATH, body, proto.plaintext_result)


READS = (get_secret, get_secret_value, get_parameter, get_parameters_by_path, kms_decrypt)
"""Every read; both clients bind each one, and a test holds them to it."""
