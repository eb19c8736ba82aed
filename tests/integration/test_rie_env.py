"""Secrets as environment variables under AWS's RIE, with awslambdaric as the runtime.

RIE runs the runtime's command line itself and no exec wrapper (on Lambda, the managed runtime's
bootstrap script does that), so these tests start the runtime the way that bootstrap would:
``/opt/secretcache/exec-wrapper <python> -S -m awslambdaric <handler>``. Skipped, with one line
saying why, where RIE cannot run.
"""

from __future__ import annotations

from collections.abc import Callable

from tools.rie import RieSandbox

from .conftest import SeededAws

WRAPPER = "/opt/secretcache/exec-wrapper"
HANDLER = "env_handler.handler"


def references(seeded: SeededAws) -> dict[str, str]:
    return {
        "AWS_LAMBDA_EXEC_WRAPPER": WRAPPER,
        "DB_PASSWORD": f"{{{{resolve:secretsmanager:{seeded.secret_id}}}}}",
        "API_KEY": f"key={{{{secretcache:ssm-secure:{seeded.secure_param}}}}}",
        "FLAG_V1": f"{{{{resolve:ssm:{seeded.labeled_param}:1}}}}",
        "KMS_PLAIN": "{{resolve:kms:CIPHERTEXT_B64}}",
    }


def wrapped(rie_sandbox: Callable[..., RieSandbox], env: dict[str, str]) -> RieSandbox:
    """A sandbox whose runtime command goes through the wrapper, as a managed bootstrap does."""
    from tools.emulator import default_python

    python = default_python()
    argv = [WRAPPER, python, "-S", "-m", "awslambdaric", HANDLER]
    return rie_sandbox("env_handler", env, runtime_argv=argv, python=python)


def test_the_wrapper_resolves_references_before_awslambdaric_starts(
    rie_sandbox: Callable[..., RieSandbox], seeded_aws: SeededAws
) -> None:
    rie = wrapped(rie_sandbox, references(seeded_aws))
    result = rie.invoke({"names": ["DB_PASSWORD", "API_KEY", "FLAG_V1", "KMS_PLAIN"]})
    assert result.ok, (result.status, result.payload, rie.logs.text()[-3000:])
    assert result.payload["env"] == {
        "DB_PASSWORD": seeded_aws.secret_value,
        "API_KEY": f"key={seeded_aws.secure_value}",
        "FLAG_V1": seeded_aws.labeled_value,
        "KMS_PLAIN": seeded_aws.kms_plaintext,
    }
    logs = rie.logs.text()
    assert '"event":"env.resolved"' in logs
    for value in (seeded_aws.secret_value, seeded_aws.secure_value, seeded_aws.kms_plaintext):
        assert value not in logs


def test_a_missing_secret_fails_init_with_the_wrappers_error(
    rie_sandbox: Callable[..., RieSandbox], seeded_aws: SeededAws
) -> None:
    reference = "{{resolve:secretsmanager:rie-env-no-such-secret}}"
    rie = wrapped(rie_sandbox, {**references(seeded_aws), "MISSING": reference})
    result = rie.invoke({"names": ["MISSING"]})
    # RIE answers a failed INIT with 502; the body is what the wrapper posted to /init/error.
    assert result.status == 502, (result.status, result.payload)
    assert result.payload["errorType"] == "Secretcache.EnvReferenceFailed"
    assert result.payload["errorMessage"] == (
        f"secretcache: cannot resolve MISSING: {reference}: not found (ResourceNotFoundException)"
    )


def test_rie_itself_runs_no_exec_wrapper(
    rie_sandbox: Callable[..., RieSandbox], seeded_aws: SeededAws
) -> None:
    """Why the tests above put the wrapper in the command line: AWS_LAMBDA_EXEC_WRAPPER alone
    does nothing under RIE (README: a container image's entry point must run it)."""
    env = references(seeded_aws)
    rie = rie_sandbox("env_handler", env)
    result = rie.invoke({"names": ["DB_PASSWORD"]})
    assert result.ok, (result.status, result.payload)
    assert result.payload["env"] == {"DB_PASSWORD": env["DB_PASSWORD"]}
