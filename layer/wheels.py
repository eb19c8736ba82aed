"""The vendored dependencies: pinned wheels, fetched once, unzipped (no setup.py ever runs).

``pip download --only-binary=:all: --platform manylinux... --python-version 3.13`` fetches the
wheels of extension/requirements.txt for one architecture into build/wheels/<folder>/;
``install_wheel`` unzips one, dropping build-only files and the botocore models the extension
never calls; ``strip_debug_info`` drops the DWARF sections of the compiled modules.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "extension" / "requirements.txt"
# manylinux2014 (glibc 2.17): the bundled glibc is 2.41, so every manylinux wheel runs.
PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64"),
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64"),
}
# botocore ships models for ~400 services (~20 MB); the extension calls these four.
BOTOCORE_SERVICES = ("kms", "secretsmanager", "ssm", "sts")
# Build-time-only files in wheels: Cython sources, C headers, type stubs; multidict's test module.
DROP_SUFFIXES = (".pyx", ".pxd", ".pxi", ".c", ".h", ".pyi")
DROP_PREFIXES = ("multidict/_testcapi.",)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Target:
    """One Python version on one architecture: a folder under secretcache/lib/."""

    version: str  # "3.13"
    machine: str  # "x86_64" or "aarch64", as os.uname().machine reports it
    full_version: str = ""  # "3.13.5": the bundled interpreter's, for environment markers

    @property
    def folder(self) -> str:
        return f"cp{self.version.replace('.', '')}-{self.machine}"


@dataclass(frozen=True)
class Requirement:
    name: str  # normalised: lower case, runs of -_. as "_"
    version: str


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_requirements(path: Path) -> list[Requirement]:
    reqs = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not m:
            raise SystemExit(f"build_layer: {path.name}: not pinned with ==: {line!r}")
        reqs.append(Requirement(normalise(m.group(1)), m.group(2)))
    return reqs


def requirements_text(reqs: list[Requirement]) -> str:
    return "".join(f"{r.name}=={r.version}\n" for r in reqs)


def check_dependencies(target: Target, wheels: dict[str, Path]) -> None:
    """Fail if a vendored wheel's Requires-Dist (evaluated for target) is not met by the set."""
    try:
        from packaging.markers import Marker
        from packaging.requirements import Requirement as PackagingRequirement
        from packaging.version import Version
    except ImportError:
        log("WARNING: 'packaging' not importable; dependency closure not checked")
        return
    env = {
        "python_version": target.version,
        "python_full_version": target.full_version or f"{target.version}.0",
        "platform_machine": target.machine,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    versions = {name: Version(whl.name.split("-")[1]) for name, whl in wheels.items()}
    problems = []
    for name, whl in sorted(wheels.items()):
        with zipfile.ZipFile(whl) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            text = zf.read(meta).decode("utf-8", "replace")
        for line in text.split("\n\n", 1)[0].splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = PackagingRequirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not Marker(str(req.marker)).evaluate(env):
                continue
            dep = normalise(req.name)
            if dep not in versions:
                problems.append(f"{name} needs {req} (missing)")
            elif not req.specifier.contains(versions[dep], prereleases=True):
                problems.append(f"{name} needs {req}, have {versions[dep]}")
    if problems:
        raise SystemExit(
            f"build_layer: unmet dependencies for {target.folder}: "
            + "; ".join(problems)
            + f" (pin them in {REQUIREMENTS.relative_to(ROOT)})"
        )


def wheel_tags(filename: str) -> tuple[str, str, str]:
    """(python tag, abi tag, platform tag) of a wheel file name."""
    parts = filename[: -len(".whl")].split("-")
    return parts[-3], parts[-2], parts[-1]


def wheel_requirement_name(filename: str) -> str:
    return normalise(filename.split("-", 1)[0])


def is_pure(filename: str) -> bool:
    _, abi, plat = wheel_tags(filename)
    return abi == "none" and plat == "any"


def download_wheels(
    target: Target, reqs: list[Requirement], wheels_dir: Path, offline: bool
) -> dict[str, Path]:
    """Wheels for one target, from build/wheels/<folder>/ or fetched with pip download."""
    dest = wheels_dir / target.folder
    platforms = PLATFORMS[target.machine]
    key = sha256_bytes(json.dumps([requirements_text(reqs), platforms, target.version]).encode())
    stamp = dest / ".complete"
    if not (stamp.is_file() and stamp.read_text() == key):
        if offline:
            raise SystemExit(f"build_layer: --offline but no cached wheels for {target.folder}")
        log(f"== downloading wheels for {target.folder}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.folder}-", dir=wheels_dir))
        req_file = tmp / "requirements.txt"
        req_file.write_text(requirements_text(reqs))
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            target.version,
            "--dest",
            str(tmp),
            "--requirement",
            str(req_file),
        ]
        for p in platforms:
            cmd += ["--platform", p]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            noise = "is ignored: it is neither a file nor a directory"
            errors = "\n".join(
                line for line in (proc.stdout + proc.stderr).splitlines() if noise not in line
            )
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemExit(f"build_layer: pip download failed for {target.folder}:\n{errors}")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        stamp.write_text(key)
    found: dict[str, Path] = {}
    for whl in sorted(dest.glob("*.whl")):
        found[wheel_requirement_name(whl.name)] = whl
    missing = [
        f"{r.name}=={r.version}"
        for r in reqs
        if r.name not in found or found[r.name].name.split("-")[1] != r.version
    ]
    if missing:
        raise SystemExit(f"build_layer: no wheel for {missing} in {dest}")
    return {r.name: found[r.name] for r in reqs}


