"""AwsBackends without AWS: paging of GetParametersByPath."""

from __future__ import annotations

from typing import Any

from secretcache.backends import AwsBackends


class EndlessPath(AwsBackends):
    """A path whose pages never end: every call returns ten more and a NextToken."""

    def __init__(self) -> None:
        super().__init__(max_connections=1, timeouts={"ssm": 1.0})
        self.pages = 0

    async def call(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.pages += 1
        names = [{"Name": f"/p/{self.pages}-{i}"} for i in range(10)]
        return {"Parameters": names, "NextToken": f"t{self.pages}"}


async def test_paging_stops_once_past_the_limit() -> None:
    backends = EndlessPath()
    found = await backends.get_parameters_by_path("/p", True, False, limit=45)
    assert len(found) == 50  # more than the limit, so the caller knows to refuse the path
    assert backends.pages == 5
