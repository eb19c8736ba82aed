"""arm64 on an x86_64 machine: Debian's qemu-user-static and busybox-static, called explicitly.

No binfmt_misc registration and nothing installed on the host: the two packages are fetched with
``apt-get download`` under a private apt configuration (its own state and cache directories,
the mirror read from the machine's own Debian sources at run time) and unpacked with
``dpkg-deb -x`` into ``.cache/arm64/root``. ``qemu-aarch64-static`` then runs an arm64 program
when named as its first argument. It does not follow ``execve``: an arm64 program it runs can
start x86_64 programs (the kernel runs those), but not arm64 ones.

    python -m tools.rie.arm64        # fetch (once) and print the paths
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tools.layer import REPO

CACHE = REPO / ".cache" / "arm64"
ROOT = CACHE / "root"
QEMU = ROOT / "usr" / "bin" / "qemu-aarch64-static"
BUSYBOX = ROOT / "bin" / "busybox"
PACKAGES = ("qemu-user-static", "busybox-static:arm64")
HOST_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def qemu_aarch64() -> Path | None:
    """The unpacked ``qemu-aarch64-static``, or None if not fetched yet."""
    return QEMU if QEMU.is_file() else None


def _private_sources() -> str:
    """The host's Debian sources (deb822 or one-line), with arm64 added to their architectures."""
    for path in HOST_SOURCES:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            stanzas = [s for s in re.split(r"\n\s*\n", text) if "URIs:" in s]
            fixed = []
            for stanza in stanzas:
                lines = [
                    ln for ln in stanza.splitlines() if not ln.startswith(("#", "Architectures:"))
                ]
                fixed.append("\n".join([*lines, "Architectures: amd64 arm64"]))
            if fixed:
                return "\n\n".join(fixed) + "\n"
        else:
            deb = [ln for ln in text.splitlines() if ln.startswith("deb ")]
            if deb:
                return "".join(
                    ln.replace("deb ", "deb [arch=amd64,arm64] ", 1) + "\n" for ln in deb
                )
    raise RuntimeError("no Debian apt sources on this machine to take the mirror from")


def fetch() -> tuple[Path, Path]:
    """Fetch and unpack qemu-aarch64-static and an arm64 static busybox (a no-op once done)."""
    if QEMU.is_file() and BUSYBOX.is_file():
        return QEMU, BUSYBOX
    apt = CACHE / "apt"
    for sub in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial",
                "cache/archives/partial"):  # fmt: skip
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "etc" / "sources.list.d" / "host.sources").write_text(_private_sources())
    (apt / "state" / "status").touch()
    options = [
        f"-oDir::Etc={apt / 'etc'}",
        "-oDir::Etc::sourcelist=/dev/null",
        f"-oDir::Etc::sourceparts={apt / 'etc' / 'sources.list.d'}",
        f"-oDir::State={apt / 'state'}",
        f"-oDir::State::status={apt / 'state' / 'status'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oAPT::Architectures::=arm64",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
    ]
    subprocess.run(["apt-get", *options, "-qq", "update"], check=True, timeout=600)
    debs = CACHE / "debs"
    debs.mkdir(exist_ok=True)
    subprocess.run(["apt-get", *options, "-qq", "download", *PACKAGES], cwd=debs, check=True,
                   timeout=600)  # fmt: skip
    ROOT.mkdir(exist_ok=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(ROOT)], check=True, timeout=300)
    if not (QEMU.is_file() and BUSYBOX.is_file()):
        raise RuntimeError(f"unpacked the packages but {QEMU} or {BUSYBOX} is missing")
    return QEMU, BUSYBOX


if __name__ == "__main__":
    qemu, busybox = fetch()
    print(f"qemu-aarch64-static: {qemu}\nbusybox (arm64, static): {busybox}")
    sys.exit(0)