def keep_member(name: str) -> bool:
    """Whether a wheel member belongs in the layer (after the .dist-info filter)."""
    if name.endswith(DROP_SUFFIXES) or name.startswith(DROP_PREFIXES):
        return False
    if name.startswith("botocore/data/"):
        rest = name[len("botocore/data/") :]
        # Top-level files (endpoints.json, partitions.json, _retry.json, ...) stay.
        return "/" not in rest or rest.split("/", 1)[0] in BOTOCORE_SERVICES
    return True


def install_wheel(whl: Path, dest: Path, licenses: Path | None) -> None:
    """Unzip a wheel into dest; its licence files (if asked) into licenses/<dist>/."""
    with zipfile.ZipFile(whl) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            top = name.split("/", 1)[0]
            if top.endswith(".dist-info"):
                base = name.rsplit("/", 1)[-1]
                if licenses is not None and re.match(
                    r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", base, re.I
                ):
                    rel = name.split("/", 1)[1]
                    rel = rel[len("licenses/") :] if rel.startswith("licenses/") else rel
                    out = licenses / top[: -len(".dist-info")] / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(zf.read(info))
                continue
            if top.endswith(".data"):
                # purelib/platlib belong in the import root; scripts, headers, data do not.
                parts = name.split("/", 2)
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = parts[2]
            if not keep_member(name):
                continue
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(info))


STRIP_BFD_TARGETS = {"x86_64": "elf64-x86-64", "aarch64": "elf64-littleaarch64"}


def find_strip(machine: str) -> tuple[str, str] | None:
    """A strip that understands machine's ELF files: (path, version line), or None."""
    for name in (f"{machine}-linux-gnu-strip", "strip"):
        path = shutil.which(name)
        if not path:
            continue
        proc = subprocess.run([path, "--info"], capture_output=True, text=True)
        if STRIP_BFD_TARGETS[machine] in proc.stdout.split():
            version = subprocess.run([path, "--version"], capture_output=True, text=True)
            return path, version.stdout.splitlines()[0] if version.stdout else path
    return None


def strip_debug_info(tree: Path, strip: str) -> None:
    """Drop DWARF debug sections from the wheels' extension modules (~5x smaller, same code)."""
    for so in sorted(tree.rglob("*.so")):
        subprocess.run(
            [strip, "--strip-debug", "--enable-deterministic-archives", str(so)], check=True
        )
