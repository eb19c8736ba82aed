"""Fixtures for the end-to-end tests: the built layer zip, seeded AWS (moto), the emulator."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.emulator import LambdaEmulator
from tools.layer import layer_dir
from tools.moto_server import MotoServer
from tools.net import free_port
from tools.rie import RieSandbox, rie_binary, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
HANDLERS = Path(__file__).with_name("handlers")
LAYER_ZIP = REPO / "dist" / "secretcache-layer.zip"


@pytest.fixture(scope="session")
def layer_zip() -> Path:
    """The real layer, built by ``./build.sh layer`` (a no-op when no input changed)."""
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "build.sh"), "layer"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        pytest.fail(
            f"./build.sh layer failed ({done.returncode}) after {time.monotonic() - started:.0f}s:"
            f"\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    assert LAYER_ZIP.is_file(), "./build.sh layer did not produce dist/secretcache-layer.zip"
    return LAYER_ZIP


@dataclass(frozen=True)
class SeededAws:
    """What was put into moto, and the function environment that names it."""

    secret_id: str
    secret_value: str
    secure_param: str
    secure_value: str
    labeled_param: str
    label: str
    labeled_value: str  # the value of the labelled version (not the latest)
    ciphertext_b64: str
    kms_plaintext: str

    def function_env(self) -> dict[str, str]:
        return {
            "SECRET_ID": self.secret_id,
            "SECURE_PARAM": self.secure_param,
            "LABELED_PARAM": self.labeled_param,
            "PARAM_LABEL": self.label,
            "CIPHERTEXT_B64": self.ciphertext_b64,
        }

    def prefetch_list(self) -> str:
        """SECRETCACHE_PREFETCH naming the secret, the SecureString and the KMS ciphertext."""
        return f"sm:{self.secret_id},ssm:{self.secure_param}?withDecryption=true,kms:CIPHERTEXT_B64"

    def expected(self) -> dict[str, str]:
        return {
            "secret": self.secret_value,
            "secure_string": self.secure_value,
            "labeled": self.labeled_value,
            "kms_plaintext": self.kms_plaintext,
        }


@pytest.fixture(scope="session")
def seeded_aws(moto_server: MotoServer) -> SeededAws:
    prefix = "e2e-" + uuid.uuid4().hex[:8]
    sm, ssm, kms = (moto_server.client(s) for s in ("secretsmanager", "ssm", "kms"))
    secret_id = f"{prefix}/db-password"
    sm.create_secret(Name=secret_id, SecretString="s3cr3t-db-password")
    secure_param = f"/{prefix}/api-key"
    ssm.put_parameter(Name=secure_param, Value="api-key-123", Type="SecureString")
    labeled_param = f"/{prefix}/feature-flag"
    ssm.put_parameter(Name=labeled_param, Value="flag-v1", Type="String")
    ssm.put_parameter(Name=labeled_param, Value="flag-v2", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=labeled_param, ParameterVersion=1, Labels=["stable"])
    key_id = kms.create_key(Description=f"{prefix} envelope key")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"kms-plaintext-42")["CiphertextBlob"]
    return SeededAws(
        secret_id=secret_id,
        secret_value="s3cr3t-db-password",
        secure_param=secure_param,
        secure_value="api-key-123",
        labeled_param=labeled_param,
        label="stable",
        labeled_value="flag-v1",
        ciphertext_b64=base64.b64encode(blob).decode(),
        kms_plaintext="kms-plaintext-42",
    )


def rotate(moto_server: MotoServer, secret_id: str, value: str) -> None:
    moto_server.client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString=value)


@pytest.fixture
def rotating_secret(moto_server: MotoServer) -> str:
    """A secret of this test's own (value "v1"), so rotating it disturbs no other test."""
    secret_id = f"e2e-rotating-{uuid.uuid4().hex[:8]}"
    moto_server.client("secretsmanager").create_secret(Name=secret_id, SecretString="v1")
    return secret_id


@pytest.fixture
def lambda_sandbox(
    layer_zip: Path, moto_server: MotoServer, seeded_aws: SeededAws
) -> Iterator[Callable[..., LambdaEmulator]]:
    """Factory: lambda_sandbox("client_handler", env={...}, **options) -> an unstarted emulator.

    The function reads the seeded resources; the extension listens on a free port (named by
    PARAMETERS_SECRETS_EXTENSION_HTTP_PORT) so parallel sessions on this machine never collide.
    """
    made: list[LambdaEmulator] = []

    def make(
        module: str, env: dict[str, str | None] | None = None, **options: object
    ) -> LambdaEmulator:
        function_env = {
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
            **seeded_aws.function_env(),
            **(env or {}),
        }
        emu = LambdaEmulator(
            layer_zip,
            HANDLERS,
            f"{module}.handler",
            function_env,
            endpoint_url=moto_server.url,
            **options,  # type: ignore[arg-type]
        )
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


@pytest.fixture(scope="session")
def rie_layer(layer_zip: Path) -> Path:
    """The built layer, unpacked (what RIE gets at /opt); skips the RIE tier where RIE cannot run.

    RIE comes with aws-sam-cli (``./build.sh sam-setup``, a no-op once done); it needs a private
    mount namespace (``unshare -m``: root). The skip reason is one line saying which is missing.
    """
    if rie_binary() is None:
        done = subprocess.run(
            [str(REPO / "build.sh"), "sam-setup"], cwd=REPO, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"./build.sh sam-setup failed:\n{done.stderr[-3000:]}")
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"RIE tier skipped: {reason}")
    tree = layer_dir()
    assert (tree / "extensions" / "secretcache").is_file(), f"{tree} is not the unpacked layer"
    return tree


@pytest.fixture
def rie_sandbox(
    rie_layer: Path, moto_server: MotoServer, seeded_aws: SeededAws
) -> Iterator[Callable[..., RieSandbox]]:
    """Factory: rie_sandbox("client_handler", env={...}) -> a started RIE running that handler.

    The same functions and seeded resources as ``lambda_sandbox``, on AWS's emulator.
    ``code_dir=`` runs a function from another directory (default: the handlers).
    """
    made: list[RieSandbox] = []

    def make(module: str, env: dict[str, str] | None = None, **options: object) -> RieSandbox:
        function_env = {
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
            **seeded_aws.function_env(),
            **(env or {}),
        }
        code_dir = Path(str(options.pop("code_dir", HANDLERS)))
        rie = RieSandbox(
            code_dir,
            f"{module}.handler",
            function_env,
            layer=rie_layer,
            endpoint_url=moto_server.url,
            **options,  # type: ignore[arg-type]
        )
        made.append(rie)
        return rie.start()

    yield make
    for rie in made:
        rie.close()
