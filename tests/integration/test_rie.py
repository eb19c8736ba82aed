"""The built layer under AWS's own Runtime Interface Emulator (RIE), with awslambdaric as runtime.

The same functions and moto-seeded resources as test_e2e.py, on the emulator AWS ships (the
code ``sam local`` runs), in a private mount namespace with the layer at /opt. RIE runs INIT at
the first invoke. Skipped, with one line saying why, where RIE cannot run (see ``rie_layer``).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tools.net import http_request
from tools.rie import RieSandbox

from .conftest import SeededAws, rotate

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


def metrics(rie: RieSandbox) -> dict:
    """The extension's counters, asked directly on its port (the namespace shares the network)."""
    port = int(rie.environment["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"])
    result = http_request(port, "GET", "/metrics", headers={TOKEN_HEADER: rie.session_token})
    assert result.status == 200, result.body
    return result.json()["services"]  # type: ignore[index]


@pytest.mark.parametrize("module", ["client_handler", "urllib_handler"])
def test_reads_during_init_are_misses_and_reads_in_the_handler_are_hits(
    rie_sandbox, seeded_aws: SeededAws, module: str
):
    rie = rie_sandbox(module)
    cold = rie.invoke({})  # INIT (the module reads everything at import), then the handler
    assert cold.ok, (cold.status, cold.payload, rie.logs.text()[-3000:])
    assert cold.payload["init"] == seeded_aws.expected()
    assert cold.payload["invoke"] == seeded_aws.expected()
    if module == "client_handler":  # the layer's stdlib client, from /opt/python
        assert cold.payload["client_file"] == "/opt/python/secretcache_client/__init__.py"

    counters = metrics(rie)
    assert counters["secretsmanager"]["misses"] == 1  # the read during INIT
    assert counters["secretsmanager"]["hits"] == 1  # the handler's read
    assert counters["secretsmanager"]["upstreamCalls"] == 1
    assert counters["ssm"]["misses"] == 2  # the SecureString and the labelled version
    assert counters["kms"]["hits"] == 1

    warm = rie.invoke({})
    assert warm.ok and warm.payload["invoke"] == seeded_aws.expected()
    assert metrics(rie)["secretsmanager"]["upstreamCalls"] == 1

    (init,) = rie.inits()
    # registered and ready (first event/next) before RIE ended INIT, i.e. served during INIT
    assert init.fatal_error is None
    assert init.started_at <= init.registered_at["secretcache"] <= init.ready_at["secretcache"]
    assert init.duration_ms is not None and init.duration_ms > 0
    subscribed = rie.wait_for_line(lambda t: "External agent secretcache" in t, timeout=1)
    assert subscribed is not None and "subscribed to [INVOKE SHUTDOWN]" in subscribed


def test_rotation_is_seen_after_the_ttl_and_at_once_with_refresh_now(
    rie_sandbox, moto_server, rotating_secret: str
):
    rie = rie_sandbox(
        "urllib_handler", env={"SECRET_ID": rotating_secret, "SECRETS_MANAGER_TTL": "2"}
    )
    assert rie.invoke({"action": "secret"}).payload == {"secret": "v1"}
    rotate(moto_server, rotating_secret, "v2")
    assert rie.invoke({"action": "secret"}).payload == {"secret": "v1"}  # cached
    assert rie.invoke({"action": "secret", "refresh": True}).payload == {"secret": "v2"}
    rotate(moto_server, rotating_secret, "v3")
    read_at = time.monotonic()
    assert rie.invoke({"action": "secret"}).payload == {"secret": "v2"}  # the refreshed entry
    time.sleep(max(0.0, read_at + 2.3 - time.monotonic()))
    assert rie.invoke({"action": "secret"}).payload == {"secret": "v3"}  # past the TTL


def test_prefetched_items_are_hits_for_the_first_reads_during_init(rie_sandbox, seeded_aws):
    rie = rie_sandbox(
        "prefetch_handler",
        env={
            "SECRETCACHE_PREFETCH": seeded_aws.prefetch_list(),
            "SECRETCACHE_PREFETCH_REQUIRED": "true",
        },
    )
    result = rie.invoke(
        {"expect_secret": seeded_aws.secret_value, "expect_parameter": seeded_aws.secure_value}
    )
    assert result.ok, (result.payload, rie.logs.text()[-3000:])
    assert result.payload["secret_matches"] and result.payload["parameter_matches"]
    for service in ("secretsmanager", "ssm", "kms"):
        counters = result.payload["after"][service]
        assert counters["upstreamCalls"] == 1, service  # the prefetch's, and no other
        assert counters["hits"] == 1, service  # the handler's first read, during INIT


def test_invalid_configuration_fails_init_with_a_message_naming_the_variable(rie_sandbox):
    rie = rie_sandbox("urllib_handler", env={"SECRETS_MANAGER_TTL": "abc"})
    result = rie.invoke({})
    # RIE answers a failed INIT with 502 and no body; the reason is in the logs
    assert result.status == 502 and result.body == b""
    (first, *_retries) = rie.inits()
    assert first.fatal_error == "Extension.InitError"
    failed = [r for r in rie.extension_log() if r.get("event") == "init.failed"]
    assert failed and failed[0]["errorType"] == "Extension.ConfigInvalid"
    assert "SECRETS_MANAGER_TTL" in failed[0]["message"]
    plain = rie.wait_for_line(lambda t: t.startswith("secretcache: SECRETS_MANAGER_TTL"))
    assert plain is not None, rie.logs.text()
    assert "Traceback" not in rie.logs.text("sandbox")
    assert not any(r.get("event") == "extension.ready" for r in rie.extension_log())


def test_shutdown_exits_cleanly_within_the_deadline(rie_sandbox):
    rie = rie_sandbox("urllib_handler")
    assert rie.invoke({}).ok
    stopped = rie.stop()
    assert not stopped.killed and stopped.exit_code == 0
    assert stopped.duration_ms < 2000  # RIE's SHUTDOWN deadline for the extensions
    events = [r["event"] for r in rie.extension_log()]
    assert events[-2:] == ["extension.shutdown", "extension.stopped"]
    assert "SIGKILL" not in rie.logs.text("rie")
    assert not rie.running


def test_no_token_or_secret_in_any_line_rie_or_the_extension_wrote(rie_sandbox, seeded_aws):
    rie = rie_sandbox("client_handler")
    assert rie.invoke({}).ok
    rie.stop()
    everything = rie.logs.text()
    assert everything, "nothing was captured"
    assert rie.session_token not in everything
    for value in seeded_aws.expected().values():
        assert value not in everything
    for record in rie.extension_log():
        json.dumps(record)  # every extension line parsed as one JSON object


def test_without_a_session_token_as_sam_local_gives_long_term_keys_secretcache_token_serves(
    rie_sandbox, seeded_aws
):
    # RIE (and `sam local invoke` with long-term credentials) sets AWS_SESSION_TOKEN to ""
    failing = rie_sandbox("client_handler", env={"AWS_SESSION_TOKEN": ""})
    assert failing.invoke({}).status == 502
    failed = [r for r in failing.extension_log() if r.get("event") == "init.failed"]
    assert failed and "SECRETCACHE_TOKEN" in failed[0]["message"], failing.logs.text()[-2000:]

    token = "local-token-" + uuid.uuid4().hex
    rie = rie_sandbox("client_handler", env={"AWS_SESSION_TOKEN": "", "SECRETCACHE_TOKEN": token})
    result = rie.invoke({})
    assert result.ok, rie.logs.text()[-3000:]
    assert result.payload["invoke"] == seeded_aws.expected()
    assert token not in rie.logs.text()
