"""Registries → mesh model → Envoy resources → ADS.

`model` (immutable snapshot) ← `builder` ← `registry_files` / `registry_kube` (via `convert`,
and `api.networking.validate` for VirtualService/DestinationRule); `generate` assembles
`outbound` + `inbound` resources (VirtualService routes from `routes`, DestinationRule cluster
fields from `cluster_policy`, names in `resource_names`, Envoy JSON in `envoy_json`), `cache`
encodes each once and shares it, `responses` splices responses, `ads` serves them;
`server.ControlPlaneServer` runs ADS + CA (TLS in `tls_front`, callers checked by `authn`) +
monitoring.
"""
