"""The layer's own interpreter: Debian 13's CPython 3.13 with Debian's glibc and loader.

``assemble`` turns the unpacked Debian packages of one architecture into
``secretcache/python/`` of the layer:

    bin/python3.13                 Debian's binary, unmodified (libpython linked in statically)
    lib/ld-linux-*.so.*            Debian's dynamic loader: the launcher execs it
    lib/lib*.so.*                  the NEEDED closure (glibc, OpenSSL, zlib, ...), by soname
    lib/python3.13/                the standard library, trimmed, + unchecked-hash .pyc
    debian-packages.txt            the manifest: every Debian package shipped, exact version

and ``secretcache/licenses/python-runtime/``: each shipped package's copyright file, Python's
licence, and SOURCES.txt (the source packages, and the written offer the LGPL and GPL parts
require). The interpreter is always started as ``ld.so --inhibit-cache --library-path lib
bin/python3.13``, so the sandbox's own glibc (2.26, 2.34 or none at all) never matters.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import debian

VERSION = "3.13"
TRIPLET = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
LOADER = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}

# (The _sysconfigdata__<triplet>.py dropped below is a duplicate link; sysconfig and zoneinfo
# import _sysconfigdata__linux_<triplet>.)
# Standard-library parts a Lambda extension never uses (tests, GUIs, REPL, debuggers, mail
# protocols, databases). Everything the extension and the SDK import stays.
DROP_STDLIB = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "pydoc.py",
    "pydoc_data",
    "curses",
    "dbm",
    "sqlite3",
    "_pyrepl",
    "venv",
    "unittest",
    "doctest.py",
    "pdb.py",
    "bdb.py",
    "cProfile.py",
    "profile.py",
    "pstats.py",
    "trace.py",
    "timeit.py",
    "lzma.py",
    "wsgiref",
    "xmlrpc",
    "mailbox.py",
    "imaplib.py",
    "smtplib.py",
    "ftplib.py",
    "poplib.py",
    "nntplib.py",
    "telnetlib.py",
    "tabnanny.py",
    "__phello__",
    "antigravity.py",
    "this.py",
    "sitecustomize.py",
    "LICENSE.txt",
}
DROP_STDLIB_PATTERNS = (r"config-3\.13-.*", r"_sysconfigdata__(x86_64|aarch64)-linux-gnu\.py")
# lib-dynload modules dropped: test helpers, curses/dbm/sqlite, readline (GPL), CJK codecs, lzma.
DROP_DYNLOAD = re.compile(
    r"(_test.*|xx.*|_ctypes_test|_curses.*|_dbm|_gdbm|_sqlite3|readline|_interp.*|"
    r"_codecs_(cn|hk|iso2022|jp|kr|tw)|_multibytecodec|_lsprof|_lzma|_tkinter)\..*\.so"
)
# Legacy codecs in encodings/ (single-byte code pages and CJK). utf-8, latin-1, ascii, idna,
# cp1252 and cp437 (zipfile's default) stay.
DROP_ENCODING = re.compile(
    r"(big5.*|cp9[0-9][0-9]|euc_.*|gb.*|hz|iso2022_.*|johab|shift_jis.*|"
    r"cp(?!437\.py|1252\.py)[0-9]+|iso8859_(?!1\.py)[0-9]+|mac_.*|koi8_.*|kz1048|ptcp154|"
    r"hp_roman8|palmos|tis_620|mbcs|oem)\.py"
)


@dataclass(frozen=True)
class Staged:
    """One architecture's pinned packages, each unpacked into its own folder."""

    machine: str
    root: Path  # root/<package>/ holds that package's files
    pins: tuple[debian.Pin, ...]
    sources: tuple[tuple[str, str], ...]  # (source package, version) per pin, same order

    def package_dir(self, package: str) -> Path:
        return self.root / package

    def find(self, relpath: str) -> tuple[str, Path] | None:
        """(package, path) of a file in any staged package (following in-package symlinks)."""
        for pin in self.pins:
            path = self.package_dir(pin.package) / relpath
            if path.exists() or path.is_symlink():
                return pin.package, path
        return None

    def resolve(self, path: Path) -> Path:
        """A staged symlink resolved inside the stage (absolute links point into the stage)."""
        for _ in range(20):
            if not path.is_symlink():
                return path
            target = os.readlink(path)
            package_root = self.root / path.relative_to(self.root).parts[0]
            if target.startswith("/"):
                wanted = target.lstrip("/")
            else:
                joined = os.path.normpath(os.path.join(path.parent, target))
                wanted = os.path.relpath(joined, package_root)
            # A link may point into another package (doc dirs, multiarch libs).
            hit = self.find(wanted)
            if hit is None:
                raise SystemExit(f"build_layer: dangling link {path} -> {target}")
            path = hit[1]
        raise SystemExit(f"build_layer: symlink loop at {path}")


