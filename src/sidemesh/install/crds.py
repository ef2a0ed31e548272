"""The CustomResourceDefinitions of the Istio APIs the control plane reads.

`sidemesh discovery` watches `security.istio.io` PeerAuthentications; without the CRD a cluster
that never had Istio's base chart refuses `kubectl apply` of one. The same holds for Istio's
traffic API (`networking.istio.io` VirtualService, DestinationRule, ServiceEntry, Sidecar,
Gateway) and the rest of the security API (AuthorizationPolicy, RequestAuthentication), whose
schemas are generated from the models `sidemesh validate` checks (`sidemesh.api.networking`,
`sidemesh.api.security`), so the API server and our validation agree on field names and
types. CRDs are shared by every revision (and by an Istio install, if there is one), so they
carry no revision label: uninstall, which deletes by that label, never removes them. Deleting a
CRD deletes every object of its kind.

The Helm chart ships the same objects in `charts/sidemesh/crds/` (tests/install keeps them
equal; regenerate with `python -m sidemesh.install.crds charts/sidemesh/crds`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import yaml

from sidemesh.api import networking, security, telemetry
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


def _structural(node: Any, definitions: dict[str, Any]) -> Any:
    """pydantic's JSON schema as a Kubernetes structural schema: references inlined, optional
    (`X | None`) as plain X, no titles or defaults (the API server would fill defaults in),
    free-form mappings kept with x-kubernetes-preserve-unknown-fields."""
    if isinstance(node, list):
        return [_structural(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = definitions[node["$ref"].rpartition("/")[2]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, definitions)
    if "anyOf" in node:
        choices = [c for c in node["anyOf"] if c.get("type") != "null"]
        if len(choices) != 1:
            raise ValueError(f"no structural form for anyOf {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural({**choices[0], **rest}, definitions)
    schema: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default", "$defs"):
            continue
        if key == "properties":
            schema[key] = {name: _structural(sub, definitions) for name, sub in value.items()}
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                schema[key] = _structural(value, definitions)
        elif key == "items":
            schema[key] = _structural(value, definitions)
        else:
            schema[key] = value
    if schema.get("type") == "object" and not {"properties", "additionalProperties"} & set(schema):
        schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema


def networking_schema(kind: networking.Kind[Any], group: str = networking.GROUP) -> dict[str, Any]:
    """The structural schema of one `networking.istio.io` (or, given `group`, another group's)
    kind; the same for every version."""
    generated = kind.spec.model_json_schema(by_alias=True, mode="validation")
    spec = _structural(generated, generated.get("$defs", {}))
    spec["description"] = f"The {kind.name} (Istio's {group} API)."
    api = "traffic" if group == networking.GROUP else "security"
    return {
        "description": f"{kind.name}: Istio's {api} API, as sidemesh validates it.",
        "type": "object",
        "properties": {
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


# kubectl get columns, as Istio's CRDs print them.
_NETWORKING_COLUMNS: Final[dict[str, list[tuple[str, str, str]]]] = {
    "VirtualService": [
        ("Gateways", "string", ".spec.gateways"),
        ("Hosts", "string", ".spec.hosts"),
    ],
    "DestinationRule": [("Host", "string", ".spec.host")],
    "ServiceEntry": [
        ("Hosts", "string", ".spec.hosts"),
        ("Location", "string", ".spec.location"),
        ("Resolution", "string", ".spec.resolution"),
    ],
    "Sidecar": [],
    "Gateway": [],
    "AuthorizationPolicy": [("Action", "string", ".spec.action")],
    "RequestAuthentication": [],
    "Telemetry": [],
}


def _networking_version(
    kind: networking.Kind[Any], name: str, group: str = networking.GROUP
) -> dict[str, Any]:
    columns = [
        {"name": title, "type": kind_, "jsonPath": path}
        for title, kind_, path in _NETWORKING_COLUMNS[kind.name]
    ]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "name": name,
        "served": True,
        "storage": name == "v1",
        "schema": {"openAPIV3Schema": networking_schema(kind, group)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
    }


def networking_crd(
    kind: networking.Kind[Any],
    group: str = networking.GROUP,
    versions: tuple[str, ...] = networking.VERSIONS,
) -> dict[str, Any]:
    """`<plural>.networking.istio.io`: v1 stored; v1beta1 and v1alpha3 served, same schema.
    With `group` and `versions`, a security.istio.io kind (v1 stored, v1beta1 served)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{group}",
            "labels": {naming.LABEL_PART_OF: naming.PART_OF},
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind.name,
                "listKind": f"{kind.name}List",
                "plural": kind.plural,
                "singular": kind.name.lower(),
                **({"shortNames": list(kind.short_names)} if kind.short_names else {}),
                "categories": ["istio-io", f"{group.partition('.')[0]}-istio-io"],
            },
            "scope": "Namespaced",
            "versions": [_networking_version(kind, v, group) for v in versions],
        },
    }


def security_crds() -> list[dict[str, Any]]:
    """AuthorizationPolicy and RequestAuthentication (PeerAuthentication has its own)."""
    return [networking_crd(k, security.GROUP, security.VERSIONS) for k in security.KINDS.values()]


def telemetry_crd() -> dict[str, Any]:
    """`telemetries.telemetry.istio.io`: v1 stored, v1alpha1 served (as Istio serves it)."""
    return networking_crd(telemetry.KIND, telemetry.GROUP, telemetry.VERSIONS)


def custom_resource_definitions() -> list[dict[str, Any]]:
    """Every CRD an install applies (before anything that could refer to it), by name (the
    order Helm reads the chart's crds/ files in)."""
    crds = [peer_authentication(), *(networking_crd(k) for k in networking.KINDS.values()),
            *security_crds(), telemetry_crd()]  # fmt: skip
    return sorted(crds, key=lambda crd: str(crd["metadata"]["name"]))


_CHART_HEADER = """\
# {name}: the same object as src/sidemesh/install/crds.py, which
# `sidemesh install` applies (tests/install keeps them equal; written by
# `python -m sidemesh.install.crds charts/sidemesh/crds`). Helm
# installs crds/ only when the CRD is absent (an existing one, e.g. from Istio's base chart, is
# left alone) and never upgrades or deletes it: deleting a CRD deletes every object of its kind.
"""


def write_chart_crds(directory: Path) -> list[Path]:
    """Write the networking CRDs as the chart ships them (one file per CRD). The
    PeerAuthentication file keeps its hand-written header, so it is not rewritten here."""
    written = []
    for crd in [*(networking_crd(k) for k in networking.KINDS.values()), *security_crds(),
                telemetry_crd()]:
        name = crd["metadata"]["name"]
        path = directory / f"{name}.yaml"
        text = _CHART_HEADER.format(name=name) + yaml.safe_dump(crd, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_chart_crds(Path(sys.argv[1])):
        print(written_path)
