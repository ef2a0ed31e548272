"""The warnings table: one code per kind, never reused, documented in the README, and the
selection-level codes (SM10xx) that only check-inject, kube-inject or the local runtime give."""

from __future__ import annotations

import re
from pathlib import Path

from sidemesh.inject import warnings as w
from sidemesh.inject.check import CheckResult, check_object
from sidemesh.inject.manual import misplaced_annotation_warnings
from sidemesh.inject.settings import InjectorSettings
from sidemesh.inject.webhooks import revision_webhooks

README = Path(__file__).resolve().parents[2] / "README.md"


def test_codes_are_unique_ordered_and_well_formed() -> None:
    codes = [kind.code for kind in w.TABLE]
    assert len(set(codes)) == len(codes)
    assert codes == sorted(codes)
    assert all(re.fullmatch(r"SM1[01]\d\d", code) for code in codes)


def test_every_kind_in_the_module_is_in_the_table() -> None:
    kinds = {value for value in vars(w).values() if isinstance(value, w.WarningKind)}
    assert kinds == set(w.TABLE)


def test_readme_documents_every_code_once() -> None:
    rows = re.findall(r"^\| (SM\d{4}) \|", README.read_text(encoding="utf-8"), re.MULTILINE)
    assert rows == [kind.code for kind in w.TABLE]


def test_warning_prints_as_code_colon_message_and_dict() -> None:
    warning = w.not_a_boolean("label sidecar.istio.io/inject=yes")
    assert str(warning).startswith("SM1006: label sidecar.istio.io/inject=yes is neither")
    assert warning.as_dict() == {"code": "SM1006", "message": warning.message}
    assert w.lines([warning]) == [str(warning)]


def _check(annotations: dict[str, str], namespace_labels: dict[str, str]) -> CheckResult:
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }  # fmt: skip
    result = check_object(
        pod,
        entries=revision_webhooks("default", default=True),
        settings_by_revision={"default": InjectorSettings()},
        namespace_labels=namespace_labels,
    )
    assert result is not None
    return result


def test_annotation_only_opt_in_is_sm1003() -> None:
    result = _check({"sidecar.istio.io/inject": "true"}, {})
    assert not result.injected
    assert [x.code for x in result.warnings] == ["SM1003"]


def test_inject_label_on_a_deployment_is_sm1007() -> None:
    metadata = {"labels": {"sidecar.istio.io/inject": "true"}}
    (warning,) = misplaced_annotation_warnings(metadata, "Deployment")
    assert warning.code == "SM1007" and "spec.template.metadata" in warning.message
    assert misplaced_annotation_warnings(metadata, "Pod") == []


def test_failure_policy_ignore_is_sm1009() -> None:
    warning = w.webhook_failure_ignored("failed calling webhook")
    assert str(warning) == (
        "SM1009: failed calling webhook (failurePolicy Ignore: admitted without it)"
    )


def test_an_invalid_annotation_makes_check_inject_say_the_pod_is_denied() -> None:
    result = _check({"sidecar.istio.io/proxyCPU": "lots"}, {"istio-injection": "enabled"})
    assert not result.injected and result.revision is None
    assert "the webhook denies the pod: annotation sidecar.istio.io/proxyCPU" in result.reason
