"""`sidemesh uninstall --revision R` while R's discovery still runs leaves nothing of R: no
object of any kind labelled with it or named after it, and no Lease recreated afterwards.

The revision's discovery is started the way `--kube` allows without files: `--kubeconfig`
and no `--tls-cert-file/--tls-key-file` (it writes the serving pair to a private directory)."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_kit import Cluster, ControlPlane, free_port, wait_for

REVISION = "e2e-gone"
REVISION_LABELS = ("install.sidemesh.io/revision", "istio.io/rev")


def leftovers(cluster: Cluster) -> list[str]:
    """Every object, namespaced or not, labelled with the revision or named after it (Events
    only report what happened, and expire by themselves)."""
    listed = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in listed if k not in ("events", "events.events.k8s.io")]
    items: list[dict[str, Any]] = cluster.get_json(",".join(kinds), "-A")["items"]
    found = []
    for item in items:
        metadata = item["metadata"]
        labels = metadata.get("labels") or {}
        if REVISION in metadata["name"] or any(labels.get(k) == REVISION for k in REVISION_LABELS):
            found.append(f"{item['kind']}/{metadata.get('namespace', '')}/{metadata['name']}")
    return found


def test_uninstall_leaves_nothing_of_the_revision(
    cluster: Cluster, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plane = ControlPlane(
        cluster, REVISION, tmp_path_factory.mktemp("cp-gone"), webhook_port=free_port()
    )
    plane.install()
    plane.start(flags_only=True)
    try:
        wait_for("the revision's leader Lease", plane.lease)
        before = leftovers(cluster)
        assert f"Lease/istio-system/istiod-{REVISION}-leader" in before
        assert any(f"Secret/istio-system/istiod-{REVISION}" in o for o in before)
        log_before = len(plane.log())

        result = cluster.sidemesh("uninstall", "--revision", REVISION)
        assert f"Lease/istiod-{REVISION}-leader" in result.stdout
        assert leftovers(cluster) == []
        # The discovery still running tries its Lease again, and may not write it any more.
        refused = wait_for(
            "discovery's next (refused) lease round",
            lambda: next((line for line in plane.log()[log_before:].splitlines()
                          if "cannot take or renew it" in line), None),
        )  # fmt: skip
        assert leftovers(cluster) == []
        # Said as a warning, with what to do.
        assert " WARNING sidemesh.kube.leader " in refused
        assert "403 Forbidden" in refused or "401 Unauthorized" in refused
        assert "reinstall the revision" in refused
        assert control_plane.lease() is not None  # the other revision is untouched
    finally:
        plane.stop()
