"""Entry point: python -m secretcache [--name NAME] (the layer's launcher passes its file name).

``python -m secretcache --exec-wrapper RUNTIME ARG...`` is the exec wrapper (exec_wrapper.py).
"""

import sys

if sys.version_info < (3, 10):  # noqa: UP036
    # Kept free of newer syntax so an older runtime gets this line instead of a SyntaxError.
    major, minor = sys.version_info[:2]
    sys.stderr.write(
        f"secretcache: this layer needs a Lambda Python runtime 3.10-3.13; found {major}.{minor}\n"
    )
    sys.exit(1)

if __name__ == "__main__" and sys.argv[1:2] == ["--exec-wrapper"]:
    from secretcache.exec_wrapper import main as exec_wrapper_main

    sys.exit(exec_wrapper_main(sys.argv[2:]))

from secretcache.lifecycle import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
