"""Entry point: python -m secretcache [--name NAME] (the layer's launcher passes its file name)."""

import sys

from secretcache.lifecycle import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
