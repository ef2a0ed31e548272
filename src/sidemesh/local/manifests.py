"""Manifests for `local apply|delete -f` (read by `api.manifests`, the one reader) and
kubectl's resource words."""

from __future__ import annotations

from typing import Any

from sidemesh.api import manifests

# The words kubectl accepts for each kind the runtime knows.
RESOURCE_WORDS = {
    **dict.fromkeys(("pod", "pods", "po"), "Pod"),
    **dict.fromkeys(("deployment", "deployments", "deploy"), "Deployment"),
    **dict.fromkeys(("service", "services", "svc"), "Service"),
    **dict.fromkeys(("namespace", "namespaces", "ns"), "Namespace"),
    **dict.fromkeys(("configmap", "configmaps", "cm"), "ConfigMap"),
    **dict.fromkeys(("secret", "secrets"), "Secret"),
    **dict.fromkeys(("serviceaccount", "serviceaccounts", "sa"), "ServiceAccount"),
    **dict.fromkeys(("event", "events", "ev"), "Event"),
    **dict.fromkeys(
        ("peerauthentication", "peerauthentications", "pa", "peerauthentication.security.istio.io"),
        "PeerAuthentication",
    ),
    **dict.fromkeys(
        ("virtualservice", "virtualservices", "vs", "virtualservice.networking.istio.io"),
        "VirtualService",
    ),
    **dict.fromkeys(
        ("destinationrule", "destinationrules", "dr", "destinationrule.networking.istio.io"),
        "DestinationRule",
    ),
    **dict.fromkeys(
        ("gateway", "gateways", "gw", "gateway.networking.istio.io"),
        "Gateway",
    ),
    **dict.fromkeys(
        (
            "authorizationpolicy",
            "authorizationpolicies",
            "ap",
            "authorizationpolicy.security.istio.io",
        ),
        "AuthorizationPolicy",
    ),
    **dict.fromkeys(
        (
            "requestauthentication",
            "requestauthentications",
            "ra",
            "requestauthentication.security.istio.io",
        ),
        "RequestAuthentication",
    ),
    **dict.fromkeys(
        ("serviceentry", "serviceentries", "se", "serviceentry.networking.istio.io"),
        "ServiceEntry",
    ),
    **dict.fromkeys(
        ("sidecar", "sidecars", "sidecar.networking.istio.io"),
        "Sidecar",
    ),
    **dict.fromkeys(
        ("telemetry", "telemetries", "telemetry.telemetry.istio.io"),
        "Telemetry",
    ),
}


class ManifestError(ValueError):
    """A manifest cannot be read; str() is kubectl's one line (`error: FILE:LINE: ...`)."""


def load(names: tuple[str, ...], *, verb: str) -> list[tuple[str, list[Any]]]:
    """(source, documents) for every file, all read before any is returned; a directory
    means its YAML/JSON files, `-` stdin. No object at all is an error, as in kubectl."""
    try:
        return manifests.read_all(names, verb=verb)
    except manifests.ManifestError as exc:
        raise ManifestError(f"error: {exc}") from exc


def named_objects(documents: list[Any], namespace: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object in the documents (for `delete -f`)."""
    found = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        items = document.get("items") if document.get("kind") == "List" else [document]
        for item in items or []:
            metadata = item.get("metadata") or {}
            kind = str(item.get("kind"))
            where = "" if kind == "Namespace" else str(metadata.get("namespace") or namespace)
            found.append((kind, where, str(metadata.get("name"))))
    return found
