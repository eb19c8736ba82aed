"""Debian packages for the layer, fetched with a private APT configuration.

The bundled interpreter (Debian 13 CPython 3.13 with Debian's glibc) and the test tools
(busybox-static, qemu-user-static) come from Debian's archive through ``apt-get download``, run
with an APT configuration of our own under the build cache: its own sources list, package lists,
cache and an empty dpkg status. Nothing on the host changes (no ``dpkg --add-architecture``, no
edit to /etc/apt). The mirror is the one this machine's apt already uses, read at run time from
/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list: no registry host is written down here.

Every package is pinned by exact version and sha256 in a lock file (``package version arch
sha256`` per line). ``refresh_lock`` resolves the suite's current versions and rewrites it: the
one command for a newer Debian security update (``./build.sh update-debian``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Debian's architecture names for the machines the layer is built for.
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    arch: str  # Debian's name: amd64, arm64
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.package}:{self.arch}={self.version}"

    @property
    def filename(self) -> str:
        """The name apt-get download gives the .deb (an epoch's colon is written %3a)."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def read_lock(path: Path) -> list[Pin]:
    pins = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 4 or not re.fullmatch(r"[0-9a-f]{64}", fields[3]):
            raise SystemExit(f"build_layer: {path.name}: bad line {raw!r}")
        pins.append(Pin(*fields))
    return pins


def write_lock(path: Path, pins: list[Pin], header: str) -> None:
    lines = [header.rstrip("\n")]
    lines += [
        f"{p.package} {p.version} {p.arch} {p.sha256}"
        for p in sorted(pins, key=lambda p: (p.arch, p.package))
    ]
    path.write_text("\n".join(lines) + "\n")


def lock_header(path: Path) -> str:
    """The comment lines at the top of a lock file (kept when it is rewritten)."""
    head = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    return "\n".join(head)


# --------------------------------------------------------------------------- the host's mirror


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
            continue
        if line.startswith("#") or line[0].isspace() or ":" not in line:
            continue
        key, value = line.split(":", 1)
        current[key.strip().lower()] = value.strip()
    return stanzas


# Debian's release codenames (and aliases): a host source for one of them is Debian's archive.
# An Ubuntu host's sources (noble, jammy, ...) are not, and need SECRETCACHE_DEBIAN_MIRROR.
DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}  # fmt: skip


def _is_debian_suite(suite: str) -> bool:
    return suite.split("-", 1)[0] in DEBIAN_SUITES


