"""`sidemesh demo --kube --json`: the local demo's object (`demo_report.checks`), from the kube
walk's steps (pure).

The kube walk's steps are read as the local demo's steps that prove the same thing (its
control plane, app, injection, mTLS, authorization and signals steps); the keys of what the
kube walk does not do are absent rather than null (null means "the walk never got there"):
`restart_to_ready_s`, `sidecar_rss_bytes` (not measured), `plaintext_accepted_before_strict`,
`strict_refused_plaintext`, `plaintext_refusal` (no STRICT step), and the `upgrade_*` keys (no
upgrade). Two keys are the kube walk's own: `kube` (true) and `node_ready` (its first step:
the API server up and this host its Ready node). `steps` and `failed_step` number the kube
walk's steps; `cleaned_up` is whether the node left nothing behind (null with `--keep`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sidemesh.demo import demo_report, script
from sidemesh.demo.demo_report import StepOutcome
from sidemesh.demo.kube_step import KubeOutcome

STEP_NODE: Final = 1
# kube step -> the local step whose checks it makes
AS_LOCAL: Final[Mapping[int, int]] = {
    2: script.STEP_CONTROL_PLANE,
    3: script.STEP_APP,
    4: script.STEP_INJECT,
    5: script.STEP_MTLS,
    6: script.STEP_AUTHZ,
    7: script.STEP_SIGNALS,
}
NOT_WALKED: Final = (
    "restart_to_ready_s",
    "sidecar_rss_bytes",
    "plaintext_accepted_before_strict",
    "strict_refused_plaintext",
    "plaintext_refusal",
    "upgrade_ready_2_of_2",
    "upgrade_restart_to_ready_s",
    "upgrade_connected_sidecars",
)


def checks(outcomes: Sequence[KubeOutcome], *, cleaned_up: bool | None) -> dict[str, Any]:
    as_local = [
        StepOutcome(AS_LOCAL[o.number], o.title, o.ok, dict(o.facts), "" if o.ok else o.detail)
        for o in outcomes
        if o.number in AS_LOCAL
    ]
    found = demo_report.checks(as_local, second_revision="")
    for key in NOT_WALKED:
        found.pop(key, None)
    failed = next((o for o in outcomes if not o.ok), None)
    node = next((o for o in outcomes if o.number == STEP_NODE), None)
    found.update(
        {
            "ok": bool(outcomes) and failed is None,
            "failed_step": None if failed is None else f"step {failed.number}: {failed.detail}",
            "kube": True,
            "node_ready": None if node is None else node.ok,
            "cleaned_up": cleaned_up,
            "steps": [
                {"step": o.number, "title": o.title, "ok": o.ok, "error": "" if o.ok else o.detail}
                for o in outcomes
            ],
        }
    )
    return found
