"""The Lambda Extensions API and Runtime API on one loopback port (``AWS_LAMBDA_RUNTIME_API``).

This module only parses HTTP and renders replies; the lifecycle decisions live in the
:class:`Sandbox` protocol that :mod:`tools.emulator.emulator` implements. A threaded
``http.server`` is enough: the blocking ``event/next`` and ``invocation/next`` calls each hold one
thread, and there are only a handful of clients.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

EXTENSION_API = "/2020-01-01/extension"
RUNTIME_API = "/2018-06-01/runtime"


@dataclass
class Reply:
    """An HTTP answer from the sandbox."""

    status: int
    body: Any = None  # dict/list -> JSON; bytes -> as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


def error_reply(status: int, error_type: str, message: str) -> Reply:
    """Lambda's error body shape: ``{"errorMessage", "errorType"}``."""
    return Reply(status, {"errorMessage": message, "errorType": error_type})


class Sandbox(Protocol):
    """What the API server needs from the execution environment it fronts."""

    def register(self, name: str, body: bytes, headers: dict[str, str]) -> Reply: ...
    def extension_next(self, extension_id: str) -> Reply: ...
    def extension_error(
        self, kind: str, extension_id: str, error_type: str, body: bytes
    ) -> Reply: ...
    def runtime_next(self) -> Reply: ...
    def runtime_result(self, request_id: str, kind: str, error_type: str, body: bytes) -> Reply: ...
    def runtime_init_error(self, error_type: str, body: bytes) -> Reply: ...


_INVOCATION = re.compile(rf"^{RUNTIME_API}/invocation/([^/]+)/(response|error)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Lambda's API endpoint
    # headers and body go out in separate writes; with Nagle on, the second waits for the
    # client's delayed ACK and every warm invoke gains ~80 ms that Lambda does not have
    disable_nagle_algorithm = True
    server: LambdaApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator records phases; access logs would only be noise

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        data = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _route(self, method: str) -> Reply:
        sandbox = self.server.sandbox
        path = self.path.split("?", 1)[0]
        body = self._body() if method == "POST" else b""
        hdr = self.headers
        if path.startswith(EXTENSION_API):
            sub = path[len(EXTENSION_API) :]
            ext_id = hdr.get("Lambda-Extension-Identifier", "")
            if method == "POST" and sub == "/register":
                headers = {k.lower(): v for k, v in hdr.items()}
                return sandbox.register(hdr.get("Lambda-Extension-Name", ""), body, headers)
            if method == "GET" and sub == "/event/next":
                return sandbox.extension_next(ext_id)
            if method == "POST" and sub in ("/init/error", "/exit/error"):
                kind = sub.split("/")[1]
                err = hdr.get("Lambda-Extension-Function-Error-Type", "")
                return sandbox.extension_error(kind, ext_id, err, body)
        elif path.startswith(RUNTIME_API):
            if method == "GET" and path == f"{RUNTIME_API}/invocation/next":
                return sandbox.runtime_next()
            err = hdr.get("Lambda-Runtime-Function-Error-Type", "")
            if method == "POST" and path == f"{RUNTIME_API}/init/error":
                return sandbox.runtime_init_error(err, body)
            match = _INVOCATION.match(path)
            if method == "POST" and match:
                return sandbox.runtime_result(match.group(1), match.group(2), err, body)
        return error_reply(404, "InvalidRequest", f"unknown path {method} {path}")

    def _handle(self, method: str) -> None:
        try:
            reply = self._route(method)
        except Exception as exc:  # pragma: no cover - a bug in the emulator; say so to the caller
            reply = error_reply(500, "Emulator.InternalError", repr(exc))
        # the process may have been killed while it waited on event/next
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send(reply)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


class LambdaApiServer(ThreadingHTTPServer):
    """Serves both APIs for one sandbox on ``127.0.0.1:<free port>``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.sandbox = sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a killed process leaves a reset keep-alive connection behind: expected, not an error
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"
