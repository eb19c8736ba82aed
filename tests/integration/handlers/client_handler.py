"""A function that reads through the layer's stdlib client (``/opt/python/secretcache_client``)."""

import os
import time

import secretcache_client
from secretcache_client import get_parameter, get_secret, kms_decrypt


def read_all() -> dict:
    return {
        "secret": get_secret(os.environ["SECRET_ID"]),
        "secure_string": get_parameter(os.environ["SECURE_PARAM"], decrypt=True),
        "labeled": get_parameter(os.environ["LABELED_PARAM"], label=os.environ["PARAM_LABEL"]),
        "kms_plaintext": kms_decrypt(os.environ["CIPHERTEXT_B64"]).decode(),
    }


# Module import is Lambda's INIT phase: the extension must already answer here.
INIT_STARTED_AT = time.monotonic()
INIT_READ = read_all()
INIT_READ_AT = time.monotonic()


def handler(event, context):
    if event.get("action") == "secret":
        return {"secret": get_secret(os.environ["SECRET_ID"], refresh=event.get("refresh", False))}
    return {
        "init": INIT_READ,
        "invoke": read_all(),
        "client_file": secretcache_client.__file__,
        "init_started_at": INIT_STARTED_AT,
        "init_read_at": INIT_READ_AT,
    }
