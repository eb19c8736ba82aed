"""The wire contract shared by the sync and async clients: paths, headers, bodies, results.

Everything here is pure (no I/O), so both clients agree byte for byte. ``json``,
``binascii`` and ``urllib.parse`` are imported inside functions: a handler that imports the
client pays for them only on its first request, when ``http.client`` has loaded most of
them anyway.
"""

from __future__ import annotations

import os

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

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~6 ms at cold start
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Literal, TypeAlias

    Transform: TypeAlias = Literal["json", "binary", "auto"]
    ParameterTransform: TypeAlias = Literal["json", "binary", "auto", "list"]

DEFAULT_PORT = 2773
PORT_ENV = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
SECRET_PATH = "/secretsmanager/get"
PARAMETER_PATH = "/systemsmanager/parameters/get"
PARAMETERS_BY_PATH_PATH = "/systemsmanager/parameters/getbypath"
DECRYPT_PATH = "/kms/decrypt"

# AWS's extension answers this (as a 400) until its own init has finished.
_NOT_READY = b"not ready to serve traffic"
_SECRET_TRANSFORMS = frozenset({None, "json", "binary", "auto"})
_PARAMETER_TRANSFORMS = frozenset({None, "json", "binary", "auto", "list"})
_MAX_MESSAGE = 300


def resolve_port(port: int | None) -> int:
    """The port to use: ``port`` if given, else ``$PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``."""
    if port is None:
        raw = os.environ.get(PORT_ENV, "").strip()
        if not raw:
            return DEFAULT_PORT
        try:
            port = int(raw)
        except ValueError:
            raise ValueError(f"{PORT_ENV} must be a port number, got {raw!r}") from None
    if isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be within 1..65535, got {port!r}")
    return port


def resolve_token(token: str | None) -> str | None:
    """The token to send: ``token`` if given, else ``$AWS_SESSION_TOKEN``/``$SECRETCACHE_TOKEN``,
    else (SnapStart, where Lambda sets no session token) ``$AWS_CONTAINER_AUTHORIZATION_TOKEN``.

    Read per request: the environment can change across SnapStart restores, and an
    ``os.environ`` lookup costs well under a microsecond.
    """
    if token is None:
        token = (
            os.environ.get("AWS_SESSION_TOKEN")
            or os.environ.get("SECRETCACHE_TOKEN")
            or os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        )
    if token is not None and not (token.isascii() and token.isprintable()):
        # http.client would echo the whole value in its ValueError; say why without it.
        raise Unauthorized("the token contains characters not allowed in an HTTP header")
    return token


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _require_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")


def secret_path(
    secret_id: str, version_id: str | None, version_stage: str | None, refresh: bool
) -> str:
    """Path and query of a GetSecretValue read."""
    _require_name(secret_id, "secret_id")
    path = f"{SECRET_PATH}?secretId={_quote(secret_id)}"
    if version_id:
        path += f"&versionId={_quote(version_id)}"
    if version_stage:
        path += f"&versionStage={_quote(version_stage)}"
    if refresh:
        path += "&refreshNow=true"
    return path


def parameter_path(
    name: str, decrypt: bool, version: int | str | None, label: str | None, refresh: bool
) -> str:
    """Path and query of a GetParameter read."""
    _require_name(name, "name")
    if version is not None and label is not None:
        raise ValueError("pass version or label, not both")
    path = f"{PARAMETER_PATH}?name={_quote(name)}"
    if version is not None:
        path += f"&version={_quote(str(version))}"
    if label is not None:
        path += f"&label={_quote(label)}"
    path += "&withDecryption=true" if decrypt else "&withDecryption=false"
    if refresh:
        path += "&refreshNow=true"
    return path


def parameters_by_path_path(path: str, decrypt: bool, recursive: bool, refresh: bool) -> str:
    """Path and query of a by-path read (secretcache only; AWS's extension has no such path)."""
    _require_name(path, "path")
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")
    query = f"{PARAMETERS_BY_PATH_PATH}?path={_quote(path)}"
    query += "&withDecryption=true" if decrypt else "&withDecryption=false"
    if recursive:
        query += "&recursive=true"
    if refresh:
        query += "&refreshNow=true"
    return query


