"""AWS's Lambda Runtime Interface Emulator (RIE, the code ``sam local`` runs), without Docker.

    from tools.rie import RieSandbox, unavailable_reason

    if unavailable_reason() is None:
        with RieSandbox("examples", "app.handler", {"SECRET_ID": "demo/db"},
                        endpoint_url=moto.url) as rie:
            result = rie.invoke({})          # the first invoke runs INIT
            result.ok, result.payload
            rie.inits()[0].exec_to_ready_ms("secretcache")
            rie.stop()                       # SIGTERM: SHUTDOWN to the extensions

See ``tools/rie/README.md`` for how it runs and how RIE differs from Lambda and from our own
emulator (``tools.emulator``).
"""

from .host import rie_binary, unavailable_reason
from .rie_log import InitTimeline
from .sandbox import RieError, RieInvoke, RieSandbox, RieStop

__all__ = [
    "InitTimeline",
    "RieError",
    "RieInvoke",
    "RieSandbox",
    "RieStop",
    "rie_binary",
    "unavailable_reason",
]
