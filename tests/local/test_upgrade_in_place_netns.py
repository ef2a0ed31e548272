"""An in-place sidecar upgrade on the local runtime, with real Envoy, iptables and mTLS:
two revisions whose proxy images differ, the namespace moved from one to the other, then
`sidemesh upgrade-sidecars --local`. Only istio-proxy restarts (the app's process and restart
count stay), the sidecar's agent moves to the new revision's control plane by following the
pod's annotations, and requests between the pods (STRICT mTLS) keep being answered.
Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, Local, alive, needs_root, owned
from upgrade_kit import container_status, exec_command, two_revisions, upgrade_sidecars

pytestmark = needs_root

NAMESPACE = "shop"
# The client's loop: GET http://web every 50 ms until /tmp/stop appears; prints ok and failed.
CLIENT_LOOP = """
import os, time, urllib.request
ok = failed = 0
while not os.path.exists('/tmp/stop-{tag}'):
    try:
        urllib.request.urlopen('http://web.shop/', timeout=5).read()
        ok += 1
    except Exception:
        failed += 1
    time.sleep(0.05)
print(ok, failed)
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with two_revisions(
        tmp_path_factory, namespace=NAMESPACE, tag="1.1-upgrade", web_replicas=1, grace_seconds=5
    ) as local:
        yield local


def _ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    return conditions["Ready"] == "True"


def _pod(local: Local, app: str) -> dict[str, Any]:
    pods = owned(local.pods(NAMESPACE, f"app={app}"))
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _pid(local: Local, pod: dict[str, Any], container: str) -> int:
    """The container's main process, as the runtime records it (its launcher's pid)."""
    spec = local.state_dir / "state.json"
    state = json.loads(spec.read_text())
    record = state["pods"][f"{NAMESPACE}/{pod['metadata']['name']}"]
    return int(next(s["pid"] for s in record["statuses"] if s["name"] == container))


def test_upgrade_in_place_restarts_only_the_proxy(local: Local) -> None:
    def both_ready() -> bool:
        pods = owned(local.pods(NAMESPACE))
        return len(pods) == 2 and all(_ready(p) for p in pods)

    local.wait("web and client ready with 1-0 sidecars", both_ready)
    before = {app: _pod(local, app) for app in ("web", "client")}
    for pod in before.values():
        assert pod["metadata"]["annotations"]["istio.io/rev"] == "1-0"
    app_pids = {app: _pid(local, before[app], app) for app in before}

    client = before["client"]["metadata"]["name"]
    tag = "upgrade"
    loop = subprocess.Popen(
        exec_command(local, NAMESPACE, client, "client", PYTHON, "-c", CLIENT_LOOP.format(tag=tag)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        local.run("label", "namespace", NAMESPACE, "istio.io/rev=1-1", "--overwrite")
        dry = upgrade_sidecars(local, NAMESPACE, "--dry-run", "-o", "json", check=True)
        planned = json.loads(dry.stdout)
        assert {p["workload"]: (p["action"], p["outcome"]) for p in planned} == {
            "Deployment/client": ("in-place", "would patch"),
            "Deployment/web": ("in-place", "would patch"),
        }
        done = upgrade_sidecars(local, NAMESPACE)
        assert done.returncode == 0, done.stdout + done.stderr

        def upgraded() -> bool:
            pods = owned(local.pods(NAMESPACE))
            return len(pods) == 2 and all(
                _ready(p)
                and container_status(p, "istio-proxy")["restartCount"] == 1
                and container_status(p, "istio-proxy")["image"].endswith(":1.1-upgrade")
                for p in pods
            )

        local.wait("istio-proxy restarted once with the 1-1 image, pods ready", upgraded)
        # the agent went to 1-1's control plane: its xDS connection is to istiod-1-1
        for app in ("web", "client"):
            name = before[app]["metadata"]["name"]
            check = local.run(
                "exec", name, "-n", NAMESPACE, "-c", "istio-proxy", "--", "sh", "-c",
                "cat /etc/istio/pod/annotations; getent hosts istiod-1-1.istio-system.svc",
            ).stdout  # fmt: skip
            assert 'istio.io/rev="1-1"' in check
        answer = local.run(
            "exec", before["client"]["metadata"]["name"], "-n", NAMESPACE, "-c", "client", "--",
            PYTHON, "-c", "import urllib.request as u; print(u.urlopen('http://web.shop/').read())",
        ).stdout  # fmt: skip
        assert "hello from web" in answer  # through both new sidecars, STRICT mTLS
        logs = local.run(
            "logs", before["web"]["metadata"]["name"], "-n", NAMESPACE, "-c", "istio-proxy"
        ).stdout
        assert "istiod-1-1.istio-system.svc:15012" in logs, logs[-2000:]
    finally:
        subprocess.run(
            exec_command(local, NAMESPACE, client, "client", "touch", f"/tmp/stop-{tag}"),
            capture_output=True,
            timeout=60,
        )
        out, err = loop.communicate(timeout=60)
        Path(f"/tmp/stop-{tag}").unlink(missing_ok=True)
    ok, failed = (int(n) for n in out.split())
    print(f"requests during the upgrade: {ok} answered, {failed} failed")
    assert ok > 0, err
    after = {app: _pod(local, app) for app in ("web", "client")}
    for app in ("web", "client"):
        # the same pod, the app's process untouched
        assert after[app]["metadata"]["uid"] == before[app]["metadata"]["uid"]
        assert container_status(after[app], app)["restartCount"] == 0
        assert _pid(local, after[app], app) == app_pids[app] and alive(app_pids[app])