def parameters_by_path_result(document: dict[str, Any]) -> dict[str, str]:
    """{full parameter name: value} from a by-path answer."""
    parameters = document.get("Parameters")
    if not isinstance(parameters, list):
        raise UpstreamError("the response has no Parameters list")
    values: dict[str, str] = {}
    for parameter in parameters:
        name = parameter.get("Name") if isinstance(parameter, dict) else None
        value = parameter.get("Value") if isinstance(parameter, dict) else None
        if not isinstance(name, str) or not isinstance(value, str):
            raise UpstreamError("a parameter in the response has no Name or Value")
        values[name] = value
    return values


def decrypt_body(
    ciphertext: bytes | str,
    encryption_context: Mapping[str, str] | None,
    key_id: str | None,
) -> bytes:
    """JSON body of a KMS Decrypt; ``str`` ciphertext is taken as already base64-encoded."""
    import json

    if isinstance(ciphertext, (bytes, bytearray, memoryview)):
        from binascii import b2a_base64

        blob = b2a_base64(bytes(ciphertext), newline=False).decode("ascii")
    elif isinstance(ciphertext, str):
        blob = ciphertext.strip()
    else:
        raise TypeError("ciphertext must be bytes or a base64 str")
    if not blob:
        raise ValueError("ciphertext must not be empty")
    body: dict[str, Any] = {"CiphertextBlob": blob}
    if encryption_context is not None:
        body["EncryptionContext"] = dict(encryption_context)
    if key_id is not None:
        body["KeyId"] = key_id
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def check_transform(transform: str | None, *, parameter: bool) -> None:
    """Reject an unknown transform before any request is made."""
    allowed = _PARAMETER_TRANSFORMS if parameter else _SECRET_TRANSFORMS
    if transform not in allowed:
        names = ", ".join(sorted(repr(t) for t in allowed if t is not None))
        raise ValueError(f"transform must be None or one of {names}, got {transform!r}")


def is_not_ready(status: int, body: bytes) -> bool:
    """True for AWS's extension's answer while it is still initialising."""
    return status == 400 and _NOT_READY in body[:512].lower()


def scrub(text: str, token: str | None) -> str:
    """Make error text safe and short: no token, no control characters, bounded length."""
    if token and token in text:
        text = text.replace(token, "<token>")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def error_for(status: int, body: bytes, token: str | None) -> SecretcacheError:
    """The exception for a non-200 answer: ours are JSON, AWS's extension's are plain text."""
    import json

    error_type: str | None = None
    message: object = None
    structured = False
    if body[:1] == b"{":
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict):
            raw_type = document.get("errorType") or document.get("__type")
            if isinstance(raw_type, str) and raw_type:
                error_type = scrub(raw_type, token)[:100]
                structured = True
            message = document.get("message") or document.get("Message")
    if not isinstance(message, str) or not message:
        message = body[:4096].decode("utf-8", "replace") if not structured else ""
    text = scrub(message, token) or f"HTTP {status} from the extension"

    cls: type[SecretcacheError]
    if status == 401:
        cls = Unauthorized
    elif status == 403:
        cls = AccessDenied
    elif status == 404:
        cls = SecretNotFound
    elif status == 429:
        cls = Throttled
    elif status == 400 and not structured:
        # AWS's extension answers a plain-text 400 for every failure, AWS's or its own.
        cls = UpstreamError
    elif 400 <= status < 500:
        cls = BadRequest
    else:
        cls = UpstreamError
    if status == 401 and token is None:
        text += (
            " (no token sent: AWS_SESSION_TOKEN, SECRETCACHE_TOKEN and"
            " AWS_CONTAINER_AUTHORIZATION_TOKEN are unset)"
        )
    return cls(text, error_type=error_type, status=status)


def parse_success(body: bytes) -> dict[str, Any]:
    """The JSON object of a 200 answer; a body that is not one is an UpstreamError."""
    import json

    failed = False
    document: Any = None
    try:
        document = json.loads(body)
    except ValueError:
        failed = True
    # Raised outside the except block so no traceback context holds the body.
    if failed or not isinstance(document, dict):
        raise UpstreamError("the extension answered 200 with a body that is not a JSON object")
    return document


