"""The built layer zips (one per architecture): layout, modes, the bundled interpreter, its
manifest and licences, precompiled code, limits, reproducibility, the launcher.

These tests read dist/secretcache-layer-{x86_64,arm64}.zip as ``./build.sh layer`` builds them
(a no-op when no input changed), and run the vendored SDK on the bundled interpreter.
"""

from __future__ import annotations

import ast
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

from tests.support.bare_root import BOOT
from tools.moto_server import MotoServer

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's name -> os.uname().machine
ELF_MACHINE = {"x86_64": 0x3E, "aarch64": 0xB7}
LOADERS = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}
CLIENT_VERSIONS = ("3.10", "3.11", "3.12")  # + the bundled 3.13
HOST_ARCH = next((a for a, m in ARCHES.items() if m == platform.machine()), None)

sys.path.insert(0, str(REPO / "layer"))
import build_layer  # noqa: E402  (layer/ is not a package)
import debian  # noqa: E402
import pycompile  # noqa: E402


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


@pytest.fixture(scope="module", params=list(ARCHES))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def machine(arch: str) -> str:
    return ARCHES[arch]


@pytest.fixture(scope="module")
def layer(build_output: str, arch: str) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(DIST / f"secretcache-layer-{arch}.zip") as zf:
        yield zf


@pytest.fixture(scope="module")
def names(layer: zipfile.ZipFile) -> set[str]:
    return {i.filename for i in layer.infolist() if not i.is_dir()}


@pytest.fixture(scope="module")
def unpacked(build_output: str) -> Path:
    """This machine's layer, unpacked with its modes (dist/layer/, as ./build.sh leaves it)."""
    if HOST_ARCH is None:
        pytest.skip(f"no layer for this machine ({platform.machine()})")
    return DIST / "layer"


def interpreter(version: str) -> Path | None:
    return pycompile.find_interpreter(version)


def bundled(opt: Path, machine: str) -> list[str]:
    bundle = opt / "secretcache" / "python"
    return [
        str(bundle / "lib" / LOADERS[machine]),
        "--inhibit-cache",
        "--library-path",
        str(bundle / "lib"),
        str(bundle / "bin" / "python3.13"),
    ]


# --------------------------------------------------------------------------- layout


def test_build_prints_zipped_and_unzipped_size_of_both_layers(build_output: str) -> None:
    for arch in ARCHES:
        assert re.search(
            rf"secretcache-layer-{arch}\.zip: \d+ bytes zipped \(.*MiB\), \d+ bytes unzipped",
            build_output,
        )


def test_host_layer_is_linked_as_dist_layer_and_the_plain_zip(build_output: str) -> None:
    if HOST_ARCH is None:
        pytest.skip("no layer for this machine")
    assert (DIST / "secretcache-layer.zip").samefile(DIST / f"secretcache-layer-{HOST_ARCH}.zip")
    launcher = DIST / "layer" / "secretcache" / "python" / "bin" / "python3.13"
    assert launcher.samefile(
        DIST / f"layer-{HOST_ARCH}" / "secretcache" / "python" / "bin" / "python3.13"
    )


def test_top_level_holds_only_the_launcher_the_extension_and_the_client(names: set[str]) -> None:
    assert {n.split("/", 1)[0] for n in names} == {"extensions", "secretcache", "python"}
    assert {n for n in names if n.startswith("extensions/")} == {"extensions/secretcache"}
    assert {n.split("/")[1] for n in names if n.startswith("python/")} == {"secretcache_client"}
    assert {n.split("/")[1] for n in names if n.startswith("secretcache/")} == {
        "app",
        "exec-wrapper",
        "lib",
        "licenses",
        "python",
    }


def test_launcher_is_the_layer_script_and_executable(layer: zipfile.ZipFile) -> None:
    info = layer.getinfo("extensions/secretcache")
    assert (info.external_attr >> 16) == stat.S_IFREG | 0o755
    assert layer.read(info) == (REPO / "layer" / "secretcache").read_bytes()


def test_exec_wrapper_is_the_layer_script_and_executable(layer: zipfile.ZipFile) -> None:
    info = layer.getinfo("secretcache/exec-wrapper")
    assert (info.external_attr >> 16) == stat.S_IFREG | 0o755
    assert layer.read(info) == (REPO / "layer" / "exec-wrapper").read_bytes()


def test_only_the_launcher_wrapper_loader_and_interpreter_are_executable(
    layer: zipfile.ZipFile, machine: str
) -> None:
    executables = {
        "extensions/secretcache",
        "secretcache/exec-wrapper",
        "secretcache/python/bin/python3.13",
        f"secretcache/python/lib/{LOADERS[machine]}",
    }
    for info in layer.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            assert mode == stat.S_IFDIR | 0o755, info.filename
        elif info.filename in executables:
            assert mode == stat.S_IFREG | 0o755, info.filename
        else:
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


