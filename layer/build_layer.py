"""Build the Lambda layers, one per architecture, reproducibly.

    dist/secretcache-layer-x86_64.zip   dist/layer-x86_64/   (the same, unpacked)
    dist/secretcache-layer-arm64.zip    dist/layer-arm64/
    dist/secretcache-layer.zip, dist/layer/: this machine's architecture (hard links), which
    template.yaml, the emulator and the tests use.

Layout of each layer (the launcher and the extension's bootstrap rely on it exactly):

    extensions/secretcache                 launcher (POSIX sh), mode 0755
    secretcache/app/secretcache/           the extension package (+ .pyc)
    secretcache/lib/common/                pure-Python vendored dependencies (+ .pyc)
    secretcache/lib/cp313-<machine>/       dependencies with compiled wheels (stripped, + .pyc)
    secretcache/python/                    the bundled interpreter (see interpreter.py)
    secretcache/licenses/<dist>/           licences of the vendored dependencies
    secretcache/licenses/python-runtime/   the Debian packages' copyright files, SOURCES.txt
    python/secretcache_client/             the stdlib-only client for Python handlers (+ .pyc
                                           for every Python 3.10-3.13 found here)

The steps, each cached under build/ (SECRETCACHE_BUILD_DIR moves it) and keyed by everything
that changes its bytes, so a warm rebuild only redoes what changed, and a build with no changed
input is a no-op that reprints the sizes:

    1. fetch_debian_packages   the pins of layer/python-debs.lock (private apt, debian.py)
    2. fetch_wheels            extension/requirements.txt for cp313 on each architecture
    3. install_dependencies    wheels unzipped, trimmed and stripped (wheels.py)
    4. assemble_interpreters   Debian's python3.13 + its library closure + licences
    5. compile_code            .pyc for the stdlib, the dependencies, the extension, the client
    6. write_layers            one reproducible zip per architecture, unpacked next to it

Reproducible: timestamps from SOURCE_DATE_EPOCH (else the last commit touching an input, else
1980-01-01), pyc in unchecked-hash mode compiled with PYTHONHASHSEED=0 and /opt paths.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import debian
import interpreter
import layer_zip
import pycompile
import wheels
from wheels import Target

ROOT = Path(__file__).resolve().parent.parent
APP_SRC = ROOT / "extension" / "secretcache"
CLIENT_SRC = ROOT / "handler_client" / "secretcache_client"
LAUNCHER_SRC = ROOT / "layer" / "secretcache"
PYTHON_LOCK = ROOT / "layer" / "python-debs.lock"
TEST_LOCK = ROOT / "layer" / "test-debs.lock"
BUILD = Path(os.environ.get("SECRETCACHE_BUILD_DIR") or ROOT / "build").resolve()
WHEELS = BUILD / "wheels"
DEPS = BUILD / "deps"
DEBIAN = BUILD / "debian"
DIST = ROOT / "dist"

# Lambda's architecture names, and the machine (os.uname) each one is.
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
BUNDLED_VERSION = interpreter.VERSION
BUNDLED_FULL_VERSION = "3.13.5"  # Debian 13's python3.13 (security fixes are backported)
TARGETS = {
    arch: Target(BUNDLED_VERSION, m, BUNDLED_FULL_VERSION) for arch, m in ARCHITECTURES.items()
}
# The handler client is imported by the function's own Python: .pyc for each of these found here.
CLIENT_VERSIONS = ("3.10", "3.11", "3.12")
DOS_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold

BUILDER_DIGEST = wheels.sha256_bytes(
    b"".join(
        Path(__file__).with_name(name).read_bytes()
        for name in (
            "build_layer.py",
            "debian.py",
            "interpreter.py",
            "layer_zip.py",
            "pycompile.py",
            "wheels.py",
        )
    )
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def host_architecture() -> str:
    machine = platform.machine()
    for arch, m in ARCHITECTURES.items():
        if m == machine:
            return arch
    raise SystemExit(f"build_layer: cannot build on {machine} (x86_64 or aarch64 hosts only)")


def zip_path(dist: Path, arch: str) -> Path:
    return dist / f"secretcache-layer-{arch}.zip"


def tree_path(dist: Path, arch: str) -> Path:
    return dist / f"layer-{arch}"


def tree_key(*parts: object) -> str:
    """A cache key: the parts given, and the build scripts' own bytes (any change rebuilds)."""
    return wheels.sha256_bytes(json.dumps([BUILDER_DIGEST, *parts], default=str).encode())


