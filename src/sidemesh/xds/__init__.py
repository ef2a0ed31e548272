"""Registries → mesh model → Envoy resources → ADS.

`model` (immutable snapshot) ← `builder` ← `registry_files` / `registry_kube` (via `convert`);
`generate` (+ `envoy_json`) makes resources, `cache` serialises and shares them, `ads` serves
them, `server.ControlPlaneServer` runs ADS + CA + monitoring.
"""
