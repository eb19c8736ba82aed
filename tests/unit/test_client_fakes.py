"""A scriptable stand-in for the extension's HTTP side, for the client's unit tests.

Real sockets on a free 127.0.0.1 port, so the client's connection handling (keep-alive,
reconnects, refusals, timeouts) is exercised for real. It counts accepted connections.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "tok-Fq7Zx0-session-token-value"
SECRET = "s3cr3t-Value-That-Must-Never-Leak"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    close_after: bool = False  # close the socket after answering, without saying so
    drop: bool = False  # close the socket without answering
    chunked: bool = False


def secret_reply(string: str | None = SECRET, binary: str | None = None, name: str = "db") -> Reply:
    return Reply(
        body={
            "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf",
            "CreatedDate": "2024-01-01T00:00:00.000Z",
            "Name": name,
            "SecretBinary": binary,
            "SecretString": string,
            "VersionId": "v1",
            "VersionStages": ["AWSCURRENT"],
            "ResultMetadata": {},
        }
    )


def parameter_reply(value: str, name: str = "/app/p", type_: str = "String") -> Reply:
    return Reply(
        body={
            "Parameter": {
                "ARN": f"arn:aws:ssm:us-east-1:123456789012:parameter{name}",
                "DataType": "text",
                "LastModifiedDate": "2024-01-01T00:00:00.000Z",
                "Name": name,
                "Selector": None,
                "SourceResult": None,
                "Type": type_,
                "Value": value,
                "Version": 1,
            },
            "ResultMetadata": {},
        }
    )


def error_reply(status: int, error_type: str, message: str) -> Reply:
    return Reply(status=status, body={"errorType": error_type, "message": message})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection_id = self.server.fake.count_connection()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            connection=self.connection_id,
        )
        reply = fake.record(request)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            return
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(data), 7):
                piece = data[start : start + 7]
                self.wfile.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()
        if reply.close_after:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when many clients connect at once
    fake: FakeExtension

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout tests) is expected


class FakeExtension:
    """Answers each request with ``responder(request)``; records requests and connections."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.connections = 0
        self.responder: Callable[[Request], Reply] = lambda request: secret_reply()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def count_connection(self) -> int:
        with self._lock:
            self.connections += 1
            return self.connections

    def record(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
        return self.responder(request)

    def always(self, reply: Reply) -> None:
        self.responder = lambda request: reply

    def sequence(self, *replies: Reply) -> None:
        """Answer with each reply in turn, then keep repeating the last."""
        remaining = list(replies)

        def next_reply(request: Request) -> Reply:
            with self._lock:
                return remaining.pop(0) if len(remaining) > 1 else remaining[0]

        self.responder = next_reply

    def __enter__(self) -> FakeExtension:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
