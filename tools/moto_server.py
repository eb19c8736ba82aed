"""moto in server mode, as a real process speaking HTTP on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from .net import free_port, http_request, wait_for_http

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


class MotoServer:
    """Start with `start()`, stop with `stop()`; `client(service)` gives a seeded boto3 client."""

    def __init__(self, port: int | None = None, *, env: dict[str, str] | None = None) -> None:
        """`env`: moto's own settings, e.g. INITIAL_NO_AUTH_ACTION_COUNT (IAM enforcement)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._settings = dict(env or {})

    def start(self) -> MotoServer:
        env = {**os.environ, **FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, **self._settings}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_http(self.port, "/moto-api/", timeout=60)
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def reset(self) -> None:
        http_request(self.port, "POST", "/moto-api/reset")

    def env(self) -> dict[str, str]:
        """What a process needs to use this server as AWS."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.url,
        }

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
