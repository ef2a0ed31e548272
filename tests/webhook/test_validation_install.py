"""What install creates for validation door 2, and the pure parts of how the control plane
closes it: Istio's name and rules, fail-open until proven, the probe only the webhook refuses."""

from __future__ import annotations

import pytest

from sidemesh.cli.validate import check_document
from sidemesh.install import manifests
from sidemesh.install.values import InstallValues
from sidemesh.kube.installer import UNINSTALL_KINDS
from sidemesh.kube.validator_keeper import (
    PROBE_PROBLEM,
    close_patch,
    probe_gateway,
    refused_by_webhook,
)


def validator(revision: str, **values: object) -> dict[str, object]:
    objects = manifests.render(InstallValues.model_validate(values), revision)
    [found] = [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    return found


@pytest.mark.parametrize(
    ("revision", "name"),
    [
        ("default", "istio-validator-istio-system"),
        ("canary", "istio-validator-canary-istio-system"),
    ],
)
def test_istios_name_per_revision(revision: str, name: str) -> None:
    assert validator(revision)["metadata"]["name"] == name  # type: ignore[index]


def test_rules_cover_every_istio_config_group_and_open_until_proven() -> None:
    [hook] = validator("canary")["webhooks"]  # type: ignore[misc]
    assert hook["rules"] == [{
        "operations": ["CREATE", "UPDATE"],
        "apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io"],
        "apiVersions": ["*"], "resources": ["*"],
    }]  # fmt: skip
    assert hook["failurePolicy"] == "Ignore" and "caBundle" not in hook["clientConfig"]
    assert hook["clientConfig"]["service"] == {
        "name": "istiod-canary", "namespace": "istio-system", "path": "/validate", "port": 443,
    }  # fmt: skip
    assert hook["objectSelector"] == {"matchLabels": {"istio.io/rev": "canary"}}
    [default_hook] = validator("default")["webhooks"]  # type: ignore[misc]
    assert default_hook["objectSelector"] == {
        "matchExpressions": [{"key": "istio.io/rev", "operator": "DoesNotExist"}]
    }


def test_a_control_plane_reached_by_url_validates_at_the_same_server() -> None:
    values = {"istiodRemote": {"injectionURL": "https://10.0.0.1:15017/inject/cluster/c1"}}
    [hook] = validator("canary", **values)["webhooks"]  # type: ignore[misc]
    assert hook["clientConfig"] == {"url": "https://10.0.0.1:15017/validate"}


def test_uninstall_deletes_it() -> None:
    kinds = [kind for _, kind, _, _ in UNINSTALL_KINDS]
    assert kinds.index("ValidatingWebhookConfiguration") < kinds.index("Deployment")


def test_the_probe_passes_the_schema_but_not_the_webhook() -> None:
    probe = probe_gateway("canary")
    assert probe["metadata"]["labels"] == {"istio.io/rev": "canary"}
    problems = check_document(probe)
    assert problems is not None and any(PROBE_PROBLEM in p for p in problems)
    assert probe_gateway("default")["metadata"]["labels"] == {}


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ('admission webhook "rev.validation.istio.io" denied the request: Gateway istio-system/'
         f"sidemesh-validation-readiness-probe: spec.servers: {PROBE_PROBLEM}", True),
        ('Internal error occurred: failed calling webhook "rev.validation.istio.io": connection '
         "refused", False),
        ('gateways.networking.istio.io is forbidden: User "x" cannot create resource', False),
        ('admission webhook "other" denied the request: something else', False),
    ],
)  # fmt: skip
def test_only_the_webhooks_own_refusal_counts(message: str, refused: bool) -> None:
    assert refused_by_webhook(message) is refused


def test_close_patch_turns_every_webhook_to_fail_once() -> None:
    configuration = {
        "metadata": {"resourceVersion": "7"},
        "webhooks": [{"name": "a", "failurePolicy": "Ignore"}, {"name": "b"}],
    }
    patch = close_patch(configuration)
    assert patch == {
        "metadata": {"resourceVersion": "7"},
        "webhooks": [
            {"name": "a", "failurePolicy": "Fail"},
            {"name": "b", "failurePolicy": "Fail"},
        ],
    }
    assert configuration["webhooks"][0]["failurePolicy"] == "Ignore"  # not mutated
    assert close_patch({"webhooks": patch["webhooks"]}) is None
