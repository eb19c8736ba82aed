"""The extension as a real process (standalone mode, or pointed at a fake Extensions API)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tools.net import HttpResult, free_port, http_request

REPO = Path(__file__).resolve().parents[2]
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


class ExtensionProcess:
    """`python -m secretcache` from the source tree, stdout collected line by line."""

    def __init__(self, env: dict[str, str], *, name: str = "secretcache") -> None:
        self.port = int(env.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT") or free_port())
        self.token = env.get("AWS_SESSION_TOKEN") or ("tok-" + secrets.token_hex(24))
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("AWS_", "PARAMETERS_SECRETS_", "SECRETCACHE_", "SECRETS_MANAGER_", "SSM_")
            )
        }
        self.env = {
            **base,
            "PYTHONPATH": str(REPO / "extension"),
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(self.port),
            "AWS_SESSION_TOKEN": self.token,
            **{k: v for k, v in env.items() if k != "AWS_SESSION_TOKEN"},
        }
        self.name = name
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.returncode: int | None = None

    def start(self, *, wait: bool = True, timeout: float = 20.0) -> ExtensionProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "secretcache", "--name", self.name],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stream, sink in (
            (self.process.stdout, self.lines),
            (self.process.stderr, self.stderr_lines),
        ):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()
        if wait:
            self.wait_ready(timeout)
        return self

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until /health says ok (the SDK has loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"extension exited {self.process.returncode}: {self.stderr_lines[-5:]}"
                )
            try:
                result = self.request("GET", "/health", token=None)
                if result.status == 200 and result.json() == {"status": "ok"}:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("extension did not become healthy")

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | bool | None = True,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 15.0,
    ) -> HttpResult:
        all_headers = dict(headers or {})
        if token is True:
            all_headers[TOKEN_HEADER] = self.token
        elif isinstance(token, str):
            all_headers[TOKEN_HEADER] = token
        return http_request(
            self.port, method, path, headers=all_headers, body=body, timeout=timeout
        )

    def get(self, path: str, **kwargs: object) -> HttpResult:
        return self.request("GET", path, **kwargs)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        time.sleep(0.05)
        return self.returncode

    def logs(self) -> str:
        return "\n".join(self.lines + self.stderr_lines)
