"""A SnapStart function: reads a secret through the layer's client at INIT and when invoked.

Under SnapStart, Lambda sets no AWS_SESSION_TOKEN: the client sends
AWS_CONTAINER_AUTHORIZATION_TOKEN, as the extension expects.
"""

import json
import os
import urllib.request

from secretcache_client import Client

SECRET_ID = os.environ["SNAP_SECRET_ID"]
# A wide timeout: the tests run under load on shared CPUs, and with SECRETCACHE_UPSTREAM=sdk the
# first read waits for aiobotocore to load. What they check is values, not speed.
CLIENT = Client(timeout=20.0)
# Module import is INIT, which ends in the snapshot.
INIT_VALUE = CLIENT.get_secret(SECRET_ID)


def health() -> dict:
    port = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return json.loads(response.read())


def handler(event, context):
    return {
        "init": INIT_VALUE,
        "value": CLIENT.get_secret(SECRET_ID),
        "session_token_set": bool(os.environ.get("AWS_SESSION_TOKEN")),
        "health": health(),
    }
