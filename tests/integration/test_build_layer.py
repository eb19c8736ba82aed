"""The built layer zip: layout, modes, precompiled code, limits, reproducibility, the launcher.

These tests read dist/secretcache-layer.zip as ``./build.sh layer`` builds it (a no-op when no
input changed), and run its vendored SDK under every Python 3.10-3.13 found on this machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.moto_server import MotoServer

REPO = Path(__file__).resolve().parents[2]
LAYER_ZIP = REPO / "dist" / "secretcache-layer.zip"
VERSIONS = ("3.10", "3.11", "3.12", "3.13")
MACHINES = ("x86_64", "aarch64")
FOLDERS = tuple(f"cp{v.replace('.', '')}-{m}" for v in VERSIONS for m in MACHINES)
NO_PYTHON_MESSAGE = (
    "secretcache: this layer needs a Lambda Python runtime (python3.10-3.13); no python3 found "
    "(checked SECRETCACHE_PYTHON, /var/lang/bin/python3, PATH)"
)

sys.path.insert(0, str(REPO / "layer"))
import build_layer  # noqa: E402  (layer/ is not a package)


def build(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(REPO / "build.sh"), "layer", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, f"./build.sh layer failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def build_output() -> str:
    return build().stdout


@pytest.fixture(scope="module")
def layer(build_output: str) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(LAYER_ZIP) as zf:
        yield zf


@pytest.fixture(scope="module")
def names(layer: zipfile.ZipFile) -> set[str]:
    return {i.filename for i in layer.infolist() if not i.is_dir()}


@pytest.fixture(scope="module")
def unpacked(layer: zipfile.ZipFile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layer unzipped with its modes, as Lambda puts it in /opt."""
    opt = tmp_path_factory.mktemp("opt")
    for info in layer.infolist():
        layer.extract(info, opt)
        os.chmod(opt / info.filename, (info.external_attr >> 16) & 0o7777)
    return opt


def interpreter(version: str) -> Path | None:
    return build_layer.find_interpreter(version)


# --------------------------------------------------------------------------- layout


def test_build_prints_zipped_and_unzipped_size(build_output: str) -> None:
    assert re.search(r"\d+ bytes zipped \(.*MiB\), \d+ bytes unzipped", build_output)


def test_top_level_holds_only_the_launcher_the_extension_and_the_client(names: set[str]) -> None:
    assert {n.split("/", 1)[0] for n in names} == {"extensions", "secretcache", "python"}
    assert {n for n in names if n.startswith("extensions/")} == {"extensions/secretcache"}
    assert {n.split("/")[1] for n in names if n.startswith("python/")} == {"secretcache_client"}
    assert {n.split("/")[1] for n in names if n.startswith("secretcache/")} == {
        "app",
        "lib",
        "licenses",
    }


def test_launcher_is_the_layer_script_and_executable(layer: zipfile.ZipFile) -> None:
    info = layer.getinfo("extensions/secretcache")
    assert (info.external_attr >> 16) == stat.S_IFREG | 0o755
    assert layer.read(info) == (REPO / "layer" / "secretcache").read_bytes()


def test_every_other_file_is_0644_and_every_directory_0755(layer: zipfile.ZipFile) -> None:
    for info in layer.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            assert mode == stat.S_IFDIR | 0o755, info.filename
        elif info.filename != "extensions/secretcache":
            assert mode == stat.S_IFREG | 0o644, info.filename


def test_zip_entries_are_sorted_with_fixed_time_and_no_extra_fields(
    layer: zipfile.ZipFile,
) -> None:
    infos = layer.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert len({i.date_time for i in infos}) == 1
    assert all(i.extra == b"" and i.create_system == 3 for i in infos)


