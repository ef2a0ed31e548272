"""In-place sidecar upgrades on the local runtime: two revisions running (1-0, and 1-1 whose
proxy image carries another tag), a namespace labelled for 1-0 with a served `web` behind a
Service under STRICT mTLS, and a `client` to call it from. Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, SIDEMESH, Local, served_directory

from sidemesh.local.controlplane import ControlPlaneOptions
from sidemesh.local.runtime import Runtime

UPGRADE = [sys.executable, "-c", "from sidemesh.cli.main import main; main()", "upgrade-sidecars"]


def upgrade_manifest(
    namespace: str, served: Path, *, web_replicas: int, grace_seconds: int
) -> list[dict[str, Any]]:
    """`grace_seconds`: each pod's terminationGracePeriodSeconds."""

    def deployment(name: str, replicas: int, command: list[str], port: int | None) -> Any:
        container: dict[str, Any] = {"name": name, "image": "python:3.11", "command": command}
        if port is not None:
            container["ports"] = [{"name": "http", "containerPort": port}]
            container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 1}  # fmt: skip
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"terminationGracePeriodSeconds": grace_seconds,
                                      "containers": [container]}},
            },
        }  # fmt: skip

    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {"istio.io/rev": "1-0"}}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": namespace},
         "spec": {"mtls": {"mode": "STRICT"}}},
        deployment("web", web_replicas,
                   [PYTHON, "-m", "http.server", "8080", "--directory", str(served)], 8080),
        deployment("client", 1, [PYTHON, "-c", "import time; time.sleep(3600)"], None),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]  # fmt: skip


@contextmanager
def two_revisions(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    namespace: str,
    tag: str,
    web_replicas: int,
    grace_seconds: int,
) -> Iterator[Local]:
    """Control planes 1-0 and 1-1 (its proxy image tagged `tag`), `upgrade_manifest` applied;
    `down` afterwards, checked."""
    served = served_directory(tmp_path_factory.mktemp("www"))
    local = Local(tmp_path_factory.mktemp("sm") / "state")
    # readable by the control plane's uid 1337 (pytest's own temporary tree is not)
    values_dir = Path(tempfile.mkdtemp(prefix=f"sidemesh-{tag}-"))
    values_dir.chmod(0o755)
    values = values_dir / "values.yaml"
    values.write_text(json.dumps({"global": {"tag": tag}}) + "\n")
    values.chmod(0o644)
    try:
        local.run("control-plane", "start", "--revision", "1-0", "--timeout", "90")
        runtime = Runtime(local.state_dir)
        options = ControlPlaneOptions(revision="1-1", extra_args=("--values", str(values)))
        runtime.start_control_plane(options)
        runtime.wake()
        assert runtime.wait_control_plane_ready(options, 90), local.daemon_log()
        manifest = upgrade_manifest(
            namespace, served, web_replicas=web_replicas, grace_seconds=grace_seconds
        )
        path = tmp_path_factory.mktemp("manifests") / "app.yaml"
        path.write_text("\n---\n".join(json.dumps(d) for d in manifest))
        local.run("apply", "-f", str(path))
        yield local
    finally:
        local.run("down", check=False)
        shutil.rmtree(values_dir, ignore_errors=True)
        assert local.our_netns() == []


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod["status"]
    statuses = status.get("containerStatuses", []) + status.get("initContainerStatuses", [])
    return next(s for s in statuses if s["name"] == name)


def exec_command(local: Local, namespace: str, pod: str, container: str, *argv: str) -> list[str]:
    """`sidemesh local exec` of `argv` in a pod's container."""
    return [*SIDEMESH, "--state-dir", str(local.state_dir), "exec", pod, "-n", namespace,
            "-c", container, "--", *argv]  # fmt: skip


def upgrade_sidecars(
    local: Local, namespace: str, *options: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """`sidemesh upgrade-sidecars --local` for `namespace`, its output captured."""
    return subprocess.run(
        [*UPGRADE, "--local", "--state-dir", str(local.state_dir), "-n", namespace, *options],
        capture_output=True, text=True, check=check,
    )  # fmt: skip
