"""Example function: reads a Secrets Manager secret, an SSM SecureString and a KMS ciphertext
through the secretcache extension, and reports them masked (never the values themselves).

Configuration (set in template.yaml):
    SECRET_ID        the secret's name or ARN
    PARAMETER_NAME   the SecureString parameter's name
    CIPHERTEXT_B64   a KMS ciphertext (base64), decrypted at run time: envelope encryption
    KMS_KEY_ID       optional: the key the ciphertext was made with
"""

from __future__ import annotations

import os
import time
from typing import Any

from secretcache_client import get_parameter, get_secret, kms_decrypt


def mask(value: str | bytes) -> str:
    """Say what was read without showing it: its type and length only."""
    kind = "bytes" if isinstance(value, bytes) else "str"
    return f"******** ({kind}, {len(value)} chars)"


def read_all() -> dict[str, Any]:
    started = time.perf_counter()
    secret = get_secret(os.environ["SECRET_ID"])
    parameter = get_parameter(os.environ["PARAMETER_NAME"], decrypt=True)
    plaintext = kms_decrypt(
        os.environ["CIPHERTEXT_B64"], key_id=os.environ.get("KMS_KEY_ID") or None
    )
    return {
        "secret": mask(secret),
        "secure_string": mask(parameter),
        "kms_plaintext": mask(plaintext),
        "read_ms": round((time.perf_counter() - started) * 1000, 2),
    }


# Read once during INIT too: secretcache serves while the function initialises, so the first
# invocation finds everything cached.
AT_INIT = read_all()
print({"phase": "init", **AT_INIT})


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    result = {"phase": "invoke", **read_all()}
    print(result)
    return result
