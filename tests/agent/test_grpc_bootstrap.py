"""`sidemesh agent grpc-bootstrap`: the file a proxyless gRPC app reads (GRPC_XDS_BOOTSTRAP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidemesh.agent.grpc_bootstrap import GrpcBootstrapError, GrpcIdentity, grpc_bootstrap
from sidemesh.cli.agent import agent

IDENTITY = GrpcIdentity(
    pod_name="echo-7d9f", namespace="grpc", instance_ip="10.0.0.7", domain="grpc.svc.cluster.local"
)


def test_bootstrap_names_the_discovery_and_the_node() -> None:
    document = json.loads(
        grpc_bootstrap(IDENTITY, discovery_address="istiod.istio-system.svc:15010")
    )
    (server,) = document["xds_servers"]
    assert server["server_uri"] == "dns:///istiod.istio-system.svc:15010"
    assert server["channel_creds"] == [{"type": "insecure"}]
    assert server["server_features"] == ["xds_v3"]
    assert document["node"]["id"] == "sidecar~10.0.0.7~echo-7d9f.grpc~grpc.svc.cluster.local"
    assert document["node"]["metadata"]["GENERATOR"] == "grpc"


@pytest.mark.parametrize(
    ("field", "value"),
    [("pod_name", ""), ("namespace", "a~b"), ("instance_ip", "10.0.0.1 evil"), ("domain", "x/y")],
)
def test_values_that_could_forge_a_node_id_are_refused(field: str, value: str) -> None:
    fields = {"pod_name": "p", "namespace": "n", "instance_ip": "10.0.0.1", "domain": "d"}
    with pytest.raises(GrpcBootstrapError, match=field):
        GrpcIdentity(**{**fields, field: value})


def test_command_writes_a_readable_file(tmp_path: Path) -> None:
    output = tmp_path / "data" / "bootstrap.json"
    result = CliRunner().invoke(
        agent,
        ["grpc-bootstrap", "--output", str(output),
         "--discovery-address", "istiod.istio-system.svc:15010"],
        env={"POD_NAME": "echo-1", "POD_NAMESPACE": "grpc", "INSTANCE_IP": "10.1.2.3"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert output.stat().st_mode & 0o777 == 0o644
    node = json.loads(output.read_text())["node"]
    assert node["id"] == "sidecar~10.1.2.3~echo-1.grpc~grpc.svc.cluster.local"


def test_command_without_pod_identity_fails_closed(tmp_path: Path) -> None:
    output = tmp_path / "bootstrap.json"
    result = CliRunner().invoke(
        agent,
        ["grpc-bootstrap", "--output", str(output), "--discovery-address", "x:15010"],
        env={"POD_NAME": "", "POD_NAMESPACE": "grpc", "INSTANCE_IP": "10.1.2.3"},
    )
    assert result.exit_code == 2
    assert "pod_name" in result.output
    assert not output.exists()