def build_cached_tree(name: str, key: str, fill: Callable[[Path], None]) -> Path:
    """build/deps/<name>, rebuilt by fill(path) only when key changed."""
    dest = DEPS / name
    stamp = DEPS / f"{name}.key"
    if dest.is_dir() and stamp.is_file() and stamp.read_text() == key:
        return dest
    log(f"== building {name}")
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


# --------------------------------------------------------------------------- steps


def fetch_debian_packages(lock: Path, offline: bool) -> dict[str, dict[debian.Pin, Path]]:
    """Step 1: the pinned .debs of ``lock`` by Debian architecture (cached in build/debian/)."""
    pins = debian.read_lock(lock)
    if offline:
        missing = [p.filename for p in pins if not (DEBIAN / "debs" / p.filename).is_file()]
        if missing:
            raise SystemExit(f"build_layer: --offline but not cached: {', '.join(missing)}")
    debs = debian.fetch(pins, DEBIAN, debian.PrivateApt(DEBIAN / "apt"))
    by_arch: dict[str, dict[debian.Pin, Path]] = {}
    for pin, path in debs.items():
        by_arch.setdefault(pin.arch, {})[pin] = path
    return by_arch


def fetch_wheels(offline: bool) -> dict[str, dict[str, Path]]:
    """Step 2: the cp313 wheels of every requirement, per architecture, checked for closure."""
    reqs = wheels.parse_requirements(wheels.REQUIREMENTS)
    found = {}
    for arch, target in TARGETS.items():
        found[arch] = wheels.download_wheels(target, reqs, WHEELS, offline)
        wheels.check_dependencies(target, found[arch])
    return found


def split_common(per_arch: dict[str, dict[str, Path]]) -> tuple[list[Path], dict[str, list[Path]]]:
    """A py3-none-any wheel that is the same file on every architecture goes to common/ once."""
    common: list[Path] = []
    own: dict[str, list[Path]] = {arch: [] for arch in per_arch}
    for name in sorted({n for w in per_arch.values() for n in w}):
        files = {w[name].name for w in per_arch.values() if name in w}
        everywhere = all(name in w for w in per_arch.values())
        if everywhere and len(files) == 1 and wheels.is_pure(next(iter(files))):
            common.append(next(iter(per_arch.values()))[name])
        else:
            for arch, w in per_arch.items():
                if name in w:
                    own[arch].append(w[name])
    return common, own


def install_dependencies(
    common: list[Path], own: dict[str, list[Path]]
) -> tuple[Path, dict[str, Path], Path]:
    """Step 3: (common tree, {arch: compiled-deps tree}, licences tree), not yet compiled."""
    trim = (wheels.BOTOCORE_SERVICES, wheels.DROP_SUFFIXES, wheels.DROP_PREFIXES)

    def fill_common(dest: Path) -> None:
        for whl in common:
            wheels.install_wheel(whl, dest, None)

    common_tree = build_cached_tree(
        "installed-common", tree_key([w.name for w in common], trim), fill_common
    )
    first = next(iter(own))

    def fill_licenses(dest: Path) -> None:
        for whl in [*common, *own[first]]:
            with tempfile.TemporaryDirectory() as scratch:
                wheels.install_wheel(whl, Path(scratch), dest)

    licenses = build_cached_tree(
        "licenses", tree_key(sorted(w.name for w in [*common, *own[first]])), fill_licenses
    )
    trees = {}
    for arch, files in own.items():
        machine = ARCHITECTURES[arch]
        strip = wheels.find_strip(machine)
        if strip is None:
            log(
                f"WARNING: no strip for {machine} ELF files here (apt-get install "
                f"binutils-{machine}-linux-gnu; .ci/run does): the {arch} layer's compiled "
                f"modules keep their debug sections (a larger layer, the same behaviour)"
            )

        def fill(
            dest: Path, files: list[Path] = files, strip: str | None = strip and strip[0]
        ) -> None:
            for whl in files:
                wheels.install_wheel(whl, dest, None)
            if strip is not None:
                wheels.strip_debug_info(dest, strip)

        trees[arch] = build_cached_tree(
            f"installed-{TARGETS[arch].folder}",
            tree_key([w.name for w in files], trim, strip and strip[1]),
            fill,
        )
    return common_tree, trees, licenses