def stage(machine: str, debs: dict[debian.Pin, Path], dest: Path) -> Staged:
    """Unpack each .deb of one architecture into dest/<package>/."""
    pins = tuple(sorted(debs, key=lambda p: p.package))
    for pin in pins:
        debian.extract(debs[pin], dest / pin.package)
    sources = tuple(debian.source_package(debs[p]) for p in pins)
    return Staged(machine, dest, pins, sources)


def needed(elf: Path) -> list[str]:
    """DT_NEEDED entries of an ELF file (readelf reads every architecture)."""
    out = subprocess.run(
        ["readelf", "-d", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def library_closure(staged: Staged, roots: list[Path]) -> dict[str, tuple[str, Path]]:
    """soname -> (package, real file) for everything roots need, transitively; fails loudly."""
    triplet = TRIPLET[staged.machine]
    found: dict[str, tuple[str, Path]] = {}
    todo = [name for elf in roots for name in needed(elf)]
    todo.append(LOADER[staged.machine])
    missing = []
    while todo:
        name = todo.pop()
        if name in found:
            continue
        hit = staged.find(f"usr/lib/{triplet}/{name}") or staged.find(f"lib/{triplet}/{name}")
        if hit is None:
            missing.append(name)
            continue
        package, path = hit
        real = staged.resolve(path)
        found[name] = (package, real)
        todo += needed(real)
    if missing:
        raise SystemExit(
            f"build_layer: the bundled interpreter ({staged.machine}) needs "
            f"{sorted(set(missing))}, "
            f"which no package in layer/python-debs.lock ships: add the package to the lock"
        )
    return found


def copy_stdlib(staged: Staged, dest: Path) -> None:
    """usr/lib/python3.13 of every staged package into dest, trimmed; symlinks resolved."""
    for pin in staged.pins:
        src = staged.package_dir(pin.package) / f"usr/lib/python{VERSION}"
        if not src.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(src):
            rel = Path(dirpath).relative_to(src)
            if rel == Path("."):
                dirnames[:] = [d for d in dirnames if not _dropped(d)]
                filenames = [f for f in filenames if not _dropped(f)]
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if rel == Path("lib-dynload") and DROP_DYNLOAD.fullmatch(name):
                    continue
                if rel == Path("encodings") and DROP_ENCODING.fullmatch(name):
                    continue
                path = Path(dirpath) / name
                out = dest / rel / name
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staged.resolve(path), out)


def _dropped(name: str) -> bool:
    return name in DROP_STDLIB or any(re.fullmatch(p, name) for p in DROP_STDLIB_PATTERNS)


def assemble(staged: Staged, extra_elves: list[Path], dest: Path, licenses: Path) -> list[str]:
    """Fill dest (secretcache/python/) and licenses; returns the manifest lines.

    ``extra_elves``: the vendored wheels' extension modules, whose NEEDED (libstdc++ for
    frozenlist, libpthread stubs for manylinux) must also be in the bundle.
    """
    python = staged.find(f"usr/bin/python{VERSION}")
    if python is None:
        raise SystemExit("build_layer: python3.13-minimal is missing from layer/python-debs.lock")
    (dest / "bin").mkdir(parents=True)
    shutil.copyfile(staged.resolve(python[1]), dest / "bin" / f"python{VERSION}")
    stdlib = dest / "lib" / f"python{VERSION}"
    copy_stdlib(staged, stdlib)
    for name in ("os.py", "lib-dynload/_ssl.cpython-313-" + TRIPLET[staged.machine] + ".so"):
        if not (stdlib / name).is_file():
            raise SystemExit(f"build_layer: the staged stdlib has no {name}")

    roots = [dest / "bin" / f"python{VERSION}", *sorted(stdlib.rglob("*.so")), *extra_elves]
    closure = library_closure(staged, roots)
    used = {"python3.13-minimal", "libpython3.13-minimal", "libpython3.13-stdlib"}
    for soname, (package, real) in sorted(closure.items()):
        shutil.copyfile(real, dest / "lib" / soname)
        used.add(package)
    for executable in (dest / "bin" / f"python{VERSION}", dest / "lib" / LOADER[staged.machine]):
        executable.chmod(0o755)

    manifest = []
    sources: dict[str, str] = {}
    pkg_licenses = licenses / "python-runtime"
    for pin, (source, source_version) in zip(staged.pins, staged.sources, strict=True):
        if pin.package not in used:
            continue
        manifest.append(f"{pin.package} {pin.version} {pin.arch}")
        sources[source] = source_version
        copyright_file = (
            staged.resolve(staged.package_dir(pin.package) / "usr/share/doc" / pin.package)
            / "copyright"
        )
        if not copyright_file.is_file():
            hit = staged.find(f"usr/share/doc/{pin.package}/copyright")
            if hit is None:
                raise SystemExit(f"build_layer: {pin.package} ships no copyright file")
            copyright_file = staged.resolve(hit[1])
        out = pkg_licenses / pin.package / "copyright"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copyright_file, out)
    licence = staged.find(f"usr/lib/python{VERSION}/LICENSE.txt")
    if licence is None:
        raise SystemExit("build_layer: no Python LICENSE.txt in the staged packages")
    shutil.copyfile(staged.resolve(licence[1]), pkg_licenses / "LICENSE-python.txt")
    (pkg_licenses / "SOURCES.txt").write_text(source_offer(sources))
    (dest / "debian-packages.txt").write_text(
        f"# Debian {debian.SUITE} packages in this interpreter bundle (package version arch)\n"
        + "".join(f"{line}\n" for line in manifest)
    )
    return manifest


