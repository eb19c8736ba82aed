"""The layer zip: written byte-for-byte reproducibly, unpacked with its modes, sized.

Members in sorted order, timestamps from one epoch, permissions 0755 for what is executed
(the launcher, the exec wrapper, the bundled loader and interpreter) and 0644 for the rest, no
extra fields.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

MAX_ZIPPED = 50 * 1024 * 1024  # Lambda: direct-upload deployment package
MAX_UNZIPPED = 250 * 1024 * 1024  # Lambda: function + all layers, unzipped
ROOT = Path(__file__).resolve().parent.parent
# What Lambda (or the launcher) executes: every other member is 0644.
EXECUTABLES = (
    "extensions/secretcache",
    "secretcache/exec-wrapper",
    "secretcache/python/bin/python3.13",
)
LOADER = re.compile(r"secretcache/python/lib/ld-linux-[^/]+")


def is_executable(arcname: str) -> bool:
    return arcname in EXECUTABLES or LOADER.fullmatch(arcname) is not None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
            mode = 0o755 if is_executable(arcname) else 0o644
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
    """dist/layer-<arch>/: the zip unpacked with its modes (SAM's ContentUri, by-hand runs)."""
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
    """Print the sizes and sha256 of a built zip; fail if it is over Lambda's limits."""
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


def remove_tree(tree: Path) -> None:
    """rmtree that also removes a read-only tree."""
    if not tree.exists():
        return
    for dirpath, _, _ in os.walk(tree):
        os.chmod(dirpath, 0o700)  # a read-only unpacked layer: make it removable
    shutil.rmtree(tree)
