"""The example Node.js function under AWS's Runtime Interface Emulator, no python3 on PATH.

RIE (the code ``sam local`` runs) starts the layer's extension from /opt/extensions, which runs
on the layer's bundled interpreter; the function is examples/node/index.mjs on a Node.js
runtime-API loop. Needs the RIE tier (``tools.rie``); skipped where it is not in the tree yet
or cannot run here.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, SeededAws

rie = pytest.importorskip("tools.rie", reason="the RIE tier (tools.rie) is not in this tree")
emulator = pytest.importorskip("tools.emulator.emulator")
net = pytest.importorskip("tools.net")

ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine(), "")
NODE_RUNTIME = Path(__file__).with_name("functions") / "node" / "runtime.mjs"


def masked(value: str, kind: str = "str") -> str:
    return f"******** ({kind}, {len(value)} chars)"


@pytest.mark.slow
def test_example_node_function_on_rie_reads_through_the_bundled_interpreter(
    layer_zip: Path, moto_server: Any, seeded_aws: SeededAws, tmp_path: Path
) -> None:
    reason = rie.unavailable_reason(ARCH)
    if reason is not None:
        pytest.skip(reason)
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (.ci/run installs it)")
    env = {
        **seeded_aws.function_env(),
        "PARAMETER_NAME": seeded_aws.secure_param,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(net.free_port()),
    }
    sandbox = rie.RieSandbox(
        REPO / "examples" / "node",
        "index.handler",
        env,
        layer=REPO / "dist" / f"layer-{ARCH}",
        endpoint_url=moto_server.url,
        extension_python=None,
        runtime_argv=[node, str(NODE_RUNTIME)],
        arch=ARCH,
    )
    sandbox.environment["PATH"] = emulator.path_without_python(tmp_path / "bin")
    assert shutil.which("python3", path=sandbox.environment["PATH"]) is None
    assert "SECRETCACHE_PYTHON" not in sandbox.environment
    with sandbox:
        results = [sandbox.invoke({}), sandbox.invoke({})]
        stop = sandbox.stop()
    for result in results:
        assert result.ok, (result.status, result.payload, sandbox.logs.text()[-3000:])
        assert result.payload["secret"] == masked(seeded_aws.secret_value)
        assert result.payload["secure_string"] == masked(seeded_aws.secure_value)
        assert result.payload["kms_plaintext"] == masked(seeded_aws.kms_plaintext, "bytes")
    timeline = sandbox.inits()[0]
    assert "secretcache" in timeline.ready_at
    assert stop.exit_code == 0 and not stop.killed
    for value in seeded_aws.expected().values():
        assert value not in sandbox.logs.text()
