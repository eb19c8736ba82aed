"""A minimal Python runtime for the emulator: the Runtime API loop that Lambda's bootstrap runs.

Run as a script (``python -S runtime_bootstrap.py``) with ``_HANDLER=module.function`` and
``PYTHONPATH`` = task root + /opt/python. Standard library only: it must not put anything on the
handler's import path that Lambda's runtime would not.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"


class LambdaContext:
    """The attributes of Lambda's Python context object that handlers use."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


class HandlerNotFound(Exception):
    """The module imported but has no such function."""


class RuntimeApi:
    """A keep-alive connection to the Runtime API."""

    def __init__(self) -> None:
        host, port = API.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port))

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        self._conn.request(method, BASE + path, body=body, headers=headers or {})
        resp = self._conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def error_body(exc: BaseException) -> bytes:
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__),
        }
    ).encode()


def load_handler(spec: str) -> Any:
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"bad handler {spec!r}: expected module.function")
    module = importlib.import_module(module_name.replace("/", "."))
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise HandlerNotFound(
            f"Handler {function_name!r} missing on module {module_name!r}"
        ) from None


def main() -> int:
    # this script's own directory must not shadow the handler's modules
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "."))
    api = RuntimeApi()
    try:
        handler = load_handler(os.environ["_HANDLER"])
    except Exception as exc:
        if isinstance(exc, HandlerNotFound):
            kind = "Runtime.HandlerNotFound"
        elif isinstance(exc, ImportError):
            kind = "Runtime.ImportModuleError"
        elif isinstance(exc, SyntaxError):
            kind = "Runtime.UserCodeSyntaxError"
        else:
            kind = "Runtime.Unknown"
        traceback.print_exc()
        api.call(
            "POST", "/init/error", error_body(exc), {"Lambda-Runtime-Function-Error-Type": kind}
        )
        return 1
    while True:
        status, headers, body = api.call("GET", "/invocation/next")
        if status != 200:
            print(f"runtime: invocation/next answered {status}: {body!r}", file=sys.stderr)
            return 1
        request_id = headers["lambda-runtime-aws-request-id"]
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn", ""),
        )
        try:
            result = handler(json.loads(body) if body else None, context)
            payload = json.dumps(result).encode()
        except Exception as exc:
            traceback.print_exc()
            api.call(
                "POST",
                f"/invocation/{request_id}/error",
                error_body(exc),
                {"Lambda-Runtime-Function-Error-Type": "Unhandled"},
            )
            continue
        api.call("POST", f"/invocation/{request_id}/response", payload)


if __name__ == "__main__":
    sys.exit(main())