def test_extension_package_is_copied_whole(names: set[str]) -> None:
    source = REPO / "extension" / "secretcache"
    expected = {
        f"secretcache/app/secretcache/{p.relative_to(source).as_posix()}"
        for p in source.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    shipped = {n for n in names if n.startswith("secretcache/app/") and n.endswith(".py")}
    assert shipped == expected


def test_client_is_shipped_under_python_for_handlers(names: set[str]) -> None:
    source = REPO / "handler_client" / "secretcache_client"
    expected = {
        f"python/secretcache_client/{p.relative_to(source).as_posix()}"
        for p in source.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert expected <= names
    assert "python/secretcache_client/__init__.py" in names


def test_no_dependency_leaks_into_the_handlers_path(names: set[str]) -> None:
    """Only the client is under python/: the function's own aiohttp/botocore never clash."""
    for name in names:
        if name.startswith("python/"):
            assert name.startswith("python/secretcache_client/"), name


def test_one_compiled_folder_per_python_and_architecture(names: set[str]) -> None:
    folders = {n.split("/")[2] for n in names if n.startswith("secretcache/lib/")}
    assert folders == {"common", *FOLDERS}
    for folder in FOLDERS:
        machine = folder.split("-", 1)[1]
        tag = f"cpython-{folder[2:5]}-{machine}-linux-gnu.so"
        assert any(
            n.startswith(f"secretcache/lib/{folder}/aiohttp/") and n.endswith(tag) for n in names
        ), folder


def test_pure_python_dependencies_are_shipped_once_in_common(names: set[str]) -> None:
    for package in ("botocore", "aiobotocore", "urllib3", "attr", "idna", "jmespath"):
        assert f"secretcache/lib/common/{package}/__init__.py" in names
        for folder in FOLDERS:
            assert f"secretcache/lib/{folder}/{package}/__init__.py" not in names


def test_build_only_files_are_dropped(names: set[str]) -> None:
    assert not [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".h", ".pyi"))]
    assert not [n for n in names if ".dist-info/" in n]


def test_botocore_data_keeps_only_the_services_called_and_the_top_level_files(
    names: set[str],
) -> None:
    data = "secretcache/lib/common/botocore/data/"
    services = {
        n[len(data) :].split("/")[0] for n in names if n.startswith(data) and "/" in n[len(data) :]
    }
    assert services == {"kms", "secretsmanager", "ssm", "sts"}
    for top in (
        "endpoints.json",
        "partitions.json",
        "sdk-default-configuration.json",
        "_retry.json",
    ):
        assert data + top in names
    for service in services:
        assert any(
            n.startswith(f"{data}{service}/") and n.endswith("service-2.json.gz") for n in names
        )


# --------------------------------------------------------------------------- bytecode


def pyc_names(source: str, versions: tuple[str, ...]) -> list[str]:
    folder, file = source.rsplit("/", 1)
    return [f"{folder}/__pycache__/{file[:-3]}.cpython-{v.replace('.', '')}.pyc" for v in versions]


@pytest.mark.parametrize(
    "source",
    [
        "secretcache/lib/common/botocore/session.py",
        "secretcache/lib/common/aiobotocore/session.py",
        "python/secretcache_client/__init__.py",
    ],
)
def test_shared_code_has_pyc_for_every_python(names: set[str], source: str) -> None:
    assert source in names
    for pyc in pyc_names(source, VERSIONS):
        assert pyc in names


def test_extension_has_pyc_for_every_python(names: set[str]) -> None:
    sources = [n for n in names if n.startswith("secretcache/app/") and n.endswith(".py")]
    assert sources, "no extension sources in the layer"
    for source in sources:
        for pyc in pyc_names(source, VERSIONS):
            assert pyc in names


@pytest.mark.parametrize("folder", FOLDERS)
def test_compiled_folders_have_only_their_own_pythons_pyc(names: set[str], folder: str) -> None:
    own = folder[2:5]
    pycs = [n for n in names if n.startswith(f"secretcache/lib/{folder}/") and n.endswith(".pyc")]
    assert f"secretcache/lib/{folder}/aiohttp/__pycache__/web.cpython-{own}.pyc" in pycs
    assert all(n.endswith(f".cpython-{own}.pyc") for n in pycs)


