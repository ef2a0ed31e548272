"""AuthorizationPolicy enforced by the backend's real Envoy (HTTP and TCP).

A DENY on `GET /admin` answers 403 and leaves `/` open; an ALLOW for the frontend's identity
lets `frontend` in and refuses `client` (403 over HTTP, the connection closed over TCP), while
the DENY still wins for `frontend` on `/admin`."""

from __future__ import annotations

import os
from typing import Any

import yaml
from mesh_kit import BACKEND, MeshKit, backend_url, start_pods
from sidecar_kubelet import HTTP_PORT, NAMESPACE
from sidecar_pod import Pod

TCP_URL = backend_url("/over-tcp", port=9000)


def _write_policy(kit: MeshKit, name: str, spec: dict[str, Any]) -> None:
    """Written beside the registry files the control plane watches (atomically)."""
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}  # fmt: skip
    path = kit.registry_dir / f"authz-{name}.yaml"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(policy))
    os.replace(temporary, path)


def _outcome(pod: Pod, url: str) -> str:
    """ "ok", "403", or the client's error for one request made by the pod's app."""
    result = pod.app_get(url, timeout=3)
    if result["ok"]:
        return "ok"
    error = str(result["errors"][0])
    return "403" if "HTTP 403" in error else error


def test_deny_and_allow_by_principal_over_http_and_tcp(kit: MeshKit) -> None:
    kit.add_service(BACKEND)
    client = kit.add_pod("client-0", app="client", service_account="client")
    frontend = kit.add_pod("frontend-0", app="frontend", service_account="frontend")
    backend = kit.add_pod("backend-0", app="backend", service_account="backend")
    # In place before the first connection: a policy change leaves connections that already
    # exist on the old filter chains until Envoy drains them (drainDuration, as in Istio).
    kit.registry_dir.mkdir(exist_ok=True)
    # Only the HTTP port is named: on TCP chains a DENY drops its HTTP-only conditions and
    # would refuse every connection (Istio's fail-closed rule), so the port keeps it narrow.
    _write_policy(kit, "deny-admin", {
        "selector": {"matchLabels": {"app": "backend"}}, "action": "DENY",
        "rules": [{"to": [{"operation": {"ports": [str(HTTP_PORT)], "methods": ["GET"],
                                         "paths": ["/admin", "/admin/*"]}}]}],
    })  # fmt: skip
    _write_policy(kit, "allow-frontend", {
        "selector": {"matchLabels": {"app": "backend"}},
        "rules": [{"from": [{"source": {"principals": [frontend.spiffe_id.removeprefix(
            "spiffe://")]}}]}],
    })  # fmt: skip
    kit.start_control_plane()
    start_pods(backend, client, frontend)

    assert _outcome(frontend, backend_url("/")) == "ok"  # the DENY leaves / open
    assert _outcome(frontend, backend_url("/admin")) == "403"  # DENY before ALLOW
    assert _outcome(frontend, backend_url("/admin/users")) == "403"
    assert _outcome(frontend, backend_url("/public/../admin")) == "403"  # normalized first
    assert _outcome(client, backend_url("/")) == "403"  # no ALLOW rule matches it
    # TCP: the frontend's connection is proxied, the client's is closed by network RBAC.
    assert _outcome(frontend, TCP_URL) == "ok"
    refused = _outcome(client, TCP_URL)
    assert refused not in ("ok", "403"), refused
    stats = backend.stats()
    http_denied = sum(v for k, v in stats.items() if k.startswith("http.") and
                      k.endswith("rbac.denied"))  # fmt: skip
    tcp_denied = sum(v for k, v in stats.items() if not k.startswith("http.") and
                     k.endswith("rbac.denied"))  # fmt: skip
    assert (http_denied, tcp_denied) == (4, 1), {k: v for k, v in stats.items() if "rbac" in k}
