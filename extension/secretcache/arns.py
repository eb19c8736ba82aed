"""ARNs in read requests: the role a read assumes (`roleArn`) and the region a resource ARN names.

A secret id, parameter name or KMS key id may be the full ARN of another region or partition;
it is then read from that region's endpoint, signed for that region. The region in an ARN picks
a host name, so it is checked strictly here before anything uses it: it must have a region's
shape, belong to a partition we know (from the endpoints table), and that partition must be the
ARN's own. Pure functions, no I/O; errors are `BadRequest` naming the problem (never the value
beyond the ARN's own fields, which are not secrets).
"""

from __future__ import annotations

import re

from .aws.endpoints import PARTITIONS
from .errors import BadRequest

#: The Secrets Manager Agent's rule for `roleArn` (ASCII only: IAM role names are ASCII).
ROLE_ARN = re.compile(r"arn:[\w-]+:iam::\d{12}:role/[\w+=,.@/-]+", re.ASCII)
ROLE_ARN_MESSAGE = "invalid roleArn format, expected arn:<partition>:iam::<account>:role/<name>"
#: What any region looks like (us-east-1, us-gov-west-1, eusc-de-east-1); the partition table's
#: regular expressions then decide which partition it is in.
_REGION_SHAPE = re.compile(r"[a-z]{2,4}(-[a-z]{1,16}){1,3}-\d{1,2}", re.ASCII)
_PARTITION_SHAPE = re.compile(r"aws(-[a-z]{1,8}){0,2}", re.ASCII)
_PARTITION_NAMES = frozenset(p.name for p in PARTITIONS)


def validate_role_arn(value: str) -> str:
    """The role ARN unchanged, or BadRequest with the Agent's message."""
    if not ROLE_ARN.fullmatch(value):
        raise BadRequest(ROLE_ARN_MESSAGE, error_type="InvalidRoleArn")
    return value


def partition_of_region(region: str) -> str | None:
    """The partition whose region pattern `region` matches; None for no known partition.

    Unlike the endpoint resolver (which sends an unknown region to "aws", as the SDK does), an
    ARN's region must belong to a partition we know.
    """
    if not _REGION_SHAPE.fullmatch(region):
        return None
    for partition in PARTITIONS:
        if re.match(partition.region_regex, region):
            return partition.name
    return None


def arn_region(identifier: str, service: str) -> str | None:
    """The region a full ARN of `service` names (validated), or None when `identifier` is not one.

    Anything that is not `arn:<partition>:<service>:<region>:...` (a name, a partial ARN of
    another service, an ARN without a region) is None: it goes to the function's own region as
    before. An ARN of `service` whose region or partition is wrong is BadRequest.
    """
    if not identifier.startswith("arn:"):
        return None
    parts = identifier.split(":", 5)
    if len(parts) < 6 or parts[2] != service or not parts[3]:
        return None
    partition, region = parts[1], parts[3]
    shown = f"{service} ARN"
    if not _PARTITION_SHAPE.fullmatch(partition) or partition not in _PARTITION_NAMES:
        raise BadRequest(
            f"the {shown} names an unknown partition {partition[:32]!r}", error_type="InvalidArn"
        )
    region_partition = partition_of_region(region)
    if region_partition is None:
        raise BadRequest(
            f"the {shown} names {region[:32]!r}, which is not an AWS region",
            error_type="InvalidArn",
        )
    if region_partition != partition:
        raise BadRequest(
            f"the {shown} names region {region} of partition {region_partition}, "
            f"but partition {partition}",
            error_type="InvalidArn",
        )
    return region