def test_one_compiled_folder_for_the_bundled_python_on_this_architecture(
    names: set[str], machine: str
) -> None:
    folder = f"cp313-{machine}"
    folders = {n.split("/")[2] for n in names if n.startswith("secretcache/lib/")}
    assert folders == {"common", folder}
    tag = f"cpython-313-{machine}-linux-gnu.so"
    assert any(
        n.startswith(f"secretcache/lib/{folder}/aiohttp/") and n.endswith(tag) for n in names
    )


def test_pure_python_dependencies_are_shipped_once_in_common(names: set[str], machine: str) -> None:
    for package in ("botocore", "aiobotocore", "urllib3", "attr", "idna", "jmespath"):
        assert f"secretcache/lib/common/{package}/__init__.py" in names
        assert f"secretcache/lib/cp313-{machine}/{package}/__init__.py" not in names


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_every_elf_file_is_for_the_layers_architecture(
    layer: zipfile.ZipFile, names: set[str], machine: str
) -> None:
    elves = 0
    for name in names:
        with layer.open(name) as f:
            head = f.read(20)
        if head[:4] == b"\x7fELF":
            elves += 1
            assert elf_machine(head) == ELF_MACHINE[machine], name
    assert elves > 20


def test_compiled_modules_are_stripped(
    layer: zipfile.ZipFile, names: set[str], machine: str
) -> None:
    sos = [
        n for n in names if n.startswith(f"secretcache/lib/cp313-{machine}/") and n.endswith(".so")
    ]
    assert sos
    for name in sos:
        assert b".debug_info" not in layer.read(name), name


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


def test_the_layers_own_code_has_pyc_for_the_bundled_python_only(names: set[str]) -> None:
    sources = [
        n
        for n in names
        if n.startswith(("secretcache/app/", "secretcache/lib/", "secretcache/python/"))
        and n.endswith(".py")
    ]
    assert "secretcache/lib/common/botocore/session.py" in sources
    assert "secretcache/python/lib/python3.13/asyncio/base_events.py" in sources
    for source in sources:
        assert pyc_names(source, ("3.13",))[0] in names, source
    pycs = [n for n in names if n.startswith("secretcache/") and n.endswith(".pyc")]
    assert all(n.endswith(".cpython-313.pyc") for n in pycs)


def test_client_has_pyc_for_every_python_runtime_found_here(names: set[str]) -> None:
    versions = ("3.13", *(v for v in CLIENT_VERSIONS if interpreter(v) is not None))
    for pyc in pyc_names("python/secretcache_client/__init__.py", versions):
        assert pyc in names


