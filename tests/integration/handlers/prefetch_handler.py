"""A function whose INIT reads prefetched items, then reports what /metrics said right after."""

import json
import os
import urllib.parse
import urllib.request

PORT = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773")
HEADERS = {"X-Aws-Parameters-Secrets-Token": os.environ["AWS_SESSION_TOKEN"]}


def call(path: str, query: dict | None = None, body: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{PORT}{path}?{urllib.parse.urlencode(query or {})}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def services() -> dict:
    return call("/metrics")["services"]


INIT_SECRET = call("/secretsmanager/get", {"secretId": os.environ["SECRET_ID"]})["SecretString"]
INIT_PARAMETER = call(
    "/systemsmanager/parameters/get",
    {"name": os.environ["SECURE_PARAM"], "withDecryption": "true"},
)["Parameter"]["Value"]
INIT_PLAINTEXT = call("/kms/decrypt", body={"CiphertextBlob": os.environ["CIPHERTEXT_B64"]})
AFTER = services()


def handler(event, context):
    return {
        "after": AFTER,
        "secret_matches": event.get("expect_secret") == INIT_SECRET,
        "parameter_matches": event.get("expect_parameter") == INIT_PARAMETER,
        "plaintext_b64": INIT_PLAINTEXT["Plaintext"],
    }
