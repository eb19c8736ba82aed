"""layer/debian.py without the network: the host's mirror, the lock file, .deb file names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "layer"))
import debian  # noqa: E402  (layer/ is not a package)

ARCHIVE = "http://mirror.example.invalid/debian"
SECURITY = "http://mirror.example.invalid/debian-security"
# Mirrors that must be passed over (fake hosts; a real mirror is never written in the repository).
DISABLED = "http://other.example.invalid/debian"
SOURCE_ONLY = "http://src.example.invalid/debian"
UBUNTU = "http://ubuntu.example.invalid/ubuntu"


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRETCACHE_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("SECRETCACHE_DEBIAN_SECURITY_MIRROR", raising=False)


def apt_etc(tmp_path: Path, sources: str = "", sources_list: str = "") -> Path:
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources:
        (etc / "sources.list.d" / "debian.sources").write_text(sources)
    if sources_list:
        (etc / "sources.list").write_text(sources_list)
    return etc


def test_mirrors_come_from_deb822_sources(tmp_path: Path) -> None:
    etc = apt_etc(
        tmp_path,
        f"""Types: deb
# a comment line
URIs: {ARCHIVE}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main
""",
    )
    assert debian.host_mirrors(etc) == (ARCHIVE, SECURITY)


def test_mirrors_come_from_a_one_line_sources_list(tmp_path: Path) -> None:
    etc = apt_etc(
        tmp_path,
        sources_list=f"# comment\ndeb [signed-by=/k.gpg] {ARCHIVE}/ trixie main contrib\n"
        f"deb {SECURITY} trixie-security main\n",
    )
    assert debian.host_mirrors(etc) == (ARCHIVE, SECURITY)


def test_security_defaults_to_the_archives_sibling(tmp_path: Path) -> None:
    etc = apt_etc(tmp_path, sources_list=f"deb {ARCHIVE} bookworm main\n")
    assert debian.host_mirrors(etc) == (ARCHIVE, SECURITY)


def test_disabled_source_only_and_non_debian_entries_are_skipped(tmp_path: Path) -> None:
    etc = apt_etc(
        tmp_path,
        f"""Types: deb
URIs: {DISABLED}
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: {SOURCE_ONLY}
Suites: bookworm
Components: main

Types: deb
URIs: {UBUNTU}
Suites: noble noble-security
Components: main

Types: deb
URIs: {ARCHIVE}
Suites: bookworm
Components: main
""",
    )
    assert debian.host_mirrors(etc) == (ARCHIVE, SECURITY)


def test_a_host_without_debian_sources_needs_the_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = apt_etc(tmp_path, sources_list=f"deb {UBUNTU} noble main\n")
    with pytest.raises(SystemExit, match="SECRETCACHE_DEBIAN_MIRROR"):
        debian.host_mirrors(etc)
    monkeypatch.setenv("SECRETCACHE_DEBIAN_MIRROR", ARCHIVE + "/")
    assert debian.host_mirrors(etc) == (ARCHIVE, SECURITY)


def test_lock_round_trips_sorted_with_its_header(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header one\n# header two\n"
        f"zlib1g 1:1.3.dfsg+really1.3.1-1+deb13u1 arm64 {'a' * 64}\n"
        f"libc6 2.41-12+deb13u5 amd64 {'b' * 64}  # trailing comment\n"
    )
    pins = debian.read_lock(lock)
    assert [p.package for p in pins] == ["zlib1g", "libc6"]
    debian.write_lock(lock, pins, debian.lock_header(lock))
    assert lock.read_text() == (
        "# header one\n# header two\n"
        f"libc6 2.41-12+deb13u5 amd64 {'b' * 64}\n"
        f"zlib1g 1:1.3.dfsg+really1.3.1-1+deb13u1 arm64 {'a' * 64}\n"
    )


@pytest.mark.parametrize(
    "line", ["libc6 2.41 amd64", f"libc6 2.41 amd64 {'z' * 64}", f"libc6 amd64 {'a' * 64}"]
)
def test_a_bad_lock_line_is_refused(tmp_path: Path, line: str) -> None:
    lock = tmp_path / "bad.lock"
    lock.write_text(line + "\n")
    with pytest.raises(SystemExit, match="bad line"):
        debian.read_lock(lock)


def test_pin_spec_and_the_file_name_apt_gives_it() -> None:
    pin = debian.Pin("zlib1g", "1:1.3.dfsg+really1.3.1-1+deb13u1", "arm64", "0" * 64)
    assert pin.spec == "zlib1g:arm64=1:1.3.dfsg+really1.3.1-1+deb13u1"
    assert pin.filename == "zlib1g_1%3a1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb"
