"""Each layer in a root with no libc and no Python: only the layer and a static busybox.

x86_64 natively, arm64 through qemu-aarch64-static (called explicitly, no binfmt). This is what
makes the layer independent of the Lambda runtime: AL2's glibc 2.26, AL2023's 2.34, or none.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.support.bare_root import (
    HOST_MACHINE,
    BareRoot,
    enter_command,
    fetch_test_tools,
    make_root,
)
from tools.emulator import LambdaEmulator
from tools.moto_server import MotoServer
from tools.net import free_port

from .conftest import HANDLERS, REPO, SeededAws

MACHINES = ("x86_64", "aarch64")
ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}
ENTER = enter_command()
pytestmark = pytest.mark.skipif(
    ENTER is None, reason="needs chroot inside unshare (root, or user namespaces)"
)

PROBE = """
import ctypes, platform, ssl, sys
sys.path[0:0] = ["/opt/secretcache/lib/cp313-%s", "/opt/secretcache/lib/common"]
import aiohttp, aiohttp._http_parser, aiobotocore.session, botocore.session
import frozenlist._frozenlist, multidict._multidict, propcache._helpers_c, yarl._quoting_c
import asyncio, concurrent.futures, email, json, logging, zoneinfo, decimal, uuid, hashlib
ctx = ssl.create_default_context(cafile="/opt/secretcache/lib/common/botocore/cacert.pem")
assert ctx.verify_mode == ssl.CERT_REQUIRED
assert ctypes.CDLL(None).malloc_trim(0) in (0, 1)
print(sys.version.split()[0], platform.libc_ver()[1], ssl.OPENSSL_VERSION.split()[1],
      platform.machine(), sys.prefix)
"""


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fetch_test_tools(tmp_path_factory.mktemp("test-debs"))


@pytest.fixture(scope="module", params=MACHINES, ids=lambda m: ARCH[m])
def root(
    request: pytest.FixtureRequest,
    layer_zip: Path,
    tools: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> BareRoot:
    machine = request.param
    if machine != HOST_MACHINE and HOST_MACHINE != "x86_64":
        pytest.skip("the x86_64 layer is not emulated on an arm64 host")
    zip_path = REPO / "dist" / f"secretcache-layer-{ARCH[machine]}.zip"
    assert ENTER is not None
    return make_root(tmp_path_factory.mktemp(f"root-{machine}"), zip_path, machine, tools, ENTER)


def test_root_holds_no_libc_loader_or_python_outside_the_layer(root: BareRoot) -> None:
    found = root.files_named("libc.so", "ld-linux", "python")
    assert found, "the layer's own libc and interpreter were not found"
    assert all(path.startswith("opt/secretcache/python/") for path in found), found
    assert not (root.path / "lib").exists() and not (root.path / "usr").exists()


def test_bundled_python_imports_the_sdk_and_every_compiled_module(root: BareRoot) -> None:
    done = root.run(*root.python("-c", PROBE % root.machine))
    assert done.returncode == 0, done.stderr
    version, glibc, openssl, machine, prefix = done.stdout.split()
    assert (version, glibc, machine) == ("3.13.5", "2.41", root.machine)
    assert openssl.startswith("3.")
    assert prefix == "/opt/secretcache/python"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate signed by a test CA: (port, CA file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secretcache test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello over verified TLS"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], folder / "ca.pem"
    server.shutdown()


TLS_PROBE = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2] if len(sys.argv) > 2 else None)
try:
    with urllib.request.urlopen(f"https://localhost:{sys.argv[1]}/", context=ctx, timeout=30) as r:
        print("OK", r.read().decode())
except Exception as exc:
    print("FAILED", type(exc).__name__, exc)
"""


def test_tls_verifies_a_server_against_the_given_ca_and_rejects_it_without(
    root: BareRoot, tls_server: tuple[int, Path]
) -> None:
    port, ca = tls_server
    (root.path / "etc").mkdir(exist_ok=True)
    (root.path / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root.path / "ca.pem").write_bytes(ca.read_bytes())
    trusted = root.run(*root.python("-c", TLS_PROBE, str(port), "/ca.pem"))
    assert trusted.stdout.strip() == "OK hello over verified TLS", trusted.stderr
    untrusted = root.run(*root.python("-c", TLS_PROBE, str(port)))
    assert untrusted.stdout.startswith("FAILED"), untrusted.stdout + untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout


def test_launcher_ignores_the_functions_python_variables(root: BareRoot) -> None:
    """(arm64 under qemu: the launcher with SECRETCACHE_EXEC_PREFIX naming qemu.)"""
    env = {
        "PATH": "/bin",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9",
        "PYTHONHOME": "/nonexistent",
        "PYTHONPATH": "/nonexistent",
        "PYTHONSTARTUP": "/nonexistent",
        "PYTHONWARNINGS": "error",
    }
    done = root.run(*root.extension(), env=env)
    assert done.returncode != 0
    assert "registration failed" in done.stderr, done.stderr
    assert "Fatal Python error" not in done.stderr


def test_a_layer_in_a_sandbox_of_the_other_architecture_says_so(
    root: BareRoot, tools: dict[str, Path]
) -> None:
    """The sandbox has the other architecture's system loader and not the layer's own. The
    shell is this host's busybox: for the arm64 layer on an x86_64 host that is the real case."""
    other = {"x86_64": "lib/ld-linux-aarch64.so.1", "aarch64": "lib64/ld-linux-x86-64.so.2"}
    host_busybox = {"x86_64": "busybox-amd64", "aarch64": "busybox-arm64"}[HOST_MACHINE]
    fake = root.path / other[root.machine]
    host_sh = root.path / "host-bin" / "sh"
    fake.parent.mkdir()
    host_sh.parent.mkdir()
    fake.write_bytes(b"")
    shutil.copyfile(tools[host_busybox], host_sh)
    host_sh.chmod(0o755)
    try:
        done = root.run(
            *root.enter,
            str(root.path),
            "/host-bin/sh",
            "/opt/extensions/secretcache",
            env={"PATH": "/bin"},
        )
    finally:
        shutil.rmtree(fake.parent)
        shutil.rmtree(host_sh.parent)
    assert done.returncode == 1
    arch = ARCH[root.machine]
    assert done.stderr.strip().startswith(
        f"secretcache: this is the {arch} layer but the function runs on the other architecture"
    ), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(
    HOST_MACHINE != "x86_64" or os.path.exists("/lib/ld-linux-aarch64.so.1"),
    reason="needs an x86_64 host without an arm64 loader",
)
def test_the_arm64_layer_on_this_x86_64_machine_says_so(layer_zip: Path) -> None:
    launcher = REPO / "dist" / "layer-arm64" / "extensions" / "secretcache"
    done = subprocess.run(
        [str(launcher)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9"},
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        "secretcache: this is the arm64 layer but the function runs on the other architecture"
    ), done.stderr


def test_full_lifecycle_on_the_emulator_with_reads(
    root: BareRoot,
    moto_server: MotoServer,
    seeded_aws: SeededAws,
    tmp_path: Path,
) -> None:
    """Register, INIT, reads of every kind (SM, SSM SecureString, a label, KMS), a warm hit,
    shutdown: the extension in the bare root, the (Python) handler on the host."""
    shim_opt = tmp_path / "opt"
    (shim_opt / "extensions").mkdir(parents=True)
    shim = shim_opt / "extensions" / "secretcache"
    quoted = " ".join(f"'{a}'" for a in root.extension())
    shim.write_text(f"#!/bin/sh\nexec {quoted}\n")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    os.symlink(root.path / "opt" / "python", shim_opt / "python")
    slow = 120.0 if root.emulated else 30.0
    env = {
        **seeded_aws.function_env(),
        "SECRETCACHE_PYTHON": None,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(free_port()),
    }
    with LambdaEmulator(
        shim_opt,
        HANDLERS,
        "urllib_handler.handler",
        env,
        endpoint_url=moto_server.url,
        init_timeout=slow,
        function_timeout=slow,
        shutdown_timeout=slow if root.emulated else 5.0,
    ) as emu:
        emu.init()
        cold = emu.invoke({})
        assert cold.ok, cold.error
        assert cold.payload["init"] == cold.payload["invoke"] == seeded_aws.expected()
        warm = emu.invoke({"action": "secret"})
        assert warm.payload == {"secret": seeded_aws.secret_value}
        report = emu.shutdown()
        assert report.extensions["secretcache"].exit_code == 0
