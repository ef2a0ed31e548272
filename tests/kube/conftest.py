"""Fixtures: an in-memory Kubernetes API (kmock, extended) and a lightkube client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import yaml
from cluster_emulator import ApiServer
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    async with ApiServer() as server, kmock.Server(server):
        yield server


@pytest.fixture
async def client(api: ApiServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        config=KubeConfig.from_one(cluster=Cluster(server=str(api.url)), user=User()),
        field_manager="sidemesh-test",
    ) as c:
        yield c


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file whose only context points at the in-memory API."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "mem", "cluster": {"server": str(api.url)}}],
                "users": [{"name": "mem", "user": {}}],
                "contexts": [{"name": "mem", "context": {"cluster": "mem", "user": "mem"}}],
                "current-context": "mem",
            }
        )
    )
    return path