def assemble_interpreters(
    debs: dict[str, dict[debian.Pin, Path]], deps: dict[str, Path], host: str
) -> dict[str, Path]:
    """Step 4 (+ its stdlib's .pyc): {arch: tree holding python/ and licenses/}; host first."""
    bundles: dict[str, Path] = {}
    for arch in sorted(ARCHITECTURES, key=lambda a: a != host):
        machine = ARCHITECTURES[arch]
        pins = debs.get(debian.DEB_ARCH[machine])
        if not pins:
            raise SystemExit(f"build_layer: no {debian.DEB_ARCH[machine]} packages in the lock")
        elves = sorted(deps[arch].rglob("*.so"))
        compiler = bundles.get(host)

        def fill(
            dest: Path,
            arch: str = arch,
            pins: dict[debian.Pin, Path] = pins,
            elves: list[Path] = elves,
            compiler: Path | None = compiler,
        ) -> None:
            staged = interpreter.stage(ARCHITECTURES[arch], pins, dest / ".stage")
            python = dest / "python"
            interpreter.assemble(staged, elves, python, dest / "licenses")
            shutil.rmtree(dest / ".stage")
            runner = compiler / "python" if compiler else python
            stdlib = python / "lib" / f"python{BUNDLED_VERSION}"
            pycompile.compile_tree(
                stdlib,
                f"/opt/secretcache/python/lib/python{BUNDLED_VERSION}",
                {BUNDLED_VERSION: interpreter.host_command(runner, ARCHITECTURES[host])},
            )

        bundles[arch] = build_cached_tree(
            f"python-{arch}",
            tree_key(
                sorted((p.spec, p.sha256) for p in pins),
                [(e.name, wheels.sha256_bytes(e.read_bytes())) for e in elves],
                bundles.get(host) and (DEPS / f"python-{host}.key").read_text(),
            ),
            fill,
        )
    return bundles


def compile_dependencies(
    common: Path, deps: dict[str, Path], bundled: list[str], identity: str
) -> tuple[Path, dict[str, Path]]:
    """Step 5a: the dependency trees with their cpython-313 .pyc (cached)."""

    def compiled(name: str, src: Path, embedded: str) -> Path:
        def fill(dest: Path) -> None:
            shutil.copytree(src, dest, dirs_exist_ok=True)
            pycompile.compile_tree(dest, embedded, {BUNDLED_VERSION: bundled})

        return build_cached_tree(
            name, tree_key((DEPS / f"{src.name}.key").read_text(), identity), fill
        )

    common_tree = compiled("common", common, "/opt/secretcache/lib/common")
    trees = {
        arch: compiled(TARGETS[arch].folder, tree, f"/opt/secretcache/lib/{TARGETS[arch].folder}")
        for arch, tree in deps.items()
    }
    return common_tree, trees


def compile_sources(
    scratch: Path, bundled: list[str], clients: dict[str, list[str]]
) -> tuple[Path, Path]:
    """Step 5b: the extension (bundled 3.13) and the client (every Python), compiled fresh."""
    app_tree = scratch / "app" / "secretcache"
    client_tree = scratch / "client" / "secretcache_client"
    copy_package(APP_SRC, package_sources(APP_SRC), app_tree)
    copy_package(CLIENT_SRC, package_sources(CLIENT_SRC, ("py.typed",)), client_tree)
    pycompile.compile_tree(app_tree, "/opt/secretcache/app/secretcache", {BUNDLED_VERSION: bundled})
    pycompile.compile_tree(client_tree, "/opt/python/secretcache_client", clients)
    return app_tree, client_tree


