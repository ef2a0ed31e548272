"""The control plane's identity and its least-privilege RBAC, per revision.

Only what the control plane does is granted:

* read namespaces, services, pods and endpointslices (the registry, injection decisions), and
  Istio's PeerAuthentication (mTLS mode per namespace/workload), AuthorizationPolicy and
  RequestAuthentication (request policy per workload), VirtualService and
  DestinationRule (routes and traffic policies); read only: the control plane never writes
  configuration;
* create tokenreviews (authenticating sidecars' CSRs);
* get/list/watch/patch mutatingwebhookconfigurations (keeping `caBundle` current). RBAC cannot
  filter by label, so this covers every such configuration; the control plane itself only
  patches those labelled `istio.io/rev=<its revision>` (its own and its tags').
  `resourceNames` cannot help either: tags are created after install with names not known now;
* configmaps in every namespace (publishing `istio-ca-root-cert`; get/watch also serve
  following the revision's mesh ConfigMap `istio-<rev>` live); `create` cannot be limited
  by name, so the verbs cover all configmaps;
* get/list/watch/patch validatingwebhookconfigurations (caBundle and `failurePolicy: Fail` of
  the revision's `istio-validator-*`), and create gateways in istio-system, only ever as a
  server-side dry run that proves the validating webhook refuses invalid configuration;
* secrets and leases in istio-system only (CA and webhook certificate; leader election), via a
  Role, not a ClusterRole;
* get/list/watch gateways everywhere (gateway proxies' listeners), and get/list/watch secrets
  only in the namespaces of `gateways.credentialNamespaces` (the Secrets Gateways name as
  `credentialName`), via one Role and RoleBinding in each.
"""

from __future__ import annotations

from typing import Any

from sidemesh.install import naming

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"

CLUSTER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["namespaces", "services", "pods"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["security.istio.io"],
        "resources": ["peerauthentications", "authorizationpolicies", "requestauthentications"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["virtualservices", "destinationrules", "serviceentries", "sidecars"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["telemetry.istio.io"],
        "resources": ["telemetries"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["authentication.k8s.io"],
        "resources": ["tokenreviews"],
        "verbs": ["create"],
    },
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["validatingwebhookconfigurations"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"],
    },
]

GATEWAY_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["gateways"],
        "verbs": ["get", "list", "watch"],
    },
]

CREDENTIAL_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
]

NAMESPACE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"],
    },
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update", "patch"],
    },
    {
        # A server-side dry run only (nothing is stored): proves the validating webhook
        # refuses an invalid Gateway before it is turned to failurePolicy Fail (as Istio).
        "apiGroups": ["networking.istio.io"],
        "resources": ["gateways"],
        "verbs": ["create"],
    },
]


def _metadata(name: str, revision: str, *, namespaced: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": naming.install_labels(revision)}
    if namespaced:
        metadata["namespace"] = naming.NAMESPACE
    return metadata


def _subject(revision: str) -> dict[str, Any]:
    return {
        "kind": "ServiceAccount",
        "name": naming.service_account_name(revision),
        "namespace": naming.NAMESPACE,
    }


def service_account(revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(naming.service_account_name(revision), revision, namespaced=True),
    }


# Only with `sidecarRestarter.enabled`: patch a stale pod in place where the planner can (its
# images, labels, annotations), evict the others (PodDisruptionBudgets hold), read the
# controllers it waits on, and record Events on them. No delete, no patch of workloads.
SIDECAR_RESTARTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
        "verbs": ["get"],
    },
]


def cluster_role(revision: str, *, sidecar_restarter: bool = False) -> dict[str, Any]:
    rules = CLUSTER_RULES + (SIDECAR_RESTARTER_RULES if sidecar_restarter else [])
    rules = rules + GATEWAY_RULES
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRole",
        "metadata": _metadata(naming.cluster_role_name(revision), revision, namespaced=False),
        "rules": [dict(rule) for rule in rules],
    }


def cluster_role_binding(revision: str) -> dict[str, Any]:
    name = naming.cluster_role_name(revision)
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name, revision, namespaced=False),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [_subject(revision)],
    }


def role(revision: str) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": _metadata(naming.role_name(revision), revision, namespaced=True),
        "rules": [dict(rule) for rule in NAMESPACE_RULES],
    }


def role_binding(revision: str) -> dict[str, Any]:
    name = naming.role_name(revision)
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": _metadata(name, revision, namespaced=True),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [_subject(revision)],
    }


def credential_reader_name(revision: str) -> str:
    return f"{naming.role_name(revision)}-gateway-credentials"


def credential_readers(revision: str, namespaces: list[str]) -> list[dict[str, Any]]:
    """A Role reading Secrets, and its RoleBinding, in each gateway credential namespace."""
    name = credential_reader_name(revision)
    objects: list[dict[str, Any]] = []
    for namespace in namespaces:
        metadata = {**_metadata(name, revision, namespaced=True), "namespace": namespace}
        objects += [
            {"apiVersion": RBAC_API_VERSION, "kind": "Role", "metadata": metadata,
             "rules": [dict(rule) for rule in CREDENTIAL_RULES]},
            {"apiVersion": RBAC_API_VERSION, "kind": "RoleBinding", "metadata": dict(metadata),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [_subject(revision)]},
        ]  # fmt: skip
    return objects