def test_pyc_are_unchecked_hash_based(layer: zipfile.ZipFile, names: set[str]) -> None:
    """Flags 0b01: hash-based, never checked against the source (the layer is immutable)."""
    pycs = sorted(n for n in names if n.endswith(".pyc"))
    for name in pycs[:: max(1, len(pycs) // 50)]:
        header = layer.read(name)[:16]
        assert int.from_bytes(header[4:8], "little") == 0b01, name


# --------------------------------------------------------------------------- limits, repro


def test_within_lambda_size_limits(layer: zipfile.ZipFile, arch: str) -> None:
    unzipped = sum(i.file_size for i in layer.infolist())
    assert (DIST / f"secretcache-layer-{arch}.zip").stat().st_size <= 50 * 1024 * 1024
    assert unzipped <= 250 * 1024 * 1024


def test_unchanged_inputs_rebuild_as_a_no_op() -> None:
    first = build()  # rebuilds only if an input changed since the module's build
    again = build()
    assert again.stdout.count("(up to date)") == 2
    shas = [line for line in first.stdout.splitlines() if line.startswith("sha256 ")]
    assert [line for line in again.stdout.splitlines() if line.startswith("sha256 ")] == shas


@pytest.mark.slow
def test_two_builds_from_the_same_sources_are_byte_identical(
    tmp_path: Path, build_output: str
) -> None:
    """Snapshot the inputs, then build from them twice, each time assembling the interpreter
    and compiling everything afresh (downloads shared, so no network): same zips, both arches."""
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
        (cache / "debian").mkdir()
        (cache / "debian" / "debs").symlink_to(REPO / "build" / "debian" / "debs")
        out = tmp_path / f"dist{n}"
        env = {**os.environ, "SECRETCACHE_BUILD_DIR": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
        done = subprocess.run(
            [
                sys.executable,
                str(snapshot / "layer" / "build_layer.py"),
                "--offline",
                "--dist",
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        hashes.append(
            [
                hashlib.sha256((out / f"secretcache-layer-{a}.zip").read_bytes()).hexdigest()
                for a in ARCHES
            ]
        )
    assert hashes[0] == hashes[1]


# --------------------------------------------------------------------------- bundled interpreter


def shipped_pins(arch: str) -> dict[str, debian.Pin]:
    deb_arch = debian.DEB_ARCH[ARCHES[arch]]
    return {p.package: p for p in debian.read_lock(build_layer.PYTHON_LOCK) if p.arch == deb_arch}


def test_manifest_names_exact_debian_versions_from_the_lock(
    layer: zipfile.ZipFile, arch: str, build_output: str
) -> None:
    lines = layer.read("secretcache/python/debian-packages.txt").decode().splitlines()
    entries = [line.split() for line in lines if not line.startswith("#")]
    pins = shipped_pins(arch)
    assert {"python3.13-minimal", "libc6", "libssl3t64"} <= {e[0] for e in entries}
    for package, version, deb_arch in entries:
        assert pins[package].version == version and pins[package].arch == deb_arch
        assert f"{package} {version}" in build_output  # printed at build


def test_licences_cover_every_shipped_package_and_offer_the_source(
    layer: zipfile.ZipFile, names: set[str]
) -> None:
    lines = layer.read("secretcache/python/debian-packages.txt").decode().splitlines()
    for line in lines:
        if not line.startswith("#"):
            package = line.split()[0]
            assert f"secretcache/licenses/python-runtime/{package}/copyright" in names
    python_licence = layer.read("secretcache/licenses/python-runtime/LICENSE-python.txt").decode()
    assert "PYTHON SOFTWARE FOUNDATION LICENSE" in python_licence
    sources = layer.read("secretcache/licenses/python-runtime/SOURCES.txt").decode()
    for needle in ("glibc 2.41", "python3.13 3.13.5", "openssl", "LGPL", "Written offer"):
        assert needle in sources, needle
    gcc = layer.read("secretcache/licenses/python-runtime/libgcc-s1/copyright").decode()
    assert "GCC RUNTIME LIBRARY EXCEPTION" in gcc.upper()


def test_stdlib_is_trimmed_and_keeps_what_the_extension_needs(names: set[str]) -> None:
    stdlib = "secretcache/python/lib/python3.13/"
    for kept in (
        "asyncio/__init__.py",
        "ssl.py",
        "email/parser.py",
        "zoneinfo/__init__.py",
        "encodings/utf_8.py",
        "encodings/idna.py",
        "encodings/cp437.py",
        "ctypes/__init__.py",
    ):
        assert stdlib + kept in names, kept
    for dropped in (
        "test/",
        "tkinter/",
        "idlelib/",
        "unittest/",
        "ensurepip/",
        "pydoc_data/",
        "sqlite3/",
        "encodings/big5.py",
        "encodings/cp1250.py",
    ):
        assert not any(n.startswith(stdlib + dropped) for n in names), dropped
    dynload = [n for n in names if n.startswith(stdlib + "lib-dynload/")]
    assert any("/_ssl." in n for n in dynload) and any("/_asyncio." in n for n in dynload)
    assert not any(re.search(r"/(readline|_sqlite3|_test\w*|_curses)\.", n) for n in dynload)


def test_bundled_interpreter_reports_itself(unpacked: Path) -> None:
    done = subprocess.run(
        [
            *bundled(unpacked, ARCHES[HOST_ARCH]),
            "-E",
            "-S",
            "-c",
            "import sys, ssl, platform; print(sys.version.split()[0], sys.prefix, "
            "platform.libc_ver()[1], ssl.OPENSSL_VERSION.split()[1])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONHOME": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr
    version, prefix, glibc, openssl = done.stdout.split()
    assert (version, glibc) == ("3.13.5", "2.41")
    assert Path(prefix).samefile(unpacked / "secretcache" / "python")
    assert openssl.startswith("3.")


def test_the_extension_never_starts_a_child_process() -> None:
    """/proc/self/exe is the bundled loader: a child started with sys.executable would use
    the sandbox's glibc. So secretcache.* must never import subprocess or multiprocessing."""
    forbidden = {"subprocess", "multiprocessing", "concurrent.futures.process"}
    for source in (REPO / "extension" / "secretcache").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules = {node.module or ""}
            else:
                continue
            assert not modules & forbidden, f"{source.name} imports {modules & forbidden}"


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


def test_vendored_sdk_calls_ssm_secrets_manager_kms_and_sts(unpacked: Path, moto_url: str) -> None:
    """The trimmed botocore and the compiled wheels work on the bundled interpreter, started
    as the launcher starts it."""
    machine = ARCHES[HOST_ARCH]
    done = subprocess.run(
        [
            *bundled(unpacked, machine),
            "-E",
            "-S",
            "-c",
            SDK_PROBE,
            str(unpacked),
            f"cp313-{machine}",
        ],
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


def test_launcher_rejects_a_secretcache_python_that_is_not_executable(unpacked: Path) -> None:
    done = run_launcher(
        str(unpacked / "extensions" / "secretcache"),
        {"PATH": "/usr/bin:/bin", "SECRETCACHE_PYTHON": "/nonexistent/python3"},
        unpacked,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1
    assert "SECRETCACHE_PYTHON=/nonexistent/python3" in done.stderr


def test_launcher_starts_the_bundled_python_with_python_variables_ignored(unpacked: Path) -> None:
    """A function's PYTHONHOME would kill an interpreter started without -E."""
    done = run_launcher(
        str(unpacked / "extensions" / "secretcache"),
        {
            "PATH": "/nonexistent",
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9",
            "PYTHONHOME": "/nonexistent",
            "PYTHONPATH": "/nonexistent",
            "PYTHONSAFEPATH": "1",
        },
        unpacked,
    )
    assert done.returncode != 0
    assert "registration failed" in done.stderr, done.stderr


def test_modules_in_the_working_directory_never_shadow_the_extensions_imports(
    unpacked: Path, tmp_path: Path
) -> None:
    """Lambda may start the extension with the function's code as its working directory."""
    for name in ("json", "socket", "secretcache", "runpy"):
        (tmp_path / f"{name}.py").write_text('raise SystemExit("shadowed: imported from cwd")\n')
    done = run_launcher(
        str(unpacked / "extensions" / "secretcache"),
        {"PATH": "/nonexistent", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9"},
        tmp_path,
    )
    assert "shadowed" not in done.stderr, done.stderr
    assert "registration failed" in done.stderr, done.stderr


def test_launcher_of_a_damaged_layer_says_the_interpreter_is_missing(
    unpacked: Path, tmp_path: Path
) -> None:
    opt = tmp_path / "opt"
    (opt / "extensions").mkdir(parents=True)
    shutil.copy2(unpacked / "extensions" / "secretcache", opt / "extensions" / "secretcache")
    done = run_launcher(str(opt / "extensions" / "secretcache"), {"PATH": "/usr/bin:/bin"}, opt)
    assert done.returncode == 1
    assert done.stderr == (
        f"secretcache: the bundled interpreter is missing from {opt}/secretcache/python "
        "(a damaged layer?)\n"
    )


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A stand-in interpreter that reports how the launcher called it."""
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
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
    lines = done.stdout.splitlines()
    assert lines[:4] == ["-E", "-S", "-c", BOOT]
    assert os.path.realpath(lines[4]) == os.path.realpath(unpacked / "secretcache" / "app")
    assert lines[5:] == ["--name", "secretcache"]


def test_launcher_registers_under_its_file_name(
    unpacked: Path, fake_python: Path, tmp_path: Path
) -> None:
    opt = tmp_path / "opt"
    (opt / "extensions").mkdir(parents=True)
    renamed = opt / "extensions" / "my-cache"
    shutil.copy2(unpacked / "extensions" / "secretcache", renamed)
    done = run_launcher(
        str(renamed), {"PATH": "/usr/bin:/bin", "SECRETCACHE_PYTHON": str(fake_python)}, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["--name", "my-cache"]


def test_launcher_rejects_an_exec_prefix_that_is_not_executable(unpacked: Path) -> None:
    done = run_launcher(
        str(unpacked / "extensions" / "secretcache"),
        {"PATH": "/usr/bin:/bin", "SECRETCACHE_EXEC_PREFIX": "/nonexistent/qemu"},
        unpacked,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "secretcache: SECRETCACHE_EXEC_PREFIX=/nonexistent/qemu is not an executable file\n"
    )


@pytest.mark.parametrize("layer_arch", list(ARCHES))
def test_launcher_puts_the_exec_prefix_before_the_bundled_loader_of_either_architecture(
    build_output: str, fake_python: Path, layer_arch: str
) -> None:
    """SECRETCACHE_EXEC_PREFIX (e.g. qemu-aarch64-static, as the arm64 RIE test uses it) gets
    the loader's whole command line; the other-architecture check is left to it."""
    opt = DIST / f"layer-{layer_arch}"
    bundle = opt / "secretcache" / "python"
    (loader,) = (bundle / "lib").glob("ld-linux-*.so.*")
    done = run_launcher(
        str(opt / "extensions" / "secretcache"),
        {"PATH": "/usr/bin:/bin", "SECRETCACHE_EXEC_PREFIX": str(fake_python)},
        Path("/"),
    )
    assert done.returncode == 0, done.stderr
    loader_argv = [str(loader), "--inhibit-cache", "--library-path", f"{bundle}/lib"]
    python_argv = [f"{bundle}/bin/python3.13", "-E", "-S", "-c", BOOT, f"{opt}/secretcache/app"]
    assert done.stdout.splitlines() == [*loader_argv, *python_argv, "--name", "secretcache"]
