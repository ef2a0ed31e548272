"""AuthorizationPolicy / RequestAuthentication → Envoy filters, measured. Prints ONE JSON line.

A mesh of `--proxies` sidecars in one namespace under `--policies` ALLOW policies (each a few
principals, paths, methods and a claim condition), one DENY and one RequestAuthentication:

* `translate_ms`: one workload's policy translated from scratch (RBAC for HTTP and TCP chains,
  jwt_authn), the median of 50;
* `snapshot_s`: every proxy's inbound policy for one snapshot (workloads with the same labels
  share one translation);
* `http_filters_bytes`: the size of the HTTP filters' canonical JSON for one workload.

Pure Python, no Envoy. Nothing here gates CI.

    .venv/bin/python benchmarks/authz_translation.py [--proxies N] [--policies N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from sidemesh.api import security
from sidemesh.api.networking import Resource
from sidemesh.xds import inbound_policy as module
from sidemesh.xds.inbound_policy import inbound_policy
from sidemesh.xds.model import MeshSnapshot


def _resource(kind: str, name: str, spec: dict[str, Any]) -> Resource[Any]:
    return security.validate({"apiVersion": "security.istio.io/v1", "kind": kind,
                              "metadata": {"name": name, "namespace": "shop"},
                              "spec": spec})  # fmt: skip


def _snapshot(policies: int) -> MeshSnapshot:
    allows = [
        _resource("AuthorizationPolicy", f"allow-{i}", {
            "selector": {"matchLabels": {"app": f"app-{i % 10}"}},
            "rules": [{
                "from": [{"source": {"principals": [f"cluster.local/ns/shop/sa/caller-{j}"
                                                    for j in range(3)]}}],
                "to": [{"operation": {"methods": ["GET", "POST"],
                                      "paths": ["/api/*", f"/v{i}/items"]}}],
                "when": [{"key": "request.auth.claims[groups]", "values": ["staff"]}],
            }],
        })
        for i in range(policies)
    ]  # fmt: skip
    deny = _resource("AuthorizationPolicy", "deny-admin", {
        "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]})  # fmt: skip
    issuer = "https://issuer.example"
    jwt = _resource("RequestAuthentication", "jwt",
                    {"jwtRules": [{"issuer": issuer, "jwksUri": f"{issuer}/jwks"}]})  # fmt: skip
    return MeshSnapshot(version=1, authorization_policies=(*allows, deny),
                        request_authentications=(jwt,))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=50)
    args = parser.parse_args()
    snapshot = _snapshot(args.policies)
    labels = {"app": "app-0"}
    samples = []
    for _ in range(50):
        module._MEMO.clear()
        started = time.perf_counter()
        policy = inbound_policy(snapshot, "shop", labels)
        samples.append(time.perf_counter() - started)
    module._MEMO.clear()
    started = time.perf_counter()
    for index in range(args.proxies):
        inbound_policy(snapshot, "shop", {"app": f"app-{index % 10}"})
    snapshot_seconds = time.perf_counter() - started
    print(json.dumps({
        "proxies": args.proxies, "policies": args.policies + 2,
        "translate_ms": round(statistics.median(samples) * 1000, 3),
        "snapshot_s": round(snapshot_seconds, 4),
        "http_filters_bytes": len(policy.http_filters),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
