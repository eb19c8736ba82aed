"""The fleet simulator against real extension processes behind a TPS-limited proxy.

The light version (12 processes, 20 s) runs in the suite; `./build.sh fleet --validate` runs the
full one (30 processes, 40 s by default). Both compare the same figures within the same
tolerances (fleet/validate.py TOLERANCES).
"""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config as BotoConfig

from fleet.validate import Scenario, validate
from tests.support.fault_proxy import FaultProxy
from tools.moto_server import REGION, MotoServer


def test_proxy_rate_limit_throttles_above_the_rate(moto_server: MotoServer) -> None:
    proxy = FaultProxy(moto_server.port).start()
    try:
        ssm = boto3.client(
            "ssm",
            region_name=REGION,
            endpoint_url=proxy.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=BotoConfig(retries={"total_max_attempts": 1}),
        )
        moto_server.client("ssm").put_parameter(Name="/rl/p", Value="v", Type="String")
        proxy.set_rate_limit(2.0, target_prefix="AmazonSSM.")
        codes = []
        for _ in range(12):
            try:
                ssm.get_parameter(Name="/rl/p")
                codes.append("ok")
            except ssm.exceptions.ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
        # A full bucket of 2, then about 2 a second while the loop runs: most are throttled.
        assert codes[:2] == ["ok", "ok"]
        assert codes.count("ThrottlingException") >= 6
        assert sum(c.fault == "rate" for c in proxy.calls()) == codes.count("ThrottlingException")
        proxy.clear()
        ssm.get_parameter(Name="/rl/p")  # clear() lifts the limit
    finally:
        proxy.stop()


@pytest.mark.slow
def test_simulator_predicts_real_processes() -> None:
    comparison = validate(Scenario(processes=12, seconds=20.0, ssm_tps=5.0))
    print("\n" + comparison.text())
    assert comparison.measured.values["ssm throttled"] > 0, "the scenario must throttle"
    assert comparison.measured.values["reads other errors"] == 0
    failed = [row for row in comparison.rows() if not row[4]]
    assert not failed, comparison.text()
