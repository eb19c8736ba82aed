"""Build dist/secretcache-layer.zip, the Lambda layer, reproducibly.

Layout of the layer (the launcher and the extension's bootstrap rely on it exactly):

    extensions/secretcache                 launcher (POSIX sh), mode 0755
    secretcache/exec-wrapper               AWS_LAMBDA_EXEC_WRAPPER script (POSIX sh), mode 0755
    secretcache/app/secretcache/           the extension package (+ .pyc for every Python)
    secretcache/lib/common/                pure-Python vendored dependencies (+ .pyc, every Python)
    secretcache/lib/cp3XX-<machine>/       dependencies with compiled wheels, one folder per
                                           Python version and architecture (+ that version's .pyc)
    secretcache/licenses/<dist>/           licence files of the vendored dependencies
    python/secretcache_client/             the stdlib-only client for Python handlers (+ .pyc)

Inputs: extension/requirements.txt (every dependency pinned), extension/secretcache/*.py,
handler_client/secretcache_client/*.py and layer/secretcache (the launcher).

Wheels are fetched once with `pip download --only-binary=:all: --platform ...` into
build/wheels/ and installed by unzipping them (no setup.py ever runs). Installed and compiled
dependency trees are kept under build/deps/, keyed by everything that affects their bytes, so a
rebuild after an extension change only recompiles the extension. When no input changed at all,
the build is a no-op that reprints the sizes.

Reproducible: members in sorted order, timestamps from SOURCE_DATE_EPOCH (else the last commit
touching an input, else 1980-01-01), permissions 0644/0755, no extra fields, pyc files in
unchecked-hash mode compiled with PYTHONHASHSEED=0 and /opt-relative embedded paths.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "extension" / "requirements.txt"
APP_SRC = ROOT / "extension" / "secretcache"
CLIENT_SRC = ROOT / "handler_client" / "secretcache_client"
LAUNCHER_SRC = ROOT / "layer" / "secretcache"
EXEC_WRAPPER_SRC = ROOT / "layer" / "exec-wrapper"
EXECUTABLES = frozenset({"extensions/secretcache", "secretcache/exec-wrapper"})
# Downloads and installed trees are cached here (SECRETCACHE_BUILD_DIR moves it, e.g. for tests).
BUILD = Path(os.environ.get("SECRETCACHE_BUILD_DIR") or ROOT / "build").resolve()
WHEELS = BUILD / "wheels"
DEPS = BUILD / "deps"
DIST = ROOT / "dist"
ZIP_PATH = DIST / "secretcache-layer.zip"
TREE_PATH = DIST / "layer"  # the same content unzipped: template.yaml's ContentUri
STAMP_PATH = DIST / ".secretcache-layer.stamp"

PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
# Lambda's python3.10/3.11 run on Amazon Linux 2 (glibc 2.26): manylinux2014 (glibc 2.17) only.
PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64"),
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64"),
}
# botocore ships models for ~400 services (~20 MB); the extension calls these four.
BOTOCORE_SERVICES = ("kms", "secretsmanager", "ssm", "sts")
# Build-time-only files in wheels: Cython sources, C headers, type stubs; multidict's test module.
DROP_SUFFIXES = (".pyx", ".pxd", ".pxi", ".c", ".h", ".pyi")
DROP_PREFIXES = ("multidict/_testcapi.",)

MAX_ZIPPED = 50 * 1024 * 1024  # Lambda: direct-upload deployment package
MAX_UNZIPPED = 250 * 1024 * 1024  # Lambda: function + all layers, unzipped
DOS_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold

BUILDER_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Target:
    """One Python version on one architecture: a folder under secretcache/lib/."""

    version: str  # "3.12"
    machine: str  # "x86_64" or "aarch64", as os.uname().machine reports it

    @property
    def folder(self) -> str:
        return f"cp{self.version.replace('.', '')}-{self.machine}"


TARGETS = tuple(Target(v, m) for v in PYTHON_VERSIONS for m in PLATFORMS)


@dataclass(frozen=True)
class Requirement:
    name: str  # normalised: lower case, runs of -_. as "_"
    version: str


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def override_path(version: str) -> Path:
    return ROOT / "layer" / f"requirements-py{version.replace('.', '')}.txt"


def requirements_for(version: str) -> list[Requirement]:
    """extension/requirements.txt, with layer/requirements-py3XX.txt pins replacing or adding."""
    reqs = {r.name: r for r in parse_requirements(REQUIREMENTS)}
    override = override_path(version)
    if override.is_file():
        for r in parse_requirements(override):
            reqs[r.name] = r
    return sorted(reqs.values(), key=lambda r: r.name)


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
        "python_full_version": f"{target.version}.0",
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
            + f" (pin them in {REQUIREMENTS.relative_to(ROOT)} or "
            + f"{override_path(target.version).relative_to(ROOT)})"
        )


# --------------------------------------------------------------------------- interpreters


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


def interpreter_identity(python: Path) -> str:
    """Exact version and magic number: anything that changes the bytes of the .pyc."""
    out = subprocess.run(
        [
            str(python),
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


# --------------------------------------------------------------------------- wheels


def wheel_tags(filename: str) -> tuple[str, str, str]:
    """(python tag, abi tag, platform tag) of a wheel file name."""
    parts = filename[: -len(".whl")].split("-")
    return parts[-3], parts[-2], parts[-1]


def wheel_requirement_name(filename: str) -> str:
    return normalise(filename.split("-", 1)[0])


def is_pure(filename: str) -> bool:
    _, abi, plat = wheel_tags(filename)
    return abi == "none" and plat == "any"


def download_wheels(target: Target, reqs: list[Requirement], offline: bool) -> dict[str, Path]:
    """Wheels for one target, from build/wheels/<folder>/ or fetched with pip download."""
    dest = WHEELS / target.folder
    platforms = PLATFORMS[target.machine]
    key = sha256_bytes(json.dumps([requirements_text(reqs), platforms, target.version]).encode())
    stamp = dest / ".complete"
    if not (stamp.is_file() and stamp.read_text() == key):
        if offline:
            raise SystemExit(f"build_layer: --offline but no cached wheels for {target.folder}")
        log(f"== downloading wheels for {target.folder}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.folder}-", dir=WHEELS))
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


# --------------------------------------------------------------------------- install + compile


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


def compile_tree(tree: Path, embedded_prefix: str, pythons: dict[str, Path]) -> None:
    """Write __pycache__/*.cpython-3XX.pyc for every interpreter given.

    unchecked-hash pycs are never revalidated against the source (the layer is read-only and
    immutable), and carry no mtime; PYTHONHASHSEED=0 fixes the order of frozenset constants;
    -s/-p make the embedded file name the /opt path Lambda will show in tracebacks.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONHASHSEED": "0",
        "LC_ALL": "C.UTF-8",
    }
    # One serial compileall per interpreter, the interpreters side by side. Not -j: marshal
    # writes a back-reference only for objects referenced elsewhere in the process, so which
    # files a pool worker compiled before changes the bytes of the next one.
    procs = []
    for version, python in sorted(pythons.items()):
        cmd = [
            str(python),
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


def tree_key(*parts: object) -> str:
    """A cache key: the parts given, and this script's own bytes (any change rebuilds)."""
    return sha256_bytes(json.dumps([BUILDER_DIGEST, *parts], default=str).encode())


def build_cached_tree(name: str, key: str, fill: Callable[[Path], None]) -> Path:
    """build/deps/<name>, rebuilt by fill(path) only when key changed."""
    dest = DEPS / name
    stamp = DEPS / f"{name}.key"
    if dest.is_dir() and stamp.is_file() and stamp.read_text() == key:
        return dest
    log(f"== installing and compiling {name}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=DEPS))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    tmp.rename(dest)
    stamp.write_text(key)
    return dest


# --------------------------------------------------------------------------- sources


def package_sources(src: Path, extra_names: tuple[str, ...] = ()) -> list[Path]:
    """The *.py (and named extra) files of a package, without caches; sorted."""
    if not src.is_dir():
        return []
    files = []
    for path in src.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.suffix == ".py" or path.name in extra_names:
            files.append(path)
    return sorted(files)


def copy_package(src: Path, files: list[Path], dest: Path) -> None:
    for f in files:
        out = dest / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return max(int(env), DOS_EPOCH)
    try:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "log",
                "-1",
                "--format=%ct",
                "--",
                "extension",
                "handler_client",
                "layer",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return max(int(out), DOS_EPOCH) if out else DOS_EPOCH
    except (OSError, subprocess.CalledProcessError, ValueError):
        return DOS_EPOCH


# --------------------------------------------------------------------------- zip


def walk_files(tree: Path, arc_prefix: str) -> Iterator[tuple[str, Path]]:
    for path in tree.rglob("*"):
        if path.is_file():
            yield f"{arc_prefix}/{path.relative_to(tree).as_posix()}", path


def write_zip(members: Iterable[tuple[str, Path]], out: Path, epoch: int) -> None:
    """A zip of (archive name, source file) pairs, byte-for-byte reproducible."""
    members = sorted(members)
    date_time = time.gmtime(epoch)[:6]
    dirs: set[str] = set()
    for arcname, _ in members:
        parts = arcname.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]) + "/")
    entries: list[tuple[str, Path | None]] = [(d, None) for d in dirs]
    entries += members
    entries.sort(key=lambda e: e[0])
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for arcname, src in entries:
            info = zipfile.ZipInfo(arcname, date_time=date_time)
            info.create_system = 3  # Unix, so external_attr carries the mode
            if src is None:
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10  # MS-DOS directory bit
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, b"")
                continue
            mode = 0o755 if arcname in EXECUTABLES else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            # zlib's default level: level 9 takes 5x as long for under 1% smaller.
            zf.writestr(info, src.read_bytes(), compresslevel=6)
    tmp.replace(out)


def unzipped_size(path: Path) -> tuple[int, int]:
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        return sum(i.file_size for i in infos), len(infos)


def extract_tree(zip_path: Path, dest: Path) -> None:
    """dist/layer/: the zip unpacked with its modes, for SAM (ContentUri) and by-hand runs."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            zf.extract(info, tmp)
            mode = (info.external_attr >> 16) & 0o7777
            if mode:
                os.chmod(tmp / info.filename, mode)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def display(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def report(zip_path: Path, seconds: float | None, note: str) -> None:
    zipped = zip_path.stat().st_size
    unzipped, count = unzipped_size(zip_path)
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(
        f"{display(zip_path)}: {zipped} bytes zipped ({mib(zipped)}), "
        f"{unzipped} bytes unzipped ({mib(unzipped)}), {count} files{took}{note}"
    )
    print(f"sha256 {sha256_file(zip_path)}")
    failed = []
    if zipped > MAX_ZIPPED:
        failed.append(f"zipped size {mib(zipped)} is over Lambda's 50 MiB limit")
    if unzipped > MAX_UNZIPPED:
        failed.append(f"unzipped size {mib(unzipped)} is over Lambda's 250 MiB limit")
    if failed:
        raise SystemExit("build_layer: " + "; ".join(failed))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    parser.add_argument("--offline", action="store_true", help="never run pip download")
    parser.add_argument("--output", type=Path, default=ZIP_PATH, help="zip to write")
    parser.add_argument("--no-tree", action="store_true", help="do not unpack into dist/layer/")
    args = parser.parse_args(argv)
    BUILD.mkdir(parents=True, exist_ok=True)
    # Two builds at once (a test session and a shell) must not interleave their renames.
    with open(BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build(args)


def build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out: Path = args.output.resolve()

    reqs = {v: requirements_for(v) for v in PYTHON_VERSIONS}
    pythons: dict[str, Path] = {}
    identities: dict[str, str] = {}
    for version in PYTHON_VERSIONS:
        python = find_interpreter(version)
        if python is None:
            log(
                f"WARNING: python{version} not found: the layer will have no precompiled .pyc for "
                f"Python {version} (cold starts there are slower). Set SECRETCACHE_BUILD_PY"
                f"{version.replace('.', '')} to its path to include them."
            )
            continue
        pythons[version] = python
        identities[version] = interpreter_identity(python)

    app_files = package_sources(APP_SRC)
    client_files = package_sources(CLIENT_SRC, ("py.typed",))
    if not app_files:
        log(f"WARNING: {APP_SRC.relative_to(ROOT)} holds no .py files yet")
    if not client_files:
        log(f"WARNING: {CLIENT_SRC.relative_to(ROOT)} holds no .py files yet")
    if not LAUNCHER_SRC.is_file():
        raise SystemExit(f"build_layer: missing launcher {LAUNCHER_SRC}")
    epoch = source_date_epoch()

    # Everything that decides the bytes of the zip.
    def digest_files(files: list[Path], base: Path) -> list[tuple[str, str]]:
        return [(f.relative_to(base).as_posix(), sha256_file(f)) for f in files]

    fingerprint = tree_key(
        {v: requirements_text(r) for v, r in reqs.items()},
        identities,
        epoch,
        sha256_file(LAUNCHER_SRC),
        sha256_file(EXEC_WRAPPER_SRC),
        digest_files(app_files, APP_SRC),
        digest_files(client_files, CLIENT_SRC),
        str(out),
        args.no_tree,
    )
    default_output = out == ZIP_PATH
    if (
        default_output
        and not args.force
        and out.is_file()
        and STAMP_PATH.is_file()
        and STAMP_PATH.read_text() == f"{fingerprint} {sha256_file(out)}"
        and (args.no_tree or TREE_PATH.is_dir())
    ):
        report(out, None, " (up to date)")
        return 0

    for d in (WHEELS, DEPS, out.parent):
        d.mkdir(parents=True, exist_ok=True)

    # 1. Wheels for every target; a dependency whose wheel is the same py3-none-any file for all
    #    targets goes to common/ once, any other to each target's own folder.
    wheels = {t: download_wheels(t, reqs[t.version], args.offline) for t in TARGETS}
    for t in TARGETS:
        check_dependencies(t, wheels[t])
    common: list[Path] = []
    per_target: dict[Target, list[Path]] = {t: [] for t in TARGETS}
    for name in sorted({n for t in TARGETS for n in wheels[t]}):
        names = {wheels[t][name].name for t in TARGETS if name in wheels[t]}
        everywhere = all(name in wheels[t] for t in TARGETS)
        if everywhere and len(names) == 1 and is_pure(next(iter(names))):
            common.append(wheels[TARGETS[0]][name])
        else:
            for t in TARGETS:
                if name in wheels[t]:
                    per_target[t].append(wheels[t][name])

    # 2. Install (unzip, trim) and compile each tree, cached under build/deps/.
    licenses_key = tree_key(
        "licenses", sorted(w.name for w in common), sorted(w.name for w in per_target[TARGETS[0]])
    )

    def fill_licenses(dest: Path) -> None:
        for whl in [*common, *per_target[TARGETS[0]]]:
            with tempfile.TemporaryDirectory() as scratch:
                install_wheel(whl, Path(scratch), dest)

    licenses_tree = build_cached_tree("licenses", licenses_key, fill_licenses)

    def fill_common(dest: Path) -> None:
        for whl in common:
            install_wheel(whl, dest, None)
        compile_tree(dest, "/opt/secretcache/lib/common", pythons)

    lib_trees = {
        "common": build_cached_tree(
            "common",
            tree_key(
                "common",
                [w.name for w in common],
                identities,
                BOTOCORE_SERVICES,
                DROP_SUFFIXES,
                DROP_PREFIXES,
            ),
            fill_common,
        )
    }
    strips = {m: find_strip(m) for m in PLATFORMS}
    for machine, found in sorted(strips.items()):
        if found is None:
            log(
                f"note: no strip for {machine} ELF files here: its compiled modules keep their "
                f"debug sections (larger layer, same behaviour)"
            )
    for t in TARGETS:
        own = {t.version: pythons[t.version]} if t.version in pythons else {}
        strip = strips[t.machine]

        def fill_target(
            dest: Path,
            t: Target = t,
            own: dict[str, Path] = own,
            strip: tuple[str, str] | None = strip,
        ) -> None:
            for whl in per_target[t]:
                install_wheel(whl, dest, None)
            if strip is not None:
                strip_debug_info(dest, strip[0])
            compile_tree(dest, f"/opt/secretcache/lib/{t.folder}", own)

        lib_trees[t.folder] = build_cached_tree(
            t.folder,
            tree_key(
                t.folder,
                [w.name for w in per_target[t]],
                identities.get(t.version),
                DROP_SUFFIXES,
                DROP_PREFIXES,
                strip and strip[1],
            ),
            fill_target,
        )

    # 3. The extension and the client: small, so copied and compiled on every build.
    with tempfile.TemporaryDirectory(prefix="secretcache-layer-") as scratch_dir:
        scratch = Path(scratch_dir)
        app_tree = scratch / "app" / "secretcache"
        client_tree = scratch / "client" / "secretcache_client"
        copy_package(APP_SRC, app_files, app_tree)
        copy_package(CLIENT_SRC, client_files, client_tree)
        if app_files:
            compile_tree(app_tree, "/opt/secretcache/app/secretcache", pythons)
        if client_files:
            compile_tree(client_tree, "/opt/python/secretcache_client", pythons)

        members: list[tuple[str, Path]] = [
            ("extensions/secretcache", LAUNCHER_SRC),
            ("secretcache/exec-wrapper", EXEC_WRAPPER_SRC),
        ]
        members += walk_files(app_tree, "secretcache/app/secretcache")
        for folder, tree in sorted(lib_trees.items()):
            members += walk_files(tree, f"secretcache/lib/{folder}")
        members += walk_files(licenses_tree, "secretcache/licenses")
        members += walk_files(client_tree, "python/secretcache_client")
        write_zip(members, out, epoch)

    if default_output:
        if not args.no_tree:
            extract_tree(out, TREE_PATH)
        STAMP_PATH.write_text(f"{fingerprint} {sha256_file(out)}")
    report(out, time.monotonic() - started, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