def host_mirrors(etc: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(archive URI, security URI) of Debian in this machine's own apt configuration.

    SECRETCACHE_DEBIAN_MIRROR (and SECRETCACHE_DEBIAN_SECURITY_MIRROR) override it, for a
    build host whose apt does not use Debian (an Ubuntu CI runner).
    """
    override = os.environ.get("SECRETCACHE_DEBIAN_MIRROR")
    archive = override or None
    security = os.environ.get("SECRETCACHE_DEBIAN_SECURITY_MIRROR") or None
    entries: list[tuple[str, str]] = []  # (uri, suite) of every enabled "deb ... main" source
    for source in sorted((etc / "sources.list.d").glob("*.sources")):
        for st in _deb822_stanzas(source.read_text()):
            if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
                continue
            suites, uris = st.get("suites", "").split(), st.get("uris", "").split()
            if uris and suites and "main" in st.get("components", "").split():
                entries += [(uris[0], suite) for suite in suites]
    if (etc / "sources.list").is_file():
        for line in (etc / "sources.list").read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+.*\bmain\b", line.strip())
            if m:
                entries.append((m.group(1), m.group(2)))
    for uri, suite in entries:
        if not _is_debian_suite(suite):
            continue
        if suite.endswith("-security"):
            security = security or uri
        elif not override:
            archive = archive or uri
    if archive is None:
        raise SystemExit(
            f"build_layer: no Debian mirror in {etc}/sources.list.d/*.sources or "
            f"{etc}/sources.list (the bundled interpreter comes from Debian's archive); on a "
            "host whose apt is not Debian's, name one in SECRETCACHE_DEBIAN_MIRROR"
        )
    if security is None:
        # The usual layout: the security archive is a sibling of the main one.
        security = re.sub(r"/debian/?$", "/debian-security", archive)
    return archive.rstrip("/"), security.rstrip("/")


# --------------------------------------------------------------------------- the private root


class PrivateApt:
    """An APT configuration of our own under ``root``, serving amd64 and arm64 together."""

    def __init__(self, root: Path, *, sources: bool = False) -> None:
        """``sources``: also list deb-src (for ``apt-get source``); a root of its own, so the
        layer build never downloads the source indexes."""
        self.root = root
        self.conf = root / "apt.conf"
        self.types = ("deb", "deb-src") if sources else ("deb",)
        self._updated = False

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APT_")}
        env["APT_CONFIG"] = str(self.conf)
        env["LC_ALL"] = "C"
        return env

    def setup(self) -> None:
        if not KEYRING.is_file():
            raise SystemExit(
                f"build_layer: {KEYRING} is missing (apt-get install debian-archive-keyring)"
            )
        if shutil.which("apt-get") is None:
            raise SystemExit("build_layer: apt-get not found (a Debian/Ubuntu host is needed)")
        archive, security = host_mirrors()
        r = self.root
        for d in (
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
        ):
            (r / d).mkdir(parents=True, exist_ok=True)
        status = r / "var/lib/dpkg/status"
        if not status.exists():
            status.write_text("")
        opts = f"[arch=amd64,arm64 signed-by={KEYRING}]"
        (r / "etc/apt/sources.list").write_text(
            "".join(
                f"{kind} {opts} {uri} {suite} main\n"
                for kind in self.types
                for uri, suite in (
                    (archive, SUITE),
                    (archive, f"{SUITE}-updates"),
                    (security, f"{SUITE}-security"),
                )
            )
        )
        self.conf.write_text(
            f'Dir::Etc "{r}/etc/apt";\n'
            f'Dir::Etc::sourcelist "{r}/etc/apt/sources.list";\n'
            f'Dir::Etc::sourceparts "{r}/etc/apt/sources.list.d";\n'
            f'Dir::Etc::parts "{r}/etc/apt/apt.conf.d";\n'
            f'Dir::Etc::preferencesparts "{r}/etc/apt/preferences.d";\n'
            f'Dir::State "{r}/var/lib/apt";\n'
            f'Dir::State::status "{status}";\n'
            f'Dir::Cache "{r}/var/cache/apt";\n'
            'APT::Architecture "amd64";\n'
            'APT::Architectures { "amd64"; "arm64"; };\n'
            'APT::Sandbox::User "root";\n'
            'Acquire::Languages "none";\n'
        )

    def run(self, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run(
            ["apt-get", "-q", *args], env=self._env(), cwd=cwd, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(
                f"build_layer: apt-get {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def update(self) -> None:
        if self._updated:
            return
        self.setup()
        log(f"== apt-get update (private configuration for Debian {SUITE}, amd64 + arm64)")
        self.run("update")
        self._updated = True

    def candidate(self, package: str, arch: str) -> str:
        """The version apt would install now (the suite's newest, security updates included)."""
        proc = subprocess.run(
            ["apt-cache", "policy", f"{package}:{arch}"],
            env=self._env(),
            capture_output=True,
            text=True,
            check=True,
        )
        m = re.search(r"Candidate:\s*(\S+)", proc.stdout)
        if not m or m.group(1) == "(none)":
            raise SystemExit(f"build_layer: {package}:{arch} is not in Debian {SUITE}")
        return m.group(1)

    def download(self, specs: list[str], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.run("download", *specs, cwd=dest)


def fetch(pins: list[Pin], cache: Path, apt: PrivateApt) -> dict[Pin, Path]:
    """Each pinned .deb, from cache/debs/ or apt-get download; sha256 checked every time."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in pins if not (debs / p.filename).is_file()]
    if missing:
        apt.update()
        log(f"== apt-get download: {len(missing)} Debian package(s)")
        try:
            apt.download([p.spec for p in missing], debs)
        except SystemExit as e:
            raise SystemExit(
                f"{e}\nbuild_layer: a pinned Debian version is gone from the mirror (Debian keeps "
                "only a suite's current versions): run ./build.sh update-debian to refresh the lock"
            ) from None
    out = {}
    for p in pins:
        path = debs / p.filename
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != p.sha256:
            path.unlink()
            raise SystemExit(
                f"build_layer: {p.filename}: sha256 {digest} does not match the lock's {p.sha256}"
            )
        out[p] = path
    return out


def refresh_lock(lock: Path, cache: Path, apt: PrivateApt) -> list[tuple[Pin, Pin]]:
    """Re-pin every package of ``lock`` to the suite's current version; returns what changed."""
    old = read_lock(lock)
    apt.update()
    new = []
    for p in old:
        version = apt.candidate(p.package, p.arch)
        if version == p.version:
            new.append(p)
            continue
        probe = Pin(p.package, version, p.arch, "0" * 64)
        apt.download([probe.spec], cache / "debs")
        digest = hashlib.sha256((cache / "debs" / probe.filename).read_bytes()).hexdigest()
        new.append(Pin(p.package, version, p.arch, digest))
    write_lock(lock, new, lock_header(lock))
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def extract(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files (never its maintainer scripts) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)


def source_package(deb: Path) -> tuple[str, str]:
    """(source package, source version) of a binary .deb, for the source offer."""
    out = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package", "Version", "Source"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    source = fields.get("Source", fields["Package"])
    m = re.fullmatch(r"(\S+)\s+\((\S+)\)", source)
    if m:
        return m.group(1), m.group(2)
    return source, fields["Version"]


def download_sources(sources: dict[str, str], dest: Path, apt: PrivateApt) -> list[Path]:
    """The Debian source packages (name -> version) into dest: .dsc, .orig and .debian tarballs.

    What a release attaches to meet the source offer of the LGPL and GPL parts (glibc, gcc-14).
    """
    apt.update()
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}={version}" for name, version in sorted(sources.items())]
    log(f"== apt-get source --download-only {' '.join(specs)}")
    apt.run("source", "--download-only", *specs, cwd=dest)
    return sorted(p for p in dest.iterdir() if p.is_file())