def write_layers(
    dist: Path,
    epoch: int,
    app: Path,
    client: Path,
    common: Path,
    deps: dict[str, Path],
    bundles: dict[str, Path],
    licenses: Path,
) -> None:
    """Step 6: one zip per architecture, and each unpacked next to it."""
    for arch in ARCHITECTURES:
        folder = TARGETS[arch].folder
        members: list[tuple[str, Path]] = [("extensions/secretcache", LAUNCHER_SRC)]
        members += layer_zip.walk_files(app, "secretcache/app/secretcache")
        members += layer_zip.walk_files(common, "secretcache/lib/common")
        members += layer_zip.walk_files(deps[arch], f"secretcache/lib/{folder}")
        members += layer_zip.walk_files(bundles[arch] / "python", "secretcache/python")
        members += layer_zip.walk_files(licenses, "secretcache/licenses")
        members += layer_zip.walk_files(bundles[arch] / "licenses", "secretcache/licenses")
        members += layer_zip.walk_files(client, "python/secretcache_client")
        out = zip_path(dist, arch)
        layer_zip.write_zip(members, out, epoch)
        layer_zip.extract_tree(out, tree_path(dist, arch))


def link_host_layer(dist: Path, host: str) -> None:
    """dist/secretcache-layer.zip and dist/layer/: this machine's layer, as hard links."""
    zip_link = dist / "secretcache-layer.zip"
    zip_link.unlink(missing_ok=True)
    os.link(zip_path(dist, host), zip_link)
    tree = dist / "layer"
    tmp = dist / "layer.tmp"
    layer_zip.remove_tree(tmp)
    shutil.copytree(tree_path(dist, host), tmp, copy_function=os.link, symlinks=True)
    layer_zip.remove_tree(tree)
    tmp.rename(tree)


