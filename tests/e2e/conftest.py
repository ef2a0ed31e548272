"""The end-to-end tier: one real kube-apiserver (with etcd and kube-controller-manager) per test
run, found through $KUBEBUILDER_ASSETS (the envtest convention; scripts/test.sh sets it from
../shared/k8s). In CI a missing testbed fails the run; elsewhere the tier skips, saying why."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from e2e_kit import Cluster, ControlPlane, free_port

from sidemesh.kube.testbed import TestbedError, find_assets, start_testbed

_namespaces = itertools.count(1)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        assets = find_assets()
    except TestbedError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the end-to-end tier must run in CI: {exc}")
        pytest.skip(f"no real kube-apiserver: {exc}")
    testbed = start_testbed(tmp_path_factory.mktemp("testbed"), assets)
    try:
        yield Cluster(testbed)
    finally:
        testbed.stop()


@pytest.fixture(scope="session")
def control_plane(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """Revision `e2e-1`, installed and running for the whole run (tests must not stop it)."""
    plane = ControlPlane(
        cluster, "e2e-1", tmp_path_factory.mktemp("cp-e2e-1"), webhook_port=free_port()
    )
    plane.install()
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    name = f"e2e-{next(_namespaces)}-{request.node.name[:30].lower()}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")[:63]
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
