"""Fixtures for the resilience suite: a fault proxy in front of moto, observed extensions, and a
session-wide record of every log line, error body and exception text for the secret-hygiene proof.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.extension_process import ExtensionProcess
from tests.support.fault_proxy import FaultProxy
from tools.moto_server import MotoServer
from tools.net import HttpResult

#: Slack added to a configured timeout when asserting how long an answer took: a correctness
#: bound (never stuck past the timeout), not a benchmark, on two busy cores.
MARGIN = 1.0
TIMEOUT_MILLIS = "1500"
TIMEOUT = int(TIMEOUT_MILLIS) / 1000


@dataclass
class Hygiene:
    """Everything sensitive we seeded, and everything a client or operator could read."""

    sensitive: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def secret(self, value: str) -> str:
        self.sensitive.add(value)
        return value

    def record(self, source: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts.append((source, text))

    def leaks(self, texts: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        """(source, sensitive string) for every text that contains a sensitive string."""
        found = []
        for source, text in self.texts if texts is None else texts:
            for value in self.sensitive:
                if value in text:
                    found.append((source, value[:6] + "..."))
        return found


@pytest.fixture(scope="session")
def hygiene(figures: dict[str, Any]) -> Iterator[Hygiene]:
    """The session's record; at the end, the proof over everything recorded (no test has to
    run last): no log line, error body, header or exception text holds a seeded value or token.
    Each test's own texts are also checked as it finishes (see `start`)."""
    record = Hygiene()
    yield record
    leaks = record.leaks()
    figures["secret_hygiene"] = {
        "sensitive_strings": len(record.sensitive),
        "texts_checked": len(record.texts),
        "chars_checked": sum(len(t) for _, t in record.texts),
        "leaks": len(leaks),
    }
    assert not leaks, leaks
    if record.sensitive:  # the net was cast: it saw secrets, tokens and texts
        assert record.texts


class ObservedExtension(ExtensionProcess):
    """An extension whose error answers are recorded for the hygiene proof."""

    hygiene: Hygiene

    def request(self, method: str, path: str, **kwargs: Any) -> HttpResult:
        try:
            result = super().request(method, path, **kwargs)
        except Exception as exc:
            self.hygiene.record(f"exception {method} {path[:60]}", repr(exc))
            raise
        if result.status >= 400:
            self.hygiene.record(f"body {result.status} {path[:60]}", result.body)
        self.hygiene.record(f"headers {path[:60]}", json.dumps(result.headers))
        return result

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def resilience_env(proxy_url: str, **env: str) -> dict[str, str]:
    """Short TTLs and timeouts so faults play out in seconds; debug logs widen the hygiene net."""
    return {
        "AWS_ENDPOINT_URL": proxy_url,
        "SECRETS_MANAGER_TTL": "1",
        "SSM_PARAMETER_STORE_TTL": "1",
        "SECRETCACHE_KMS_TTL": "1",
        "SECRETS_MANAGER_TIMEOUT_MILLIS": TIMEOUT_MILLIS,
        "SSM_PARAMETER_STORE_TIMEOUT_MILLIS": TIMEOUT_MILLIS,
        "SECRETCACHE_KMS_TIMEOUT_MILLIS": TIMEOUT_MILLIS,
        "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "debug",
        **env,
    }


def new_extension(
    moto: MotoServer, hygiene: Hygiene, proxy: FaultProxy, **env: str
) -> ObservedExtension:
    token = hygiene.secret("tok-" + secrets.token_hex(24))
    process = ObservedExtension(
        {**moto.env(), **resilience_env(proxy.url, AWS_SESSION_TOKEN=token, **env)}
    )
    process.hygiene = hygiene
    return process


def finish_extension(process: ObservedExtension, hygiene: Hygiene, name: str) -> None:
    """Stop the process and add its output to the hygiene record."""
    process.stop()
    hygiene.record(f"logs of {name}", process.logs())
    assert "Traceback" not in process.logs(), f"{name}: a stack trace reached the logs"


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server.port).start()
    yield p
    p.stop()


@pytest.fixture
def start(
    moto_server: MotoServer, proxy: FaultProxy, hygiene: Hygiene, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ObservedExtension]]:
    """Factory: start(**env) -> a running extension whose AWS is the fault proxy."""
    started: list[ObservedExtension] = []

    def make(**env: str) -> ObservedExtension:
        process = new_extension(moto_server, hygiene, proxy, **env)
        started.append(process)
        return process.start()  # type: ignore[return-value]

    yield make
    before = len(hygiene.texts)
    for process in started:
        finish_extension(process, hygiene, request.node.name)
    leaks = hygiene.leaks(hygiene.texts[before:])
    assert not leaks, f"seeded secrets or the token leaked: {leaks}"


@dataclass
class Seeder:
    """Creates secrets and parameters directly in moto (not through the proxy)."""

    moto: MotoServer
    hygiene: Hygiene
    prefix: str

    def __post_init__(self) -> None:
        self.sm = self.moto.client("secretsmanager")
        self.ssm = self.moto.client("ssm")

    def value(self) -> str:
        return self.hygiene.secret("sv" + secrets.token_hex(12))

    def secret(self, name: str) -> tuple[str, str]:
        full, value = f"{self.prefix}-{name}", self.value()
        self.sm.create_secret(Name=full, SecretString=value)
        return full, value

    def rotate(self, name: str) -> str:
        value = self.value()
        self.sm.put_secret_value(SecretId=name, SecretString=value)
        return value

    def parameter(self, name: str) -> tuple[str, str]:
        full, value = f"/{self.prefix}/{name}", self.value()
        self.ssm.put_parameter(Name=full, Value=value, Type="SecureString")
        return full, value


@pytest.fixture
def seed(moto_server: MotoServer, hygiene: Hygiene, unique: str) -> Seeder:
    return Seeder(moto_server, hygiene, unique)


def secret_path(name: str) -> str:
    return f"/secretsmanager/get?secretId={name}"


def parameter_path(name: str) -> str:
    return f"/systemsmanager/parameters/get?name={name}&withDecryption=true"


def value_of(result: HttpResult) -> str:
    body = result.json()
    assert isinstance(body, dict)
    if "Parameter" in body:
        return str(body["Parameter"]["Value"])
    return str(body["SecretString"])


def timed(call: Callable[[], HttpResult]) -> tuple[HttpResult, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def assert_json_error(result: HttpResult, status: int | None = None) -> dict[str, Any]:
    """A rejection: the expected status, JSON, exactly errorType and message, no stack trace."""
    if status is not None:
        assert result.status == status, (result.status, result.body[:300])
    assert result.headers.get("content-type", "").startswith("application/json")
    body = result.json()
    assert isinstance(body, dict) and set(body) == {"errorType", "message"}, body
    assert isinstance(body["errorType"], str) and body["errorType"]
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in body["message"]
    return body


FIGURES_FILE = "resilience-figures.json"


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Figures the suite produced; printed and written to <tmp>/resilience-figures.json.

    Set SECRETCACHE_FIGURES_FILE to also write them elsewhere (e.g. bench/).
    """
    data: dict[str, Any] = {}
    yield data
    if not data:
        return
    text = json.dumps(data, indent=2, sort_keys=True)
    out = tmp_path_factory.getbasetemp() / FIGURES_FILE
    out.write_text(text)
    extra = os.environ.get("SECRETCACHE_FIGURES_FILE")
    if extra:
        Path(extra).write_text(text)
    print(f"\nresilience figures ({out}):\n{text}")
