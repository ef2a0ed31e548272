"""A candidate that cannot reach its Lease says so once per distinct failure (a warning with
the reason), not once every retry period."""

from __future__ import annotations

import logging

import pytest
from cluster_emulator import ApiServer
from lightkube import AsyncClient

from sidemesh.kube.leader import LeaderElector
from sidemesh.kube.metrics import KubeMetrics


async def test_each_distinct_failure_is_one_warning(
    api: ApiServer, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    elector = LeaderElector(client, name="lease", namespace="istio-system", identity="a",
                            metrics=KubeMetrics())  # fmt: skip
    api.unavailable = True
    with caplog.at_level(logging.DEBUG, logger="sidemesh.kube.leader"):
        assert not await elector._round()
        assert not await elector._round()
        assert not await elector._round()
        api.unavailable = False
        assert await elector._round()
        api.unavailable = True
        assert not await elector._round()
    levels = [(r.levelname, "cannot take or renew it" in r.getMessage()) for r in caplog.records]
    assert levels == [("WARNING", True), ("DEBUG", True), ("DEBUG", True), ("WARNING", True)]
    assert "503" in caplog.records[0].getMessage()
