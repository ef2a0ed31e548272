"""`sidemesh local apply|get|delete` with VirtualService and DestinationRule, as a user types
them: stored, refused with the field when invalid, and written by the running daemon into the
control plane's registry file, from which the control plane reads them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from netns_kit import Local, needs_root

from sidemesh.local.paths import RuntimePaths
from sidemesh.xds.registry_files import load_snapshot

TRAFFIC = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    runtime = Local(tmp_path_factory.mktemp("sm") / "state")
    try:
        yield runtime
    finally:
        runtime.run("down", check=False)


@needs_root
def test_apply_get_and_the_registry_file(local: Local, tmp_path: Path) -> None:
    manifest = tmp_path / "traffic.yaml"
    manifest.write_text(TRAFFIC)
    applied = local.run("apply", "-f", str(manifest))
    assert applied.stdout.splitlines() == [
        "namespace/shop created",
        "virtualservice.networking.istio.io/reviews created",
        "destinationrule.networking.istio.io/reviews created",
    ]
    assert local.run("get", "vs", "-n", "shop").stdout == "virtualservice/reviews\n"
    listed = yaml.safe_load(local.run("get", "dr", "reviews", "-n", "shop", "-o", "yaml").stdout)
    assert listed["spec"]["host"] == "reviews"

    registry = RuntimePaths(local.state_dir).registry

    def handed_over() -> bool:
        if not registry.is_dir():
            return False
        snapshot = load_snapshot([registry])
        return bool(snapshot.virtual_services) and bool(snapshot.destination_rules)

    local.wait("the daemon writing them into the registry", handed_over)
    [virtual_service] = load_snapshot([registry]).virtual_services
    assert (virtual_service.namespace, virtual_service.name) == ("shop", "reviews")

    deleted = local.run("delete", "vs", "reviews", "-n", "shop").stdout
    assert deleted == 'virtualservice "reviews" deleted\n'
    local.wait("the registry without them", lambda: not load_snapshot([registry]).virtual_services)


@needs_root
def test_an_invalid_one_is_refused_naming_the_field(local: Local, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: bad, namespace: default}\n"
        "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}],"
        " timeout: soon}]}\n"
    )
    refused = local.run("apply", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert 'The VirtualService "bad" is invalid: ' in refused.stderr
    assert "spec.http[0].timeout" in refused.stderr
