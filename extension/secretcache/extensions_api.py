"""Lambda Extensions API client on a raw socket.

Registration sits on the cold-start critical path, so this speaks just enough HTTP/1.1 to talk to
the local Lambda API without importing http.client (and the email package behind it), on the C
`_socket` module: `socket` pulls in `selectors` and `enum`, ~5-8 ms before registering.
"""

from __future__ import annotations

import _socket

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from typing import Any

#: The register body, written out so `json` need not load before registering.
_REGISTER_BODY = b'{"events": ["INVOKE", "SHUTDOWN"]}'

API_VERSION = "2020-01-01"


class ExtensionsApiError(RuntimeError):
    """The Extensions API answered with an unexpected status or could not be reached."""


class Event:
    """One event from event/next: INVOKE, or SHUTDOWN with its deadline and reason."""

    __slots__ = ("deadline", "kind", "shutdown_reason")

    def __init__(self, kind: str, deadline: float | None = None, shutdown_reason: str = "") -> None:
        self.kind = kind
        #: Wall-clock seconds (Lambda's deadlineMs / 1000) by which to have exited; None if absent.
        self.deadline = deadline
        self.shutdown_reason = shutdown_reason

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Event:
        deadline_ms = body.get("deadlineMs")
        deadline = deadline_ms / 1000.0 if isinstance(deadline_ms, (int, float)) else None
        return cls(
            str(body.get("eventType", "")).upper(),
            deadline,
            str(body.get("shutdownReason", "")).lower(),
        )

    @property
    def is_shutdown(self) -> bool:
        return self.kind == "SHUTDOWN"


class ExtensionsApiClient:
    """register, event/next, init/error and exit/error against $AWS_LAMBDA_RUNTIME_API."""

    def __init__(self, runtime_api: str) -> None:
        host, _, port = runtime_api.rpartition(":")
        if not host or not port.isdigit():
            host, port = runtime_api, "80"
        self._address = (host.strip("[]"), int(port))
        self._host_header = runtime_api
        self.identifier: str | None = None

    def _request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} /{API_VERSION}/extension/{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        payload = "\r\n".join(lines).encode("latin-1") + body
        conn = connect(*self._address)
        try:
            conn.sendall(payload)
            return _read_response(conn)
        finally:
            conn.close()

    def register(self, name: str) -> str:
        """Register for INVOKE and SHUTDOWN; returns the extension identifier."""
        status, headers, _ = self._request(
            "POST",
            "register",
            {"Lambda-Extension-Name": name, "Content-Type": "application/json"},
            _REGISTER_BODY,
        )
        identifier = headers.get("lambda-extension-identifier")
        if status != 200 or not identifier:
            raise ExtensionsApiError(f"register answered {status}")
        self.identifier = identifier
        return identifier

    def next_event(self) -> Event:
        """Block until Lambda sends the next event (no timeout: Lambda may freeze us here)."""
        status, _, body = self._request("GET", "event/next", self._id_header())
        if status != 200:
            raise ExtensionsApiError(f"event/next answered {status}")
        import json

        parsed = json.loads(body or b"{}")
        return Event.from_json(parsed if isinstance(parsed, dict) else {})

    def init_error(self, error_type: str, message: str) -> None:
        self._report("init/error", error_type, message)

    def exit_error(self, error_type: str, message: str) -> None:
        self._report("exit/error", error_type, message)

    def _report(self, path: str, error_type: str, message: str) -> None:
        import json

        body = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        headers = {
            **self._id_header(),
            "Lambda-Extension-Function-Error-Type": error_type,
            "Content-Type": "application/json",
        }
        self._request("POST", path, headers, body)

    def _id_header(self) -> dict[str, str]:
        return {"Lambda-Extension-Identifier": self.identifier or ""}


def connect(host: str, port: int) -> _socket.socket:
    """A connected TCP socket to the first address of ``host`` that accepts (create_connection)."""
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error if error is not None else OSError(f"no address for {host}")


def _read_response(conn: _socket.socket) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            raise ExtensionsApiError("connection closed before the response headers")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ExtensionsApiError("malformed status line")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return int(parts[1]), headers, _read_chunked(conn, rest)
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        want = int(length)
        while len(rest) < want:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(parts[1]), headers, rest[:want]
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return int(parts[1]), headers, rest
        rest += chunk


def _read_chunked(conn: _socket.socket, data: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                raise ExtensionsApiError("truncated chunked body")
            data += more
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return body
        while len(data) < size + 2:
            more = conn.recv(65536)
            if not more:
                raise ExtensionsApiError("truncated chunked body")
            data += more
        body += data[:size]
        data = data[size + 2 :]
