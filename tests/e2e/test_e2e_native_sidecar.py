"""A native sidecar asked for on a server without them (v1.24: init containers have no
restartPolicy) is injected the classic way, and kubectl shows why as a warning, instead of
the API server refusing the pod with an unrelated validation message."""

from __future__ import annotations

import orjson
from e2e_kit import Cluster, ControlPlane, label_for_injection


def test_native_sidecar_falls_back_on_an_old_server(
    cluster: Cluster, control_plane: ControlPlane, namespace: str
) -> None:
    server = orjson.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    minor = int(server["minor"].rstrip("+"))
    assert minor < 29, "this test needs a server without native sidecars"
    label_for_injection(cluster, namespace, f"istio.io/rev={control_plane.revision}")
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "native", "annotations": {"sidecar.istio.io/nativeSidecar": "true"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }  # fmt: skip
    manifest = orjson.dumps(pod).decode()
    created = cluster.kubectl("create", "-n", namespace, "-f", "-", input=manifest)
    assert created.stderr.splitlines() == [
        "Warning: SM1008: annotation sidecar.istio.io/nativeSidecar=true asks for a native "
        "sidecar, but "
        f"the API server runs Kubernetes 1.{minor} (native sidecars, init containers with "
        "restartPolicy Always, need 1.29 or later): istio-proxy was injected as a classic "
        "sidecar container instead"
    ]
    spec = cluster.get_json("pod", "native", "-n", namespace)["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app", "istio-proxy"]
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]
