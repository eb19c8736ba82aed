"""template.yaml: `sam validate --lint` passes, `sam build` uses the built layer, the IAM policy
names exactly the three resources, and (only where a Docker engine answers) `sam local invoke`
runs the example function with the layer against moto.

aws-sam-cli lives in its own virtual environment (.venv-sam, pinned by requirements-sam.txt),
created by ``./build.sh sam-setup`` on first use (about 25 s).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.moto_server import MotoServer

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
SAM = REPO / ".venv-sam" / "bin" / "sam"

sys.path.insert(0, str(REPO / "layer"))
import pycompile  # noqa: E402  (layer/ is not a package)


def sam_env() -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0"}


@pytest.fixture(scope="module")
def sam() -> Path:
    done = subprocess.run(
        [str(REPO / "build.sh"), "sam-setup"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"./build.sh sam-setup failed:\n{done.stderr[-4000:]}"
    return SAM


class CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation's short-form tags as their long form (!Sub x ->
    {"Fn::Sub": x}), so a loaded template can be dumped back as JSON."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node)
    else:
        value = loader.construct_mapping(node)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def test_sam_validate_lint_passes(sam: Path) -> None:
    done = subprocess.run(
        [str(REPO / "build.sh"), "sam-validate"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=sam_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is a valid SAM Template" in done.stdout + done.stderr


RUNTIME_FAMILIES = (
    "python3.",
    "nodejs",
    "java",
    "dotnet",
    "ruby",
    "provided.al2023",
    "provided.al2",
)
LAYERS = {"SecretcacheLayerX86": "x86_64", "SecretcacheLayerArm64": "arm64"}
FUNCTIONS = {
    "ExampleFunction": ("python3.12", "examples/"),
    "ExampleNodeFunction": ("nodejs22.x", "examples/node/"),
    "ExampleShellFunction": ("provided.al2023", "examples/shell/"),
}


@pytest.mark.parametrize(("name", "arch"), LAYERS.items())
def test_one_layer_per_architecture_for_every_runtime_family(
    template: dict[str, Any], name: str, arch: str
) -> None:
    layer = template["Resources"][name]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    props = layer["Properties"]
    assert props["CompatibleArchitectures"] == [arch]
    assert props["ContentUri"].rstrip("/") == f"dist/layer-{arch}"
    runtimes = props["CompatibleRuntimes"]
    assert len(runtimes) <= 15  # Lambda's limit
    for family in RUNTIME_FAMILIES:
        assert any(r.startswith(family) for r in runtimes), family
    assert {"python3.10", "python3.13", "nodejs22.x", "java21", "provided.al2"} <= set(runtimes)
    assert props["LicenseInfo"] == "Apache-2.0"


def test_functions_get_the_layer_of_their_architecture(template: dict[str, Any]) -> None:
    globals_ = template["Globals"]["Function"]
    assert globals_["Architectures"] == [{"Ref": "Architecture"}]
    assert globals_["Layers"] == [
        {"Fn::If": ["IsArm64", {"Ref": "SecretcacheLayerArm64"}, {"Ref": "SecretcacheLayerX86"}]}
    ]
    assert template["Conditions"]["IsArm64"] == {"Fn::Equals": [{"Ref": "Architecture"}, "arm64"]}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_example_functions_in_three_languages(template: dict[str, Any], name: str) -> None:
    props = template["Resources"][name]["Properties"]
    runtime, code = FUNCTIONS[name]
    assert (props["Runtime"], props["CodeUri"]) == (runtime, code)
    assert (REPO / code).is_dir()
    assert props["Policies"] == [{"Ref": "ReadPolicy"}]


def test_read_policy_grants_exactly_the_three_reads_on_named_resources(
    template: dict[str, Any],
) -> None:
    policy = template["Resources"]["ReadPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    granted = {s["Action"]: s["Resource"] for s in statements}
    assert granted == {
        "secretsmanager:GetSecretValue": {"Ref": "SecretArn"},
        "ssm:GetParameter": {
            "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
            ":parameter${ParameterName}"
        },
        "kms:Decrypt": {"Ref": "KmsKeyArn"},
    }
    assert all(s["Effect"] == "Allow" for s in statements)
    assert "*" not in json.dumps(statements)


def test_functions_are_configured_through_the_extensions_variables(
    template: dict[str, Any],
) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    for name in (
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
        "SECRETS_MANAGER_TTL",
        "SSM_PARAMETER_STORE_TTL",
        "SECRETCACHE_KMS_TTL",
        "SECRET_ID",
        "PARAMETER_NAME",
    ):
        assert name in variables


def test_sam_build_takes_the_built_layer_tree(sam: Path, tmp_path: Path) -> None:
    """`sam build` copies the examples and points each layer at its dist/layer-<arch>/."""
    done = subprocess.run(
        [str(REPO / "build.sh"), "layer"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    python312 = pycompile.find_interpreter("3.12")
    if python312 is None:
        pytest.skip("sam build needs python3.12 on PATH for the example function")
    env = sam_env()
    env["PATH"] = f"{python312.parent}{os.pathsep}{env['PATH']}"
    build_dir = tmp_path / "sam-build"
    done = subprocess.run(
        [
            str(sam),
            "build",
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "sam-cache"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    built = yaml.load((build_dir / "template.yaml").read_text(), Loader=CfnLoader)
    for name, arch in LAYERS.items():
        content = build_dir / built["Resources"][name]["Properties"]["ContentUri"]
        assert (content / "extensions" / "secretcache").stat().st_mode & 0o111
        assert (content / "secretcache" / "python" / "bin" / "python3.13").stat().st_mode & 0o111
        loader = {"x86_64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}[arch]
        assert (content / "secretcache" / "python" / "lib" / loader).stat().st_mode & 0o111
        assert (content / "python" / "secretcache_client" / "__init__.py").is_file()
    for name, entry in (
        ("ExampleFunction", "app.py"),
        ("ExampleNodeFunction", "index.mjs"),
        ("ExampleShellFunction", "bootstrap"),
    ):
        code = build_dir / built["Resources"][name]["Properties"]["CodeUri"]
        assert (code / entry).is_file(), name
    assert (code / "bootstrap").stat().st_mode & 0o111


# --------------------------------------------------------------------------- sam local invoke


def docker_answers() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info` failed: {reason})"
    return None


@pytest.fixture
def moto_url(moto_server: MotoServer) -> str:
    return moto_server.url


@pytest.mark.slow
def test_sam_local_invoke_runs_the_example_with_the_layer(
    sam: Path, tmp_path: Path, moto_url: str
) -> None:
    reason = docker_answers()
    if reason is not None:
        pytest.skip(reason)
    import boto3

    done = subprocess.run(
        [str(REPO / "build.sh"), "layer"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]

    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    aws = {
        "region_name": "us-east-1",
        "endpoint_url": moto_url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    secret = boto3.client("secretsmanager", **aws).create_secret(
        Name="sam-local/secret", SecretString="sam-local-secret-value"
    )
    boto3.client("ssm", **aws).put_parameter(
        Name="/sam-local/param", Value="sam-local-param-value", Type="SecureString"
    )
    kms = boto3.client("kms", **aws)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"sam-local-kms-value")["CiphertextBlob"]

    # A copy of the template whose function also names AWS_ENDPOINT_URL (sam local passes only
    # variables the template declares), with absolute paths.
    tmpl = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    for name, arch in LAYERS.items():
        tmpl["Resources"][name]["Properties"]["ContentUri"] = str(REPO / "dist" / f"layer-{arch}")
    fn = tmpl["Resources"]["ExampleFunction"]["Properties"]
    fn["CodeUri"] = str(REPO / "examples")
    tmpl["Globals"]["Function"]["Environment"]["Variables"]["AWS_ENDPOINT_URL"] = moto_url
    local_template = tmp_path / "template.json"
    local_template.write_text(json.dumps(tmpl, indent=1))

    overrides = {
        "SecretArn": secret["ARN"],
        "ParameterName": "/sam-local/param",
        "KmsKeyArn": key,
        "KmsCiphertext": base64.b64encode(blob).decode(),
        "Architecture": "x86_64" if os.uname().machine == "x86_64" else "arm64",
    }
    done = subprocess.run(
        [
            str(sam),
            "local",
            "invoke",
            "ExampleFunction",
            "--template-file",
            str(local_template),
            "--docker-network",
            "host",
            "--region",
            "us-east-1",
            "--event",
            "-",
            "--parameter-overrides",
            *[f"ParameterKey={k},ParameterValue={v}" for k, v in overrides.items()],
        ],
        input="{}",
        capture_output=True,
        text=True,
        timeout=600,
        env={**sam_env(), **creds},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["phase"] == "invoke"
    assert set(result) >= {"secret", "secure_string", "kms_plaintext"}
    output = done.stdout + done.stderr
    for value in ("sam-local-secret-value", "sam-local-param-value", "sam-local-kms-value"):
        assert value not in output
