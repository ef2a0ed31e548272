"""What the Kubernetes registry keeps of gateway credentials, and where it looks for them
(the real API server run is tests/e2e/test_gateway_kube.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.registry_kube import (
    DEFAULT_CREDENTIAL_NAMESPACES,
    _replace_in_namespace,
    as_object,
    credential_namespaces_from,
)


def test_a_secret_keeps_only_its_certificate_fields() -> None:
    secret = {
        "metadata": {"name": "edge", "namespace": "istio-system", "uid": "u",
                     "annotations": {"a": "b"}, "managedFields": [{}]},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "Y2E=", "token": "c2VjcmV0"},
    }  # fmt: skip
    assert as_object("Secret", secret) == {
        "kind": "Secret",
        "metadata": {"name": "edge", "namespace": "istio-system"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "Y2E="},
    }


def test_a_service_account_token_leaves_nothing_behind() -> None:
    token = {"metadata": {"name": "t", "namespace": "istio-system"},
             "type": "kubernetes.io/service-account-token",
             "data": {"token": "c2VjcmV0", "ca.crt": "Y2E=", "namespace": "aXN0aW8="}}  # fmt: skip
    assert "token" not in as_object("Secret", token)["data"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, DEFAULT_CREDENTIAL_NAMESPACES),
        ({"GATEWAY_CREDENTIAL_NAMESPACES": "istio-system,istio-ingress"},
         ("istio-system", "istio-ingress")),
        ({"GATEWAY_CREDENTIAL_NAMESPACES": " istio-ingress , "}, ("istio-ingress",)),
        ({"GATEWAY_CREDENTIAL_NAMESPACES": ""}, ()),
        ({"GATEWAY_CREDENTIAL_NAMESPACES": "Bad_Name,edge"}, ("edge",)),
    ],
)  # fmt: skip
def test_credential_namespaces_from_the_environment(
    environ: dict[str, str], expected: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert credential_namespaces_from(environ) == expected
    assert ("Bad_Name" in caplog.text) is ("Bad_Name" in environ.get(
        "GATEWAY_CREDENTIAL_NAMESPACES", ""))  # fmt: skip


def _secret(namespace: str, name: str) -> dict[str, Any]:
    return {"kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "data": {}}  # fmt: skip


def test_a_relist_of_one_namespace_leaves_the_others_alone() -> None:
    async def run() -> set[tuple[str, str, str]]:
        builder = SnapshotBuilder(lambda _snapshot: None)
        builder.upsert(_secret("istio-system", "a"))
        builder.upsert(_secret("istio-ingress", "b"))
        builder.upsert(_secret("istio-ingress", "gone"))
        _replace_in_namespace(builder, "Secret", "istio-ingress", [_secret("istio-ingress", "b")])
        return {key for key in builder.objects if key[0] == "Secret"}

    assert asyncio.run(run()) == {
        ("Secret", "istio-system", "a"),
        ("Secret", "istio-ingress", "b"),
    }
