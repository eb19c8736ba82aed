"""AWS's published SigV4 test suite, as shipped in botocore's source distribution.

The wheel leaves botocore's tests out; the sdist of the pinned botocore carries AWS's
`aws4_testsuite` (Apache-2.0, with its LICENSE and NOTICE). It is fetched once with pip into
build/ and read from there; nothing of it is copied into this repository.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "sigv4-vectors"
SUITE = "tests/unit/auth/aws4_testsuite/"


def botocore_version() -> str:
    text = (ROOT / "extension" / "requirements.txt").read_text()
    match = re.search(r"^botocore==(\S+)$", text, re.MULTILINE)
    assert match, "botocore is pinned in extension/requirements.txt"
    return match.group(1)


def sigv4_suite_dir() -> Path:
    """The unpacked aws4_testsuite folder; raises RuntimeError if pip cannot fetch the sdist."""
    version = botocore_version()
    target = CACHE / version
    if (target / "get-vanilla").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"botocore-{version}.tar.gz"
    if not sdist.is_file():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(CACHE),
                f"botocore=={version}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or not sdist.is_file():
            raise RuntimeError(f"pip could not fetch the botocore {version} sdist")
    prefix = f"botocore-{version}/{SUITE}"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                relative = member.name[len(prefix) :]
                out = target / relative
                out.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                out.write_bytes(source.read())
    return target
