"""What the traffic demo's REGISTRY_ONLY step applies and runs, checked without a mesh: its
ServiceEntry and MeshConfig pass the validation every door applies, and its two programs (the
external server, the client's probe) talk to each other over loopback as they do in the demo."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import kubernetes_validate
import pytest
import yaml

from sidemesh.api import networking
from sidemesh.demo import traffic_script as ts
from sidemesh.local.mesh_config import is_mesh_configmap, mesh_problem


def test_the_service_entry_is_valid_and_names_the_external_server() -> None:
    [entry] = ts.service_entry("10.244.0.1")
    resource = networking.validate(entry)
    assert resource.spec.hosts == (ts.EXTERNAL_HOST,)
    assert entry["spec"]["location"] == "MESH_EXTERNAL"
    assert entry["spec"]["endpoints"] == [{"address": "10.244.0.1"}]


@pytest.mark.parametrize(("revision", "name"), [("asm-1-20", "istio-asm-1-20"),
                                                ("default", "istio")])  # fmt: skip
def test_the_mesh_config_is_the_revisions_configmap(revision: str, name: str) -> None:
    [configmap] = ts.mesh_config(revision, "REGISTRY_ONLY")
    assert configmap["metadata"] == {"name": name, "namespace": "istio-system"}
    kubernetes_validate.validate(configmap, kubernetes_validate.utils.latest_version(), strict=True)
    assert is_mesh_configmap(configmap) and mesh_problem(configmap) is None
    mesh = yaml.safe_load(configmap["data"]["mesh"])
    assert mesh == {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}


def test_outcomes_carry_both_statuses() -> None:
    outcomes = ts.Outcomes(registry_only_refused=True, registry_only_unknown_status=502,
                           service_entry_status=200)  # fmt: skip
    shown = outcomes.as_dict()
    assert (shown["registry_only_refused"], shown["registry_only_unknown_status"],
            shown["service_entry_status"]) == (True, 502, 200)  # fmt: skip
    assert "registry_only_refused" not in shown["not_measured"]


def test_parse_probes_reads_the_last_json_line() -> None:
    output = 'noise\n{"probes": [{"status": 502}, {"status": 200, "served_by": "external"}]}\n'
    unknown, known = ts.parse_probes(output) or []
    assert unknown == ts.Probe(status=502) and not unknown.served_externally
    assert known.served_externally
    assert ts.parse_probes("no json here") is None


@pytest.fixture
def external_server() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", ts.EXTERNAL_APP, "127.0.0.1", str(port)])
    try:
        for _ in range(200):  # until it accepts a connection (bounded)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("the external server exited")
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_probe_reaches_the_external_server_under_both_names(external_server: int) -> None:
    url = f"http://127.0.0.1:{external_server}/"
    result = subprocess.run([sys.executable, "-c", ts.PROBE, url, ts.UNKNOWN_HOST,
                             ts.EXTERNAL_HOST], capture_output=True, text=True, timeout=60,
                            check=True)  # fmt: skip
    probes = ts.parse_probes(result.stdout)
    assert probes is not None and [p.served_externally for p in probes] == [True, True]
    closed = subprocess.run([sys.executable, "-c", ts.PROBE, "http://127.0.0.1:1/", "x"],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    [refused] = ts.parse_probes(closed.stdout) or []
    assert refused.status == 0 and refused.error is not None
    assert json.loads(closed.stdout)["probes"][0]["status"] == 0
