"""`sidemesh proxy-status`, run on the host with no flags, shows the sidecars connected to the
local mesh's control plane (which lives in a pod's network namespace). Needs root, `ip` and
`iptables`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from netns_kit import Local, needs_root, owned, ready, running_app

from sidemesh.local.paths import STATE_DIR_ENV

pytestmark = needs_root

PROXY_STATUS = [sys.executable, "-c", "from sidemesh.cli.main import main; main()", "proxy-status"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with running_app(tmp_path_factory, "shop") as local:
        yield local


def proxy_status(app: Local, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user on this host types it; the runtime is found as `sidemesh local`
    finds it ($SIDEMESH_LOCAL_STATE here, since the test's runtime is not the default one)."""
    environment = {
        **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        STATE_DIR_ENV: str(app.state_dir),
    }
    return subprocess.run(
        [*PROXY_STATUS, *args], capture_output=True, text=True, env=environment, timeout=60
    )


def app_wait_for(
    app: Local, what: str, probe: Callable[[], list[dict[str, Any]] | None]
) -> list[dict[str, Any]]:
    """`app.wait` until `probe` returns something; that."""
    found: list[list[dict[str, Any]]] = []

    def done() -> bool:
        value = probe()
        if value is not None:
            found.append(value)
        return value is not None

    app.wait(what, done)
    return found[-1]


def test_no_control_plane_is_explained(app: Local) -> None:
    result = proxy_status(app)
    assert result.returncode == 1
    assert "no running istiod pod in the local mesh" in result.stderr


def test_proxy_status_from_the_host_lists_the_local_sidecars(app: Local) -> None:
    app.run("control-plane", "start", "--revision", "canary", "--timeout", "60")
    app.run("label", "namespace", "shop", "istio.io/rev=canary", "--overwrite")
    app.run("rollout", "restart", "deployment", "web", "-n", "shop")

    def injected_and_ready() -> bool:
        pods = owned(app.pods("shop"))
        return len(pods) == 2 and all(ready(p) and len(p["spec"]["containers"]) == 2 for p in pods)

    app.wait("the restarted pods with their sidecars, ready", injected_and_ready)
    pod_names = sorted(p["metadata"]["name"] for p in owned(app.pods("shop")))

    def listed() -> list[dict[str, Any]] | None:
        result = proxy_status(app, "--json")
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        shown = sorted(str(row["pod"]) for row in rows)
        return rows if shown == [f"{n}.shop" for n in pod_names] else None

    rows = app_wait_for(app, "both sidecars listed by proxy-status", listed)
    for row in rows:
        assert row["revision"] == "canary"
        assert str(row["control_plane"]).startswith("istiod-canary-")
        assert row["types"]["cds"]["status"] == row["types"]["lds"]["status"] == "SYNCED"
    table = proxy_status(app).stdout.splitlines()
    assert table[0].split() == [
        "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "REVISION", "VERSION",
    ]  # fmt: skip
    assert sorted(line.split()[0] for line in table[1:]) == [f"{n}.shop" for n in pod_names]
    # The demo's form, `sidemesh local proxy-status`, shows the same table.
    local_form = app.run("proxy-status", "--revision", "canary").stdout.splitlines()
    assert sorted(line.split()[0] for line in local_form[1:]) == [f"{n}.shop" for n in pod_names]
    # --revision selects the control plane; another revision has none.
    assert proxy_status(app, "--revision", "canary", "--json").returncode == 0
    other = proxy_status(app, "--revision", "stable")
    assert other.returncode == 1
    assert "no running istiod pod of revision stable in the local mesh" in other.stderr
