"""The CustomResourceDefinitions of the Istio APIs the control plane reads.

`sidemesh discovery` watches `security.istio.io` PeerAuthentications; without the CRD a cluster
that never had Istio's base chart refuses `kubectl apply` of one. The CRD is shared by every
revision (and by an Istio install, if there is one), so it carries no revision label: uninstall,
which deletes by that label, never removes it. Deleting a CRD deletes every object of its kind.

The Helm chart ships the same object in `charts/sidemesh/crds/` (tests/install keeps them equal).
"""

from __future__ import annotations

from typing import Any, Final

from sidemesh.install import naming

# `UNSET` inherits the mode from the parent level (namespace, then mesh).
MTLS_MODES: Final = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


def _mtls_mode() -> dict[str, Any]:
    return {
        "description": "UNSET inherits from the parent level; DISABLE: plaintext only; "
        "PERMISSIVE: mutual TLS or plaintext; STRICT: mutual TLS only.",
        "type": "string",
        "enum": list(MTLS_MODES),
    }


def _mtls(description: str) -> dict[str, Any]:
    return {"description": description, "type": "object", "properties": {"mode": _mtls_mode()}}


def peer_authentication_schema() -> dict[str, Any]:
    """The structural schema of PeerAuthentication (the same for every served version)."""
    spec = {
        "description": "Which mutual TLS mode inbound traffic of the selected workloads uses.",
        "type": "object",
        "properties": {
            "selector": {
                "description": "The workloads this policy applies to; absent: every workload "
                "in the namespace (or the mesh, in the root namespace).",
                "type": "object",
                "properties": {
                    "matchLabels": {
                        "description": "Pod labels a workload must all carry.",
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "mtls": _mtls("The mode for every port not listed in portLevelMtls."),
            "portLevelMtls": {
                "description": "Per-port modes, keyed by the workload's (container) port "
                "number; only with a selector.",
                "type": "object",
                "additionalProperties": _mtls("The mode of one port."),
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(port, int(port) >= 1 && int(port) <= 65535)",
                        "message": "portLevelMtls keys must be port numbers (1-65535)",
                    }
                ],
            },
        },
        # Port modes only apply to workload policies (discovery ignores them elsewhere), so
        # refusing them at apply time beats a policy that silently does less than it says.
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.portLevelMtls) || (has(self.selector) && "
                "has(self.selector.matchLabels) && self.selector.matchLabels.size() > 0)",
                "message": "portLevelMtls requires a selector with matchLabels",
            }
        ],
    }
    return {
        "description": "PeerAuthentication: the mutual TLS mode workloads accept.",
        "type": "object",
        "properties": {
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


def _version(name: str, *, storage: bool) -> dict[str, Any]:
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "schema": {"openAPIV3Schema": peer_authentication_schema()},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {
                "name": "Mode",
                "type": "string",
                "jsonPath": ".spec.mtls.mode",
                "description": "The mutual TLS mode of the policy.",
            },
            {
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
                "description": "When the policy was created.",
            },
        ],
    }


def peer_authentication() -> dict[str, Any]:
    """`peerauthentications.security.istio.io`: v1 stored, v1beta1 served with the same schema."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "peerauthentications.security.istio.io",
            "labels": {naming.LABEL_PART_OF: naming.PART_OF},
        },
        "spec": {
            "group": "security.istio.io",
            "names": {
                "kind": "PeerAuthentication",
                "listKind": "PeerAuthenticationList",
                "plural": "peerauthentications",
                "singular": "peerauthentication",
                "shortNames": ["pa"],
                "categories": ["istio-io", "security-istio-io"],
            },
            "scope": "Namespaced",
            "versions": [_version("v1", storage=True), _version("v1beta1", storage=False)],
        },
    }


def custom_resource_definitions() -> list[dict[str, Any]]:
    """Every CRD an install applies (before anything that could refer to it)."""
    return [peer_authentication()]
