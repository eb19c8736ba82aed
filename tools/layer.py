"""Where the built layer is: the one place tools and tests ask (``./build.sh layer`` builds it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layer_dir(arch: str = "x86_64") -> Path:
    """The built layer of one architecture (Lambda's name: x86_64 or arm64), unpacked as Lambda
    unpacks it into /opt (what RIE gets bind-mounted): dist/layer-<arch>/."""
    return REPO / "dist" / f"layer-{arch}"