def test_pyc_are_unchecked_hash_based(layer: zipfile.ZipFile, names: set[str]) -> None:
    """Flags 0b01: hash-based, never checked against the source (the layer is immutable)."""
    pycs = sorted(n for n in names if n.endswith(".pyc"))
    for name in pycs[:: max(1, len(pycs) // 50)]:
        header = layer.read(name)[:16]
        assert int.from_bytes(header[4:8], "little") == 0b01, name


# --------------------------------------------------------------------------- limits, repro


def test_within_lambda_size_limits() -> None:
    with zipfile.ZipFile(LAYER_ZIP) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    assert LAYER_ZIP.stat().st_size <= 50 * 1024 * 1024
    assert unzipped <= 250 * 1024 * 1024


def test_unchanged_inputs_rebuild_as_a_no_op() -> None:
    first = build()  # rebuilds only if an input changed since the module's build
    again = build()
    assert "(up to date)" in again.stdout
    assert again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]  # the sha256 line


@pytest.mark.slow
def test_two_builds_from_the_same_sources_are_byte_identical(
    tmp_path: Path, build_output: str
) -> None:
    """Snapshot the inputs, then build from them twice, each time compiling every dependency
    afresh (downloaded wheels shared, so no network): the zips must hash the same."""
    snapshot = tmp_path / "src"
    for part in ("extension", "handler_client", "layer"):
        shutil.copytree(
            REPO / part, snapshot / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    hashes = []
    for n in (1, 2):
        cache = tmp_path / f"build{n}"
        cache.mkdir()
        (cache / "wheels").symlink_to(REPO / "build" / "wheels")
        out = tmp_path / f"layer{n}.zip"
        env = {**os.environ, "SECRETCACHE_BUILD_DIR": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
        done = subprocess.run(
            [
                sys.executable,
                str(snapshot / "layer" / "build_layer.py"),
                "--offline",
                "--output",
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        hashes.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert hashes[0] == hashes[1]


# --------------------------------------------------------------------------- vendored SDK works

SDK_PROBE = textwrap.dedent(
    """
    import asyncio, os, sys
    layer, folder = sys.argv[1], sys.argv[2]
    sys.path[:0] = [f"{layer}/secretcache/lib/common", f"{layer}/secretcache/lib/{folder}"]
    import aiohttp, botocore, aiobotocore.session
    from aiohttp import http_parser
    from botocore.exceptions import UnknownServiceError
    for mod in (aiohttp, botocore, aiobotocore):
        assert mod.__file__.startswith(layer), mod.__file__
    # The compiled parser loaded, not the pure-Python fallback.
    assert http_parser.HttpResponseParser is http_parser.HttpResponseParserC

    async def main():
        session = aiobotocore.session.get_session()
        kw = dict(region_name="us-east-1", endpoint_url=os.environ["MOTO_URL"],
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        async with session.create_client("secretsmanager", **kw) as sm:
            await sm.create_secret(Name="probe-" + folder, SecretString="v-" + folder)
            got = await sm.get_secret_value(SecretId="probe-" + folder)
            assert got["SecretString"] == "v-" + folder
        async with session.create_client("ssm", **kw) as ssm:
            await ssm.put_parameter(Name="/probe/" + folder, Value="p", Type="SecureString")
            got = await ssm.get_parameter(Name="/probe/" + folder, WithDecryption=True)
            assert got["Parameter"]["Value"] == "p"
        async with session.create_client("kms", **kw) as kms:
            key = (await kms.create_key())["KeyMetadata"]["KeyId"]
            blob = (await kms.encrypt(KeyId=key, Plaintext=b"k"))["CiphertextBlob"]
            assert (await kms.decrypt(CiphertextBlob=blob))["Plaintext"] == b"k"
        async with session.create_client("sts", **kw) as sts:
            assert (await sts.get_caller_identity())["Account"]
        try:
            async with session.create_client("s3", **kw):
                pass
        except UnknownServiceError:
            pass
        else:
            raise AssertionError("s3 model should have been trimmed")

    asyncio.run(main())
    print("ok", sys.version_info[:2])
    """
)


@pytest.fixture
def moto_url(moto_server: MotoServer) -> str:
    return moto_server.url


@pytest.mark.parametrize("version", VERSIONS)
def test_vendored_sdk_calls_ssm_secrets_manager_kms_and_sts(
    version: str, unpacked: Path, moto_url: str
) -> None:
    """The trimmed botocore and the per-version compiled wheels work on each Python, under -S
    as the launcher runs them."""
    machine = platform.machine()
    if machine not in MACHINES:
        pytest.skip(f"no layer folder for this machine ({machine})")
    python = interpreter(version)
    if python is None:
        pytest.skip(f"python{version} is not installed here")
    folder = f"cp{version.replace('.', '')}-{machine}"
    done = subprocess.run(
        [str(python), "-S", "-c", SDK_PROBE, str(unpacked), folder],
        env={"PATH": os.environ["PATH"], "MOTO_URL": moto_url, "HOME": str(unpacked)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("ok")


# --------------------------------------------------------------------------- launcher


def run_launcher(argv0: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", argv0], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def test_launcher_without_python_prints_one_line_and_fails(unpacked: Path) -> None:
    if os.access("/var/lang/bin/python3", os.X_OK):
        pytest.skip("/var/lang/bin/python3 exists here, so the launcher would find it")
    done = run_launcher(
        str(unpacked / "extensions" / "secretcache"),
        {"PATH": "/nonexistent", "SECRETCACHE_PYTHON": ""},
        unpacked,
    )
    assert done.returncode != 0
    assert done.stderr == NO_PYTHON_MESSAGE + "\n"
    assert done.stdout == ""


def test_launcher_rejects_a_secretcache_python_that_is_not_executable(unpacked: Path) -> None:
    done = run_launcher(
        str(unpacked / "extensions" / "secretcache"),
        {"PATH": "/usr/bin:/bin", "SECRETCACHE_PYTHON": "/nonexistent/python3"},
        unpacked,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1
    assert "SECRETCACHE_PYTHON=/nonexistent/python3" in done.stderr


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A stand-in interpreter that reports how the launcher called it."""
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "PYTHONPATH=$PYTHONPATH" "$@"\n')
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    ("cwd", "argv0"),
    [
        ("/", "{opt}/extensions/secretcache"),  # as Lambda runs it
        ("{opt}", "extensions/secretcache"),
        ("{opt}/extensions", "secretcache"),
        ("{opt}/extensions", "./secretcache"),
        ("{opt}/python", "../extensions/secretcache"),
    ],
)
def test_launcher_finds_the_layer_root_from_any_path(
    unpacked: Path, fake_python: Path, cwd: str, argv0: str
) -> None:
    opt = str(unpacked)
    done = run_launcher(
        argv0.format(opt=opt),
        {"PATH": "/usr/bin:/bin", "SECRETCACHE_PYTHON": str(fake_python)},
        Path(cwd.format(opt=opt)),
    )
    assert done.returncode == 0, done.stderr
    pythonpath, *args = done.stdout.splitlines()
    assert os.path.realpath(pythonpath.removeprefix("PYTHONPATH=")) == os.path.realpath(
        unpacked / "secretcache" / "app"
    )
    assert args == ["-S", "-m", "secretcache", "--name", "secretcache"]


def test_launcher_takes_python3_from_path_and_registers_under_its_file_name(
    unpacked: Path, fake_python: Path, tmp_path: Path
) -> None:
    if os.access("/var/lang/bin/python3", os.X_OK):
        pytest.skip("/var/lang/bin/python3 exists here and comes before PATH")
    renamed = unpacked / "extensions" / "my-cache"
    shutil.copy2(unpacked / "extensions" / "secretcache", renamed)
    try:
        done = run_launcher(str(renamed), {"PATH": f"/nonexistent:{fake_python.parent}"}, tmp_path)
    finally:
        renamed.unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["-S", "-m", "secretcache", "--name", "my-cache"]
