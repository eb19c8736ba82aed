"""Precompiled bytecode: the layer's .pyc, written once at build time.

Lambda's /opt is read-only, so a missing .pyc would be recompiled on every cold start. The
layer's own code runs on the bundled 3.13; the handler client under python/ is imported by the
function's Python (3.10-3.13), so it gets a .pyc for every such interpreter found here.
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path


def find_interpreter(version: str) -> Path | None:
    """The real python3.X binary: $SECRETCACHE_BUILD_PY3XX, pyenv's install, or PATH."""
    override = os.environ.get(f"SECRETCACHE_BUILD_PY{version.replace('.', '')}")
    candidates = [override] if override else []
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        # pyenv shims are scripts that may resolve to another version: skip them.
        if d and "shims" not in d:
            candidates.append(os.path.join(d, f"python{version}"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    return None


def interpreter_identity(python: list[str]) -> str:
    """Exact version and magic number: anything that changes the bytes of the .pyc."""
    out = subprocess.run(
        [
            *python,
            "-S",
            "-c",
            "import sys, importlib.util; print(sys.version.split()[0], "
            "importlib.util.MAGIC_NUMBER.hex(), sys.implementation.cache_tag)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def compile_tree(tree: Path, embedded_prefix: str, pythons: dict[str, list[str]]) -> None:
    """Write __pycache__/*.cpython-3XX.pyc for every interpreter given (version -> argv prefix).

    unchecked-hash pycs are never revalidated against the source (the layer is read-only and
    immutable), and carry no mtime; PYTHONHASHSEED=0 fixes the order of frozenset constants;
    -s/-p make the embedded file name the /opt path Lambda will show in tracebacks.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONHASHSEED": "0",
        # The compiling interpreter may import the very stdlib it compiles: no timestamp pyc.
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
    }
    # One serial compileall per interpreter, the interpreters side by side. Not -j: marshal
    # writes a back-reference only for objects referenced elsewhere in the process, so which
    # files a pool worker compiled before changes the bytes of the next one.
    procs = []
    for version, python in sorted(pythons.items()):
        cmd = [
            *python,
            "-S",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(tree),
            "-p",
            embedded_prefix,
            str(tree),
        ]
        procs.append(
            (
                version,
                subprocess.Popen(
                    cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                ),
            )
        )
    failed = []
    for version, proc in procs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"python{version} -m compileall failed in {tree}:\n{output}")
    if failed:
        raise SystemExit("build_layer: " + "\n".join(failed))
