"""`sidemesh install --set sidecarRestarter.enabled=true`: the duty's flag on discovery and the
few extra permissions it needs, only then; everything still valid for the API server."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from sidemesh.install import manifests
from sidemesh.install.overrides import load_install_values
from sidemesh.install.rbac import SIDECAR_RESTARTER_RULES


def _render(*sets: str) -> list[dict[str, Any]]:
    values, revision = load_install_values([], list(sets), revision="r2")
    return manifests.render(values, revision)


def _of(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


@pytest.mark.parametrize("enabled", [True, False])
def test_restarter_flag_and_permissions_only_when_enabled(enabled: bool) -> None:
    objects = _render(f"sidecarRestarter.enabled={str(enabled).lower()}")
    args = _of(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    rules = _of(objects, "ClusterRole")["rules"]
    assert ("--sidecar-restarter" in args) is enabled
    assert all((rule in rules) is enabled for rule in SIDECAR_RESTARTER_RULES)
    # least privilege: in-place pod patches and evictions, never deletes; workloads read, never
    # patched
    verbs = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    assert ("pods", "delete") not in verbs and ("deployments", "patch") not in verbs
    assert (("pods", "patch") in verbs) is enabled
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
