"""A function that reports the environment variables it was started with (resolved by the wrapper).

Event: ``{"names": [...], "read_secret": "<secret id>"}``; returns those variables' values and,
if asked, the secret read through the extension over HTTP (a later read of a resolved secret).
"""

from __future__ import annotations

import os
from typing import Any

from secretcache_client import get_secret


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    out: dict[str, Any] = {"env": {n: os.environ.get(n) for n in event.get("names", [])}}
    if event.get("read_secret"):
        out["read"] = get_secret(event["read_secret"])
    return out
