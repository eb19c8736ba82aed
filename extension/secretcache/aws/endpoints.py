"""Where each service's requests go: AWS_ENDPOINT_URL* overrides, else the partition's hostname.

The hostnames follow the services' endpoint rule sets in botocore (FIPS, dual-stack and their
per-partition exceptions); tests/unit/test_aws_endpoints.py resolves every region of every
partition with botocore and with this module and requires the same URL or the same refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


class EndpointResolutionError(Exception):
    """The configuration asks for an endpoint the service does not have (named as botocore's)."""


@dataclass(frozen=True)
class Partition:
    name: str
    region_regex: str
    dns_suffix: str
    dual_stack_dns_suffix: str
    #: Regions listed explicitly in botocore's partitions.json that the regex does not match.
    extra_regions: tuple[str, ...] = ()


# From botocore's partitions.json; a unit test compares this table with that file.
PARTITIONS = (
    Partition(
        "aws",
        r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$",
        "amazonaws.com",
        "api.aws",
        ("aws-global",),
    ),
    Partition(
        "aws-cn",
        r"^cn\-\w+\-\d+$",
        "amazonaws.com.cn",
        "api.amazonwebservices.com.cn",
        ("aws-cn-global",),
    ),
    Partition(
        "aws-eusc",
        r"^eusc\-(de)\-\w+\-\d+$",
        "amazonaws.eu",
        "api.amazonwebservices.eu",
        ("aws-eusc-global",),
    ),
    Partition(
        "aws-iso", r"^us\-iso\-\w+\-\d+$", "c2s.ic.gov", "api.aws.ic.gov", ("aws-iso-global",)
    ),
    Partition(
        "aws-iso-b",
        r"^us\-isob\-\w+\-\d+$",
        "sc2s.sgov.gov",
        "api.aws.scloud",
        ("aws-iso-b-global",),
    ),
    Partition(
        "aws-iso-e",
        r"^eu\-isoe\-\w+\-\d+$",
        "cloud.adc-e.uk",
        "api.cloud-aws.adc-e.uk",
        ("aws-iso-e-global",),
    ),
    Partition(
        "aws-iso-f",
        r"^us\-isof\-\w+\-\d+$",
        "csp.hci.ic.gov",
        "api.aws.hci.ic.gov",
        ("aws-iso-f-global",),
    ),
    Partition(
        "aws-us-gov",
        r"^us\-gov\-\w+\-\d+$",
        "amazonaws.com",
        "api.aws",
        ("aws-us-gov-global",),
    ),
)

#: The environment suffix of each service's AWS_ENDPOINT_URL_<SERVICE> (its service id).
ENDPOINT_VARIABLES = {
    "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "ssm": "AWS_ENDPOINT_URL_SSM",
    "kms": "AWS_ENDPOINT_URL_KMS",
    "sts": "AWS_ENDPOINT_URL_STS",
}
_HOST_LABEL = re.compile(r"^(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")


def partition_of(region: str) -> Partition:
    """The partition a region belongs to; unknown regions fall in "aws", as the SDK decides."""
    for partition in PARTITIONS:
        if region in partition.extra_regions:
            return partition
    for partition in PARTITIONS:
        if re.match(partition.region_regex, region):
            return partition
    return PARTITIONS[0]


def _flag(env: Mapping[str, str], name: str) -> bool:
    return (env.get(name) or "").strip().lower() == "true"


def configured_endpoint(service: str, env: Mapping[str, str]) -> str | None:
    """AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL, unless told to ignore both."""
    if _flag(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        return None
    for name in (ENDPOINT_VARIABLES[service], "AWS_ENDPOINT_URL"):
        value = (env.get(name) or "").strip()
        if value:
            return value
    return None


def resolve_endpoint(service: str, region: str, env: Mapping[str, str]) -> str:
    """The endpoint URL for ``service`` in ``region`` (no trailing path beyond the override's)."""
    fips = _flag(env, "AWS_USE_FIPS_ENDPOINT")
    dual_stack = _flag(env, "AWS_USE_DUALSTACK_ENDPOINT")
    custom = configured_endpoint(service, env)
    if custom is not None:
        if fips:
            raise EndpointResolutionError("FIPS and custom endpoint are not supported")
        if dual_stack:
            raise EndpointResolutionError("Dualstack and custom endpoint are not supported")
        return custom
    if not _HOST_LABEL.match(region):
        raise EndpointResolutionError("the region is not a valid host label")
    partition = partition_of(region)
    name = partition.name
    if fips and dual_stack:
        if service == "secretsmanager" and name in ("aws", "aws-us-gov"):
            return f"https://secretsmanager-fips.{region}.amazonaws.com"
        return f"https://{service}-fips.{region}.{partition.dual_stack_dns_suffix}"
    if fips:
        if service in ("ssm", "sts") and name == "aws-us-gov":
            return f"https://{service}.{region}.amazonaws.com"
        return f"https://{service}-fips.{region}.{partition.dns_suffix}"
    if dual_stack:
        if service == "secretsmanager" and name in ("aws", "aws-us-gov"):
            return f"https://secretsmanager.{region}.amazonaws.com"
        if service == "secretsmanager" and name == "aws-cn":
            return f"https://secretsmanager.{region}.amazonaws.com.cn"
        return f"https://{service}.{region}.{partition.dual_stack_dns_suffix}"
    if service == "sts" and region == "aws-global":
        return "https://sts.amazonaws.com"
    return f"https://{service}.{region}.{partition.dns_suffix}"