def unavailable(reason: str, attempts: int, timeout: float) -> ExtensionUnavailable:
    """The error raised once start-up retries or the time budget have run out."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return ExtensionUnavailable(f"{reason} ({tries} within {timeout:g} s)")


def _b64decode(value: str | bytes) -> bytes | None:
    from binascii import a2b_base64

    try:
        return a2b_base64(value)
    except ValueError:
        return None


def _b64decode_strict(value: str) -> bytes | None:
    """Decode user data, rejecting anything but base64 (whitespace such as line breaks aside)."""
    from base64 import b64decode

    try:
        return b64decode("".join(value.split()), validate=True)
    except ValueError:
        return None


def _json_loads(value: str | bytes, what: str) -> Any:
    import json

    position: str | None = None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        position = f"line {exc.lineno} column {exc.colno}"
    except ValueError:  # bytes that are not UTF-8
        position = "not UTF-8 text"
    # Raised outside the except block: the JSONDecodeError holds the whole value in .doc.
    raise TransformError(f"{what} is not valid JSON ({position})")


def transform_value(value: str | bytes, transform: str | None, name: str, what: str) -> Any:
    """Apply a Powertools-style transform; ``auto`` picks by the name's suffix."""
    if transform == "auto":
        if name.endswith(".json"):
            transform = "json"
        elif name.endswith(".binary"):
            transform = "binary"
        else:
            return value
    if transform is None:
        return value
    if transform == "json":
        return _json_loads(value, what)
    if transform == "binary":
        if isinstance(value, bytes):
            return value  # SecretBinary: already decoded from the wire's base64
        decoded = _b64decode_strict(value)
        if decoded is None:
            raise TransformError(f"{what} is not valid base64")
        return decoded
    if transform == "list":
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        return text.split(",")
    raise ValueError(f"unknown transform {transform!r}")


def secret_result(document: dict[str, Any], secret_id: str, transform: str | None) -> Any:
    """SecretString, or SecretBinary decoded to bytes, then transformed."""
    string = document.get("SecretString")
    if isinstance(string, str):
        value: str | bytes = string
    else:
        binary = document.get("SecretBinary")
        decoded = _b64decode(binary) if isinstance(binary, str) else None
        if decoded is None:
            raise UpstreamError("the response has neither SecretString nor SecretBinary")
        value = decoded
    return transform_value(value, transform, secret_id, f"secret {secret_id!r}")


def parameter_result(document: dict[str, Any], name: str, transform: str | None) -> Any:
    """Parameter.Value, transformed."""
    parameter = document.get("Parameter")
    value = parameter.get("Value") if isinstance(parameter, dict) else None
    if not isinstance(value, str):
        raise UpstreamError("the response has no Parameter.Value")
    return transform_value(value, transform, name, f"parameter {name!r}")


def plaintext_result(document: dict[str, Any]) -> bytes:
    """Plaintext of a Decrypt answer, decoded from base64."""
    plaintext = document.get("Plaintext")
    decoded = _b64decode(plaintext) if isinstance(plaintext, str) else None
    if decoded is None:
        raise UpstreamError("the response has no base64 Plaintext")
    return decoded


# -- HTTP/1.1 on the wire (shared by the sync and asyncio clients) -------------------------

MAX_HEADER_LINES = 100
MAX_LINE = 65536


class MalformedResponse(Exception):
    """The bytes on the connection are not an HTTP/1.x response we can read."""


