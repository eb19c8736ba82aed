"""Import aiohttp without loading the system CA store on the cold-start path.

aiohttp builds two default SSL contexts at import, each reading every CA certificate from disk
(~20-40 ms together on a small Lambda). We never use them (loopback is plain HTTP, and aiobotocore
builds its own context), so their `set_default_verify_paths` calls are recorded during the
import and replayed by `finish_deferred_ssl()` in the background.
"""

from __future__ import annotations

import ssl
from types import ModuleType

_deferred: list[ssl.SSLContext] = []


def import_aiohttp_web() -> ModuleType:
    """`from aiohttp import web`, with CA loading deferred."""
    cls = ssl.SSLContext

    def record(self: ssl.SSLContext) -> None:
        _deferred.append(self)

    cls.set_default_verify_paths = record  # type: ignore[method-assign]
    try:
        from aiohttp import web
    finally:
        del cls.set_default_verify_paths  # the C implementation shows through again
    return web


def finish_deferred_ssl() -> None:
    """Load the CA store into the contexts created during the import (call off the event loop)."""
    while _deferred:
        _deferred.pop().set_default_verify_paths()
