"""The lean client's endpoints are the ones botocore's rule sets resolve, region by region."""

from __future__ import annotations

import pytest
from botocore.endpoint_provider import EndpointProvider
from botocore.exceptions import EndpointResolutionError as BotocoreEndpointError
from botocore.loaders import create_loader
from secretcache.aws.endpoints import (
    PARTITIONS,
    EndpointResolutionError,
    partition_of,
    resolve_endpoint,
)

SERVICES = ("secretsmanager", "ssm", "kms", "sts")
_loader = create_loader()
_partitions = _loader.load_data("partitions")


def _all_regions() -> list[str]:
    regions = []
    for partition in _partitions["partitions"]:
        regions.extend(partition["regions"])
    # Regions no partition lists yet: the regexes (and the "aws" default) decide.
    return [*regions, "us-future-9", "cn-future-1", "us-gov-future-1", "xx-nowhere-1"]


def _botocore(service: str, region: str, fips: bool, dual: bool, endpoint: str | None) -> str:
    ruleset = _loader.load_service_model(service, "endpoint-rule-set-1")
    provider = EndpointProvider(ruleset, _partitions)
    params = {"Region": region, "UseFIPS": fips, "UseDualStack": dual}
    if endpoint is not None:
        params["Endpoint"] = endpoint
    try:
        return str(provider.resolve_endpoint(**params).url)
    except BotocoreEndpointError:
        return "error"


def _ours(service: str, region: str, fips: bool, dual: bool, endpoint: str | None) -> str:
    env = {"AWS_USE_FIPS_ENDPOINT": str(fips).lower(), "AWS_USE_DUALSTACK_ENDPOINT": str(dual)}
    if endpoint is not None:
        env["AWS_ENDPOINT_URL"] = endpoint
    try:
        return resolve_endpoint(service, region, env)
    except EndpointResolutionError:
        return "error"


@pytest.mark.parametrize("service", SERVICES)
def test_every_region_fips_and_dual_stack_resolve_as_botocore_does(service: str) -> None:
    mismatches = []
    for region in _all_regions():
        for fips in (False, True):
            for dual in (False, True):
                want = _botocore(service, region, fips, dual, None)
                got = _ours(service, region, fips, dual, None)
                if want != got:
                    mismatches.append((region, fips, dual, want, got))
    assert mismatches == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_custom_endpoint_refuses_fips_and_dual_stack_as_botocore_does(service: str) -> None:
    for fips in (False, True):
        for dual in (False, True):
            want = _botocore(service, "us-east-1", fips, dual, "http://127.0.0.1:5000")
            assert _ours(service, "us-east-1", fips, dual, "http://127.0.0.1:5000") == want


def test_the_partition_table_matches_botocores_partitions_json() -> None:
    theirs = {p["id"]: p for p in _partitions["partitions"]}
    assert sorted(theirs) == sorted(p.name for p in PARTITIONS)
    for ours in PARTITIONS:
        data = theirs[ours.name]
        assert ours.region_regex == data["regionRegex"]
        assert ours.dns_suffix == data["outputs"]["dnsSuffix"]
        assert ours.dual_stack_dns_suffix == data["outputs"]["dualStackDnsSuffix"]
        for region in data["regions"]:
            assert partition_of(region).name == ours.name, region


def test_the_service_variable_wins_over_the_global_one_and_can_be_ignored() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_SSM": "http://127.0.0.1:2"}
    assert resolve_endpoint("ssm", "eu-west-1", env) == "http://127.0.0.1:2"
    assert resolve_endpoint("kms", "eu-west-1", env) == "http://127.0.0.1:1"
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert resolve_endpoint("ssm", "eu-west-1", ignored) == "https://ssm.eu-west-1.amazonaws.com"
