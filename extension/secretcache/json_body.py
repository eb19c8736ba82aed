"""The one JSON serialiser for everything the extension sends: AWS-shaped bodies, errors, health.

Compact separators and raw UTF-8 (as Go's encoding/json writes them), so the same value is the
same bytes whichever path produced it.
"""

from __future__ import annotations

import json


def json_body(value: object) -> bytes:
    """`value` as response-body bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
