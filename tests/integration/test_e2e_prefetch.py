"""Prefetch at INIT and EMF metrics, on the emulator with the real layer zip and moto server."""

from __future__ import annotations

import base64
import json


def test_prefetched_items_are_hits_for_the_handlers_first_reads_during_init(
    lambda_sandbox, seeded_aws
):
    emu = lambda_sandbox(
        "prefetch_handler",
        env={
            "SECRETCACHE_PREFETCH": seeded_aws.prefetch_list(),
            "SECRETCACHE_PREFETCH_REQUIRED": "true",
            "SECRETCACHE_METRICS": "emf",
        },
    )
    emu.init()
    result = emu.invoke(
        {"expect_secret": seeded_aws.secret_value, "expect_parameter": seeded_aws.secure_value}
    )
    assert result.ok, result
    payload = result.payload
    assert payload["secret_matches"] and payload["parameter_matches"]
    assert base64.b64decode(payload["plaintext_b64"]).decode() == seeded_aws.kms_plaintext
    after = payload["after"]
    for service in ("secretsmanager", "ssm", "kms"):
        counters = after[service]
        assert counters["upstreamCalls"] == 1, service  # the prefetch's call, and no other
        assert counters["misses"] == 1, service  # the prefetch's own miss
        assert counters["hits"] == 1, service  # the handler's first read during INIT
        assert counters["coalescedWaiters"] == 0, service

    down = emu.shutdown()
    assert not down.killed
    stdout = emu.logs.text("secretcache", "stdout")
    emf = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"FunctionName"')]
    assert len(emf) == 1
    assert emf[0]["SecretsManagerHits"] == 1
    assert seeded_aws.secret_value not in stdout
    assert seeded_aws.kms_plaintext not in stdout


def test_required_prefetch_failure_is_an_init_error_naming_the_item(lambda_sandbox):
    from tools.emulator import InitError

    emu = lambda_sandbox(
        "prefetch_handler",
        env={
            "SECRETCACHE_PREFETCH": "sm:no/such/secret",
            "SECRETCACHE_PREFETCH_REQUIRED": "true",
        },
    )
    try:
        emu.init()
    except InitError as exc:
        assert exc.error_type == "Extension.PrefetchFailed"
        assert "sm:no/such/secret" in str(exc)
    else:
        raise AssertionError("INIT succeeded although a required prefetch item failed")


def test_emf_lines_follow_the_interval_while_invocations_run(lambda_sandbox, seeded_aws):
    import time

    emu = lambda_sandbox(
        "prefetch_handler",
        env={"SECRETCACHE_METRICS": "emf", "SECRETCACHE_METRICS_INTERVAL": "1"},
    )
    emu.init()
    assert emu.invoke({}).ok
    time.sleep(1.2)
    assert emu.invoke({}).ok  # the INVOKE after the interval writes a line

    def emf_lines():
        stdout = emu.logs.text("secretcache", "stdout")
        return [line for line in stdout.splitlines() if line.startswith('{"FunctionName"')]

    deadline = time.monotonic() + 5
    while not emf_lines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emf_lines()) == 1, "no EMF line while invocations ran"
    emu.shutdown()
    deadline = time.monotonic() + 5
    while len(emf_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emf_lines()) == 2  # and one more at SHUTDOWN
    record = json.loads(emf_lines()[-1])
    assert record["SecretsManagerMisses"] == 1  # the INIT read (nothing was prefetched)
    assert record["SecretsManagerUpstreamCalls"] == 1
