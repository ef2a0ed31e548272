"""Registries → mesh model → Envoy resources → ADS.

`model` (immutable snapshot) ← `builder` ← `registry_files` / `registry_kube` (via `convert`);
`generate` assembles `outbound` + `inbound` resources (names in `resource_names`, Envoy JSON in
`envoy_json`), `cache` encodes each once and shares it, `responses` splices responses, `ads`
serves them; `server.ControlPlaneServer` runs ADS + CA (TLS in `tls_front`, callers checked by
`authn`) + monitoring.
"""
