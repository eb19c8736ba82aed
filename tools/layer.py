"""Where the built layer is: the one place tools and tests ask (``./build.sh layer`` builds it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layer_dir(arch: str = "x86_64") -> Path:
    """The built layer unpacked, as Lambda unpacks it into /opt (what RIE gets bind-mounted).

    Today one tree serves both architectures (it carries the compiled dependencies of each);
    ``arch`` is here for when the layer becomes one tree per architecture.
    """
    return REPO / "dist" / "layer"
