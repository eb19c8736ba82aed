"""Put the layer's vendored dependencies on sys.path, picked for the running Python and CPU.

Layer layout (built by layer/build_layer.py): <root>/app/secretcache (this package),
<root>/lib/common (pure Python) and <root>/lib/cp3XY-<machine> (compiled wheels). Run from a
source checkout there is no lib/ and the active environment's packages are used instead.
"""

from __future__ import annotations

import os
import sys


def platform_tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}-{os.uname().machine}"


def add_vendored_paths() -> str | None:
    """Prepend the vendored folders; returns an error message if this Python is not supported."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lib = os.path.join(root, "lib")
    if not os.path.isdir(lib):
        return None
    tag = platform_tag()
    compiled = os.path.join(lib, tag)
    if not os.path.isdir(compiled):
        shipped = sorted(n for n in os.listdir(lib) if n != "common")
        return (
            f"this layer has no dependencies built for {tag} "
            f"(Python {sys.version.split()[0]}); it ships {', '.join(shipped)}"
        )
    sys.path[0:0] = [compiled, os.path.join(lib, "common")]
    return None
