"""A function that calls the extension with plain urllib, as any runtime's curl would."""

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

PORT = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773")
HEADERS = {"X-Aws-Parameters-Secrets-Token": os.environ["AWS_SESSION_TOKEN"]}


def call(path: str, query: dict, body: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{PORT}{path}?{urllib.parse.urlencode(query)}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_secret(secret_id: str, refresh: bool = False) -> str:
    query = {"secretId": secret_id}
    if refresh:
        query["refreshNow"] = "true"
    return call("/secretsmanager/get", query)["SecretString"]


def get_parameter(name: str, **selector: str) -> str:
    return call("/systemsmanager/parameters/get", {"name": name, **selector})["Parameter"]["Value"]


def read_all() -> dict:
    decrypted = call("/kms/decrypt", {}, {"CiphertextBlob": os.environ["CIPHERTEXT_B64"]})
    return {
        "secret": get_secret(os.environ["SECRET_ID"]),
        "secure_string": get_parameter(os.environ["SECURE_PARAM"], withDecryption="true"),
        "labeled": get_parameter(os.environ["LABELED_PARAM"], label=os.environ["PARAM_LABEL"]),
        "kms_plaintext": base64.b64decode(decrypted["Plaintext"]).decode(),
    }


INIT_STARTED_AT = time.monotonic()
INIT_READ = read_all()
INIT_READ_AT = time.monotonic()


def handler(event, context):
    if event.get("action") == "get":
        try:
            return {"status": 200, "body": call(event["path"], event["query"])}
        except urllib.error.HTTPError as error:
            return {"status": error.code, "body": json.loads(error.read())}
    if event.get("action") == "secret":
        return {"secret": get_secret(os.environ["SECRET_ID"], refresh=event.get("refresh", False))}
    return {
        "init": INIT_READ,
        "invoke": read_all(),
        "init_started_at": INIT_STARTED_AT,
        "init_read_at": INIT_READ_AT,
    }
