"""Entry point: python -m secretcache [--name NAME] (the layer's launcher passes its file name)."""

import sys

if sys.version_info < (3, 10):  # noqa: UP036
    # Kept free of newer syntax so an older runtime gets this line instead of a SyntaxError.
    major, minor = sys.version_info[:2]
    sys.stderr.write(
        f"secretcache: this layer needs a Lambda Python runtime 3.10-3.13; found {major}.{minor}\n"
    )
    sys.exit(1)

from secretcache.lifecycle import exit_now, main

if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
