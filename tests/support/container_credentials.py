"""Lambda's container credentials endpoint as SnapStart uses it: a real HTTP server on 127.0.0.1.

Under SnapStart, Lambda sets AWS_CONTAINER_CREDENTIALS_FULL_URI and
AWS_CONTAINER_AUTHORIZATION_TOKEN instead of key variables; a GET with the token in the
Authorization header answers the function role's credentials (moto's testing/testing here).
A wrong or missing token is 403. Every request is recorded (the token compared, never kept).
"""

from __future__ import annotations

import datetime
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Far enough ahead that a test's wall-clock jump of hours leaves them valid: a new read after a
#: restore is then the extension's doing, not an expiry.
VALID_FOR = datetime.timedelta(hours=12)


class ContainerCredentialsServer:
    """Serve credentials at ``url``; ``authorized`` / ``refused`` count the requests."""

    def __init__(self) -> None:
        self.token = "container-" + secrets.token_hex(16)
        self.authorized = 0
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                given = self.headers.get("Authorization") or ""
                if not secrets.compare_digest(given.encode(), server.token.encode()):
                    server.refused += 1
                    self._reply(403, {"message": "bad authorization token"})
                    return
                server.authorized += 1
                expires = datetime.datetime.now(datetime.timezone.utc) + VALID_FOR
                self._reply(
                    200,
                    {
                        "AccessKeyId": "testing",
                        "SecretAccessKey": "testing",
                        "Token": f"testing-session-{server.authorized}",
                        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                )

            def _reply(self, status: int, data: dict[str, str]) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/2018-06-01/credentials"

    def environment(self) -> dict[str, str]:
        """The variables SnapStart sets for this endpoint."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.token,
        }

    def __enter__(self) -> ContainerCredentialsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
