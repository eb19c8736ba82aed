"""Shared fixtures: moto server (session) and the extension as a real process (per test)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from tests.support.extension_process import ExtensionProcess
from tools.moto_server import MotoServer

# CI runs the property tests on hypothesis's fixed example sequence, so a pass or a failure there
# is reproducible; local runs keep drawing new examples (and keep what fails in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    """A prefix that keeps one test's AWS resources apart from another's on the shared moto."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def start_extension(moto_server: MotoServer) -> Iterator[Callable[..., ExtensionProcess]]:
    """Factory: start_extension(**env) -> a running extension pointed at moto."""
    started: list[ExtensionProcess] = []

    def start(wait: bool = True, **env: str) -> ExtensionProcess:
        process = ExtensionProcess({**moto_server.env(), **env})
        started.append(process)
        return process.start(wait=wait)

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def extension(start_extension: Callable[..., ExtensionProcess]) -> ExtensionProcess:
    return start_extension()
