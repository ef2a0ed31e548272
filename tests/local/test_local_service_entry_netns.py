"""ServiceEntry and `outboundTrafficPolicy: REGISTRY_ONLY` on the local runtime, as a user sets
them: `sidemesh local apply` of a ServiceEntry and of the revision's MeshConfig ConfigMap
(`istio-canary` in istio-system, key `mesh`), through the real webhook, capture and Envoy.

The "external" server is a pod outside the mesh (a namespace without injection, no Service), so
the mesh knows it only through the ServiceEntry. The client asks it under the entry's host and
under a host nothing declares: under REGISTRY_ONLY the client's own sidecar refuses the second
(Envoy's `block_all` route: 502) and routes the first. The control plane re-reads its mesh file:
its pod is the same one throughout. Needs root, `ip` and `iptables`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from netns_kit import PYTHON, Local, fresh_runtime, needs_root, served_directory

pytestmark = needs_root

KNOWN = "api.external.example"
UNKNOWN = "unknown.example"
PORT = 9080
PROBE = """\
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
statuses = []
for host in sys.argv[2:]:
    request = urllib.request.Request(sys.argv[1], headers={"Host": host})
    try:
        with opener.open(request, timeout=10) as reply:
            statuses.append(reply.status)
    except urllib.error.HTTPError as error:
        statuses.append(error.code)
    except OSError:
        statuses.append(0)
print(json.dumps(statuses))
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with fresh_runtime(tmp_path_factory) as runtime:
        yield runtime


def _apply(local: Local, tmp: Path, objects: list[dict[str, Any]]) -> str:
    path = tmp / f"objects-{len(list(tmp.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return local.run("apply", "-f", str(path)).stdout


def _pod(name: str, namespace: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": name, "image": "python:3.11",
                                     "command": command}]}}  # fmt: skip


def _mesh(mode: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio-canary", "namespace": "istio-system"},
            "data": {"mesh": f"outboundTrafficPolicy:\n  mode: {mode}\n"}}  # fmt: skip


def _ready_pod(local: Local, namespace: str, name: str) -> dict[str, Any] | None:
    for pod in local.pods(namespace):
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if pod["metadata"]["name"] == name and conditions.get("Ready") == "True":
            return pod
    return None


def _control_plane(local: Local) -> list[tuple[str, int]]:
    return [(p["metadata"]["name"], p["status"]["containerStatuses"][0]["restartCount"])
            for p in local.pods("istio-system", "app=istiod")]  # fmt: skip


def test_registry_only_refuses_an_unknown_host_and_passes_a_service_entry_host(
    local: Local, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (tmp_path / "www").mkdir()
    served = served_directory(tmp_path / "www")
    local.run("control-plane", "start", "--revision", "canary", "--timeout", "90")
    _apply(local, manifests, [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "outside"}},
        _pod("external", "outside", [PYTHON, "-m", "http.server", str(PORT), "--directory",
                                     str(served)]),
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "mesh", "labels": {"istio.io/rev": "canary"}}},
        _pod("client", "mesh", [PYTHON, "-c", "import time; time.sleep(3600)"]),
    ])  # fmt: skip
    local.wait("the external server ready", lambda: _ready_pod(local, "outside", "external"))
    local.wait("the client ready (2/2)", lambda: _ready_pod(local, "mesh", "client"))
    external = _ready_pod(local, "outside", "external")
    assert external is not None
    url = f"http://{external['status']['podIP']}:{PORT}/index.html"
    applied = _apply(local, manifests, [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "external-api", "namespace": "mesh"},
         "spec": {"hosts": [KNOWN], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                  "ports": [{"number": PORT, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": external["status"]["podIP"]}]}},
    ])  # fmt: skip
    assert applied == "serviceentry.networking.istio.io/external-api created\n"
    assert local.run("get", "se", "-n", "mesh").stdout == "serviceentry/external-api\n"

    def statuses() -> list[int]:
        result = local.run("exec", "client", "-n", "mesh", "-c", "client", "--",
                           PYTHON, "-c", PROBE, url, UNKNOWN, KNOWN)  # fmt: skip
        answer: list[int] = json.loads(result.stdout.strip().splitlines()[-1])
        return answer

    local.wait("both hosts served under ALLOW_ANY", lambda: statuses() == [200, 200])
    control_plane = _control_plane(local)
    assert len(control_plane) == 1

    assert _apply(local, manifests, [_mesh("REGISTRY_ONLY")]) == "configmap/istio-canary created\n"
    local.wait("the unknown host refused", lambda: statuses() == [502, 200])
    assert [statuses() for _ in range(3)] == [[502, 200]] * 3  # steady, not a passing error
    assert _control_plane(local) == control_plane  # re-read live: no restart
    events = local.run("get", "events", "-n", "istio-system").stdout
    assert "MeshConfigUpdated" in events

    _apply(local, manifests, [_mesh("ALLOW_ANY")])
    local.wait("the unknown host served again", lambda: statuses() == [200, 200])
    assert _control_plane(local) == control_plane


def test_an_invalid_mesh_config_is_refused_at_apply(local: Local, tmp_path: Path) -> None:
    system = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    _apply(local, tmp_path, [system, _mesh("ALLOW_ANY")])
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(_mesh("SOMETIMES")))
    refused = local.run("apply", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert 'The ConfigMap "istio-canary" is invalid: ' in refused.stderr
    assert "outboundTrafficPolicy.mode" in refused.stderr
    stored = yaml.safe_load(
        local.run("get", "configmap", "istio-canary", "-n", "istio-system", "-o", "yaml").stdout
    )
    assert "ALLOW_ANY" in stored["data"]["mesh"]  # the last good one stays
