"""What running AWS's Runtime Interface Emulator needs from this machine, and why it may not run.

RIE ships inside the aws-sam-cli wheel (``samcli/local/rapid/aws-lambda-rie-<arch>``), which
``./build.sh sam-setup`` installs into ``.venv-sam``. It runs in a private mount namespace
(``unshare -m``, root or CAP_SYS_ADMIN) so the layer can be bind-mounted at ``/opt`` and the
function at ``/var/task`` without touching the host. The Python runtime is AWS's own runtime
interface client, ``awslambdaric`` (pinned in requirements-dev.txt).
"""

from __future__ import annotations

import functools
import importlib.util
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.layer import REPO

SAM_VENV = REPO / ".venv-sam"
#: The modules ``python -m awslambdaric`` imports: the package, its C extension, its dependencies.
RUNTIME_MODULES = ("awslambdaric", "runtime_client", "simplejson", "snapshot_restore_py")
#: The machine name ``uname -m`` gives for each Lambda architecture.
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}


def rie_binary(arch: str = "x86_64") -> Path | None:
    """``aws-lambda-rie-<arch>`` from the aws-sam-cli in ``.venv-sam``, or None if not installed."""
    found = sorted(
        SAM_VENV.glob(f"lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-{arch}")
    )
    return found[-1] if found else None


def runtime_module_paths() -> list[Path]:
    """Where each of :data:`RUNTIME_MODULES` lives in this interpreter (a package dir or a file)."""
    paths = []
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(
                f"{name} is not installed (pip install -r requirements-dev.txt)"
            )
        origin = Path(spec.origin)
        paths.append(origin.parent if spec.submodule_search_locations else origin)
    return paths


def make_runtime_dir(parent: Path) -> Path:
    """A ``/var/runtime`` holding only awslambdaric and what it imports (symlinks).

    The handler then sees its code, the layer's ``/opt/python`` and the runtime client, as on
    Lambda, and not every package of the venv the tests run in.
    """
    runtime = parent / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    for path in runtime_module_paths():
        link = runtime / path.name
        if not link.exists():
            link.symlink_to(path)
    return runtime


def emulator_prefix(arch: str) -> list[str] | None:
    """What runs an ``arch`` binary here: [] natively, [qemu] for arm64 on x86_64, else None."""
    if MACHINES.get(arch) == platform.machine():
        return []
    if arch == "arm64" and platform.machine() == "x86_64":
        from .arm64 import qemu_aarch64

        qemu = qemu_aarch64()
        return [str(qemu)] if qemu is not None else None
    return None


@functools.cache
def unavailable_reason(arch: str = "x86_64") -> str | None:
    """None when RIE for ``arch`` can run here; else one line saying exactly why not."""
    binary = rie_binary(arch)
    if binary is None:
        return f"no aws-lambda-rie-{arch} under {SAM_VENV} (run ./build.sh sam-setup)"
    if emulator_prefix(arch) is None:
        return (
            f"aws-lambda-rie-{arch} needs a {arch} machine or qemu for it; this one is "
            f"{platform.machine()} (python -m tools.rie.arm64 fetches qemu-aarch64-static)"
        )
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare or mount (util-linux) is not installed"
    try:
        runtime_module_paths()
    except ModuleNotFoundError as exc:
        return f"the Python runtime interface client is missing: {exc}"
    with tempfile.TemporaryDirectory(prefix="rie-probe-") as tmp:
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "mount", "--bind", tmp, tmp],
            capture_output=True,
            text=True,
            timeout=30,
        )
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return (
            f"a private mount namespace is not permitted here (unshare -m: {why}); "
            "needs root with CAP_SYS_ADMIN"
        )
    return None