def print_manifest(dist: Path) -> None:
    """The exact Debian packages in each layer's interpreter (from the layer's own manifest)."""
    for arch in ARCHITECTURES:
        manifest = tree_path(dist, arch) / "secretcache" / "python" / "debian-packages.txt"
        lines = [line for line in manifest.read_text().splitlines() if not line.startswith("#")]
        print(
            f"{arch}: bundled Python {BUNDLED_FULL_VERSION} from Debian packages: "
            + ", ".join(" ".join(line.split()[:2]) for line in lines)
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    parser.add_argument("--offline", action="store_true", help="never download (cache only)")
    parser.add_argument("--dist", type=Path, default=DIST, help="output folder (default dist/)")
    parser.add_argument(
        "--debian-sources",
        action="store_true",
        help="after the build, download the Debian source packages of the bundled interpreters "
        "into <dist>/debian-sources/ (for a release: the LGPL/GPL source offer)",
    )
    parser.add_argument(
        "--update-debian",
        action="store_true",
        help="re-pin layer/*-debs.lock to Debian's current versions (security updates), then build",
    )
    args = parser.parse_args(argv)
    BUILD.mkdir(parents=True, exist_ok=True)
    # Two builds at once (a test session and a shell) must not interleave their renames.
    with open(BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if args.update_debian:
            update_debian()
        status = build(args)
        if args.debian_sources:
            download_debian_sources(args.dist.resolve())
        return status


def update_debian() -> None:
    apt = debian.PrivateApt(DEBIAN / "apt")
    for lock in (PYTHON_LOCK, TEST_LOCK):
        changed = debian.refresh_lock(lock, DEBIAN, apt)
        for old, new in changed:
            print(f"{lock.name}: {old.package}:{old.arch} {old.version} -> {new.version}")
        if not changed:
            print(f"{lock.name}: every package is at Debian {debian.SUITE}'s current version")


def download_debian_sources(dist: Path) -> None:
    """The source packages of every Debian package shipped in the layers' interpreters."""
    pins = {(p.package, p.arch): p for p in debian.read_lock(PYTHON_LOCK)}
    debs = debian.fetch(list(pins.values()), DEBIAN, debian.PrivateApt(DEBIAN / "apt"))
    sources: dict[str, str] = {}
    for arch in ARCHITECTURES:
        manifest = tree_path(dist, arch) / "secretcache" / "python" / "debian-packages.txt"
        for line in manifest.read_text().splitlines():
            if line.startswith("#"):
                continue
            package, _, deb_arch = line.split()
            name, version = debian.source_package(debs[pins[(package, deb_arch)]])
            sources[name] = version
    dest = dist / "debian-sources"
    layer_zip.remove_tree(dest)
    files = debian.download_sources(
        sources, dest, debian.PrivateApt(DEBIAN / "apt-src", sources=True)
    )
    total = sum(f.stat().st_size for f in files)
    print(
        f"{layer_zip.display(dest)}: {len(files)} files, {layer_zip.mib(total)}, sources of "
        + ", ".join(f"{n} {v}" for n, v in sorted(sources.items()))
    )


def build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    dist: Path = args.dist.resolve()
    host = host_architecture()
    app_files = package_sources(APP_SRC)
    client_files = package_sources(CLIENT_SRC, ("py.typed",))
    if not app_files or not client_files:
        raise SystemExit("build_layer: extension/secretcache or handler_client has no .py files")
    clients = {}
    for version in CLIENT_VERSIONS:
        python = pycompile.find_interpreter(version)
        if python is None:
            log(
                f"note: python{version} not found: python/secretcache_client gets no .pyc for "
                f"{version} (set SECRETCACHE_BUILD_PY{version.replace('.', '')})"
            )
        else:
            clients[version] = [str(python)]
    client_ids = {v: pycompile.interpreter_identity(cmd) for v, cmd in clients.items()}
    epoch = source_date_epoch()

    def digest_files(files: list[Path], base: Path) -> list[tuple[str, str]]:
        return [(f.relative_to(base).as_posix(), layer_zip.sha256_file(f)) for f in files]

    fingerprint = tree_key(
        wheels.REQUIREMENTS.read_text(),
        PYTHON_LOCK.read_text(),
        client_ids,
        epoch,
        layer_zip.sha256_file(LAUNCHER_SRC),
        digest_files(app_files, APP_SRC),
        digest_files(client_files, CLIENT_SRC),
        str(dist),
    )
    stamp = dist / ".secretcache-layer.stamp"
    outputs = [zip_path(dist, a) for a in ARCHITECTURES]

    def current() -> str:
        return " ".join([fingerprint, *(layer_zip.sha256_file(z) for z in outputs)])

    if (
        not args.force
        and all(z.is_file() for z in outputs)
        and all(tree_path(dist, a).is_dir() for a in ARCHITECTURES)
        and (dist / "layer").is_dir()
        and stamp.is_file()
        and stamp.read_text() == current()
    ):
        print_manifest(dist)
        for z in outputs:
            layer_zip.report(z, None, " (up to date)")
        return 0

    for d in (WHEELS, DEPS, DEBIAN, dist):
        d.mkdir(parents=True, exist_ok=True)
    debs = fetch_debian_packages(PYTHON_LOCK, args.offline)
    found = fetch_wheels(args.offline)
    common, own = split_common(found)
    common_tree, dep_trees, licenses = install_dependencies(common, own)
    bundles = assemble_interpreters(debs, dep_trees, host)
    bundled = interpreter.host_command(bundles[host] / "python", ARCHITECTURES[host])
    identity = pycompile.interpreter_identity(bundled)
    common_tree, dep_trees = compile_dependencies(common_tree, dep_trees, bundled, identity)
    with tempfile.TemporaryDirectory(prefix="secretcache-layer-") as scratch:
        app, client = compile_sources(Path(scratch), bundled, {**clients, BUNDLED_VERSION: bundled})
        write_layers(dist, epoch, app, client, common_tree, dep_trees, bundles, licenses)
    link_host_layer(dist, host)
    stamp.write_text(current())
    print_manifest(dist)
    took = time.monotonic() - started
    for z in outputs:
        layer_zip.report(z, took, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