def request_bytes(
    method: str, path: str, port: int, body: bytes | None, token: str | None
) -> bytes:
    """One HTTP/1.1 request, kept alive by default."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if token is not None:
        head += f"{TOKEN_HEADER}: {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("ascii") + (body or b"")


class Answer:
    """A complete response: status, body, and whether the connection may carry another."""

    __slots__ = ("body", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.body = body
        self.keep_alive = keep_alive


class ResponseParser:
    """Reads one HTTP/1.x response from bytes as they arrive, without doing I/O itself.

    Each client feeds it what its connection received (``b""`` at end of stream) until
    :meth:`feed` returns the :class:`Answer`. An end of stream before the answer is complete
    raises ``ConnectionResetError``, as a socket would: a kept-alive connection the
    extension closed while idle fails that way, and earns the caller's one retry.
    """

    __slots__ = ("_buffer", "_chunks", "_framing", "_position", "_status")

    def __init__(self) -> None:
        self._buffer: bytes | bytearray = b""
        self._position = 0  # where the unparsed part of the buffer starts
        self._status = 0
        self._framing: tuple[str, int, bool] | None = None  # once the head is read
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> Answer | None:
        """Take the next bytes; the answer once it is complete, else ``None``."""
        if not data:
            return self._end_of_stream()
        if not self._buffer:
            self._buffer = data
        elif isinstance(self._buffer, bytearray):
            self._buffer += data
        else:  # a second piece: grow in place from here on, not by copying it all each time
            self._buffer = bytearray(self._buffer) + data
        while self._framing is None:
            if not self._read_head():
                return None
        kind, length, keep_alive = self._framing
        if kind == "length":
            end = self._position + length
            if len(self._buffer) < end:
                return None
            return Answer(self._status, bytes(self._buffer[self._position : end]), keep_alive)
        if kind == "chunked":
            return self._read_chunks(keep_alive)
        return None  # delimited by the server closing the connection

    def _end_of_stream(self) -> Answer:
        if self._framing is not None and self._framing[0] == "close":
            return Answer(self._status, bytes(self._buffer[self._position :]), False)
        if not self._buffer:
            raise ConnectionResetError("connection closed before a response")
        raise ConnectionResetError("connection closed inside a response")

    def _line(self) -> bytes | None:
        """The next line without its line end, or ``None`` until it has arrived."""
        end = self._buffer.find(b"\n", self._position)
        if end < 0:
            if len(self._buffer) - self._position > MAX_LINE:
                raise MalformedResponse("line too long")
            return None
        line = bytes(self._buffer[self._position : end])
        self._position = end + 1
        return line[:-1] if line.endswith(b"\r") else line

    def _read_head(self) -> bool:
        """Parse the status line and headers; False until all of them have arrived."""
        buffer, start = self._buffer, self._position
        status_end = buffer.find(b"\n", start)
        if status_end < 0:
            if len(buffer) - start > MAX_LINE:
                raise MalformedResponse("line too long")
            return False
        # Checked before the rest arrives, so that garbage fails at once rather than on timeout.
        parts = bytes(buffer[start:status_end]).split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise MalformedResponse("bad status line")
        crlf_end = buffer.find(b"\n\r\n", status_end)  # the empty line that ends the head
        lf_end = buffer.find(b"\n\n", status_end)
        if lf_end >= 0 and (crlf_end < 0 or lf_end < crlf_end):
            head_end, self._position = lf_end, lf_end + 2
        elif crlf_end >= 0:
            head_end, self._position = crlf_end, crlf_end + 3
        else:
            if len(buffer) - start > MAX_LINE * 4:
                raise MalformedResponse("head too long")
            return False
        lines = bytes(buffer[status_end + 1 : head_end]).split(b"\n")  # [b""] if none
        if len(lines) > MAX_HEADER_LINES:
            raise MalformedResponse("too many header lines")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        status = int(parts[1])
        if status >= 200:  # a 1xx answer is followed by the real one
            self._status = status
            self._framing = _framing(parts[0], status, headers)
        return True

    def _read_chunks(self, keep_alive: bool) -> Answer | None:
        while True:
            start = self._position
            size_line = self._line()
            if size_line is None:
                return None
            size = _chunk_size(size_line)
            if size == 0:
                while (trailer := self._line()) != b"":
                    if trailer is None:
                        self._position = start  # read the last chunk and trailers again
                        return None
                return Answer(self._status, b"".join(self._chunks), keep_alive)
            end = self._position + size + 2  # the data and its CRLF
            if len(self._buffer) < end:
                self._position = start
                return None
            self._chunks.append(bytes(self._buffer[self._position : end - 2]))
            self._position = end


def _framing(version: bytes, status: int, headers: dict[bytes, bytes]) -> tuple[str, int, bool]:
    """How the body is delimited ("chunked", "length" or "close"), its length, keep-alive."""
    connection = headers.get(b"connection", b"").lower()
    if version == b"HTTP/1.0":
        keep_alive = b"keep-alive" in connection
    else:
        keep_alive = b"close" not in connection
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return "chunked", 0, keep_alive
    if b"content-length" in headers:
        length = headers[b"content-length"]
        if not length.isdigit():
            raise MalformedResponse("bad Content-Length")
        return "length", int(length), keep_alive
    if status in (204, 304):
        return "length", 0, keep_alive
    return "close", 0, False


def _chunk_size(size_line: bytes) -> int:
    try:
        return int(size_line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise MalformedResponse("bad chunk size") from None
