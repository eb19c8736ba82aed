"""One set of environment-variable references and what they resolve to, for the exec-wrapper tests.

Shared by the emulator tests (tests/integration/test_e2e_env.py) and the RIE tests
(tests/integration/test_rie_env.py): secrets, parameters and KMS ciphertexts seeded in moto, the
function environment that references them in every supported form, and the values expected.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import SeededAws
    from tools.moto_server import MotoServer

WRAPPER = "/opt/secretcache/exec-wrapper"
#: The function name both emulators default to, bound into a KMS encryption context below.
FUNCTION_NAME = "secretcache-function"


@dataclass(frozen=True)
class EnvWorld:
    """Resources in moto, the function environment that references them, and what it resolves to."""

    env: dict[str, str]
    expected: dict[str, str]
    plain_secret_id: str

    def values(self) -> list[str]:
        """Every secret value (parts too), none of which may appear outside the runtime."""
        return sorted({v for v in self.expected.values()} | set(SECRET_PARTS))


SECRET_PARTS = ("db-user-7f3a", "db-pass-Q9x!z", "prev-value-81", "cur-value-82", "ctx-plain-55")


def seed_env_world(moto_server: MotoServer, seeded_aws: SeededAws) -> EnvWorld:
    """Seed moto with what the references name; the world both emulators' env tests run on."""
    prefix = "env-" + uuid.uuid4().hex[:8]
    sm, ssm, kms = (moto_server.client(s) for s in ("secretsmanager", "ssm", "kms"))
    db = f"{prefix}/db"
    credentials = {"username": SECRET_PARTS[0], "password": SECRET_PARTS[1], "port": 5432}
    sm.create_secret(Name=db, SecretString=json.dumps(credentials))
    rotated = f"{prefix}/rotated"
    sm.create_secret(Name=rotated, SecretString=SECRET_PARTS[2])
    sm.put_secret_value(SecretId=rotated, SecretString=SECRET_PARTS[3])
    plain_param = f"/{prefix}/region-name"
    ssm.put_parameter(Name=plain_param, Value="eu-west-9-plain", Type="String")
    key_id = kms.create_key(Description=f"{prefix} env key")["KeyMetadata"]["KeyId"]
    ctx_blob = kms.encrypt(
        KeyId=key_id,
        Plaintext=SECRET_PARTS[4].encode(),
        EncryptionContext={"LambdaFunctionName": FUNCTION_NAME},
    )["CiphertextBlob"]
    env = {
        "AWS_LAMBDA_EXEC_WRAPPER": WRAPPER,
        "DB_URL": (
            f"postgres://{{{{resolve:secretsmanager:{db}:SecretString:username}}}}:"
            f"{{{{resolve:secretsmanager:{db}::password}}}}@db.internal:"
            f"{{{{resolve:secretsmanager:{db}:SecretString:port}}}}/app"
        ),
        "PLAIN_SECRET": f"{{{{resolve:secretsmanager:{seeded_aws.secret_id}}}}}",
        "PREVIOUS_SECRET": f"{{{{resolve:secretsmanager:{rotated}:SecretString::AWSPREVIOUS}}}}",
        "CURRENT_SECRET": f"{{{{resolve:secretsmanager:{rotated}}}}}",
        "API_KEY": f"{{{{resolve:ssm-secure:{seeded_aws.secure_param}}}}}",
        "FLAG_V1": f"{{{{resolve:ssm:{seeded_aws.labeled_param}:1}}}}",
        "FLAG_LATEST": f"{{{{resolve:ssm:{seeded_aws.labeled_param}}}}}",
        "PLAIN_PARAM": f"{{{{resolve:ssm:{plain_param}}}}}",
        "KMS_PLAIN": "{{resolve:kms:CIPHERTEXT_B64}}",
        "CTX_CIPHERTEXT": base64.b64encode(ctx_blob).decode(),
        "KMS_WITH_CONTEXT": (
            f"{{{{resolve:kms:CTX_CIPHERTEXT:LambdaFunctionName={FUNCTION_NAME}}}}}"
        ),
        "UNTOUCHED": "plain {{ not a reference }} text",
        # The opener for templates that CloudFormation deploys (it resolves {{resolve:...}}).
        "ALIASED": f"{{{{secretcache:ssm-secure:{seeded_aws.secure_param}}}}}",
    }
    expected = {
        "DB_URL": f"postgres://{SECRET_PARTS[0]}:{SECRET_PARTS[1]}@db.internal:5432/app",
        "PLAIN_SECRET": seeded_aws.secret_value,
        "PREVIOUS_SECRET": SECRET_PARTS[2],
        "CURRENT_SECRET": SECRET_PARTS[3],
        "API_KEY": seeded_aws.secure_value,
        "FLAG_V1": "flag-v1",
        "FLAG_LATEST": "flag-v2",
        "PLAIN_PARAM": "eu-west-9-plain",
        "KMS_PLAIN": seeded_aws.kms_plaintext,
        "KMS_WITH_CONTEXT": SECRET_PARTS[4],
        "UNTOUCHED": "plain {{ not a reference }} text",
        "ALIASED": seeded_aws.secure_value,
    }
    return EnvWorld(env, expected, seeded_aws.secret_id)