def source_offer(sources: dict[str, str]) -> str:
    lines = [
        "Sources of the bundled interpreter (secretcache/python/)",
        "",
        f"The files under secretcache/python/ are unmodified binaries from Debian {debian.SUITE}",
        "packages (see secretcache/python/debian-packages.txt). They were built by Debian from",
        "these source packages:",
        "",
        *(f"  {name} {version}" for name, version in sorted(sources.items())),
        "",
        "Licences: each package's copyright file is in the folder of the same name here;",
        "CPython's licence is LICENSE-python.txt.",
        "",
        "GNU C Library (glibc: libc.so.6, ld-linux, libm, libpthread, libdl, librt, libutil) is",
        "under the LGPL-2.1-or-later. It is shipped as separate shared libraries, loaded by the",
        "bundled loader from secretcache/python/lib/, so you may replace them with a modified",
        "version. libgcc_s and libstdc++ (gcc-14) are under the GPL-3.0-or-later with the GCC",
        "Runtime Library Exception.",
        "",
        "Written offer: for at least three years after we last distribute this version of the",
        "layer, we will give anyone who asks, at no more than the cost of physically performing",
        "the distribution, the complete corresponding source",
        "code of the packages above, exactly as versioned, by opening an issue in the secretcache",
        "project's repository. The project's release process attaches these source packages",
        "to each release of the layer (`./build.sh debian-sources` downloads exactly them). They",
        "are also in Debian's archive (`apt-get source <package>=<version>`) and in Debian's",
        "snapshot archive.",
        "",
    ]
    return "\n".join(lines)


def host_command(bundle: Path, machine: str) -> list[str]:
    """argv prefix that runs the bundled interpreter here, as the launcher does."""
    return [
        str(bundle / "lib" / LOADER[machine]),
        "--inhibit-cache",
        "--library-path",
        str(bundle / "lib"),
        str(bundle / "bin" / f"python{VERSION}"),
    ]
