"""Roots with no libc and no Python: only a layer under /opt and a static busybox as /bin/sh.

The busybox (and, for arm64 on an x86_64 host, qemu-aarch64-static) come from the Debian
packages pinned in layer/test-debs.lock, fetched with the layer build's private apt
configuration. No binfmt is needed: qemu is called explicitly. A root is entered with
``chroot`` inside ``unshare`` (a user namespace when not root).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "layer"))
import build_layer  # noqa: E402  (layer/ is not a package)
import debian  # noqa: E402

HOST_MACHINE = platform.machine()
LOADERS = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}
# The code the launcher hands its interpreter with -c (what the launcher tests expect).
BOOT = (
    "import sys; sys.path[:] = [sys.argv.pop(1)] + [p for p in sys.path if p]; "
    'import runpy; runpy.run_module("secretcache", run_name="__main__", alter_sys=True)'
)


def enter_command() -> list[str] | None:
    """argv prefix that chroots, or None when this machine cannot (no root, no user namespaces)."""
    unshare, chroot = shutil.which("unshare"), shutil.which("chroot")
    if unshare is None or chroot is None:
        return None
    prefix = [unshare, "--mount"] if os.geteuid() == 0 else [unshare, "--map-root-user"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return [*prefix, chroot] if probe.returncode == 0 else None


def fetch_test_tools(cache: Path) -> dict[str, Path]:
    """The test tools: {"busybox-amd64": path, "busybox-arm64": path, "qemu": path}."""
    pins = debian.read_lock(build_layer.TEST_LOCK)
    debs = debian.fetch(pins, build_layer.DEBIAN, debian.PrivateApt(build_layer.DEBIAN / "apt"))
    tools = {}
    for pin, deb in debs.items():
        dest = cache / f"{pin.package}-{pin.arch}"
        if pin.package == "busybox-static":
            debian.extract(deb, dest)
            tools[f"busybox-{pin.arch}"] = dest / "usr/bin/busybox"
        elif pin.package == "qemu-user":
            # Only the one emulator out of the 70 MB package (Debian 13's qemu-user is static;
            # qemu-user-static is now a transitional package of links to it).
            dest.mkdir(parents=True)
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            subprocess.run(
                ["tar", "-x", "-C", str(dest), "./usr/bin/qemu-aarch64"],
                stdin=tar.stdout,
                check=True,
            )
            tar.wait()
            tools["qemu"] = dest / "usr/bin/qemu-aarch64"
    return tools


@dataclass
class BareRoot:
    """A root holding /opt (the layer), /bin/busybox (+ sh, env links), maybe /qemu."""

    path: Path
    machine: str  # the layer's: x86_64 or aarch64
    enter: list[str]  # unshare ... chroot

    @property
    def emulated(self) -> bool:
        return self.machine != HOST_MACHINE

    def command(self, *argv: str) -> list[str]:
        """argv run inside the root (through qemu for the other architecture)."""
        qemu = ["/qemu-aarch64-static"] if self.emulated else []
        return [*self.enter, str(self.path), *qemu, *argv]

    def python(self, *args: str) -> list[str]:
        """The bundled interpreter as the launcher starts it, inside the root."""
        bundle = "/opt/secretcache/python"
        return self.command(
            f"{bundle}/lib/{LOADERS[self.machine]}",
            "--inhibit-cache",
            "--library-path",
            f"{bundle}/lib",
            f"{bundle}/bin/python3.13",
            "-E",
            "-S",
            *args,
        )

    def extension(self) -> list[str]:
        """The extension: the real launcher, run by the root's busybox sh.

        For the other architecture the shell runs under qemu and the launcher's final exec gets
        qemu in front (``SECRETCACHE_EXEC_PREFIX``), as a kernel exec of the layer's loader
        would need binfmt_misc; the host's ``env`` sets it before entering the root.
        """
        if not self.emulated:
            return self.command("/bin/sh", "/opt/extensions/secretcache")
        env = shutil.which("env") or "/usr/bin/env"
        *outside, chroot = self.enter
        return [
            *outside, env, "SECRETCACHE_EXEC_PREFIX=/qemu-aarch64-static", chroot, str(self.path),
            "/qemu-aarch64-static", "/bin/sh", "/opt/extensions/secretcache",
        ]  # fmt: skip

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env or {"PATH": "/bin"}
        )

    def files_named(self, *prefixes: str) -> list[str]:
        """Every file in the root whose name starts with one of prefixes (relative paths)."""
        hits = []
        for dirpath, _, filenames in os.walk(self.path):
            for name in filenames:
                if name.startswith(prefixes):
                    hits.append(os.path.relpath(os.path.join(dirpath, name), self.path))
        return sorted(hits)


def make_root(
    dest: Path, layer_zip: Path, machine: str, tools: dict[str, Path], enter: list[str]
) -> BareRoot:
    deb_arch = debian.DEB_ARCH[machine]
    opt = dest / "opt"
    opt.mkdir(parents=True)
    with zipfile.ZipFile(layer_zip) as zf:
        for info in zf.infolist():
            zf.extract(info, opt)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(opt / info.filename, mode)
    (dest / "bin").mkdir()
    shutil.copyfile(tools[f"busybox-{deb_arch}"], dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    for applet in ("sh", "env", "cat", "ls"):
        os.symlink("busybox", dest / "bin" / applet)
    if machine != HOST_MACHINE:
        shutil.copyfile(tools["qemu"], dest / "qemu-aarch64-static")
        os.chmod(dest / "qemu-aarch64-static", 0o755)
    return BareRoot(dest, machine, enter)
