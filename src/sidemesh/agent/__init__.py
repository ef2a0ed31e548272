"""The sidecar agent: what the `istio-proxy` container runs (`sidemesh agent proxy sidecar`).

It obtains the workload certificate from the control plane's CA, serves it to Envoy over SDS on
a Unix socket, writes Envoy's bootstrap and supervises Envoy, and answers the pod's probes and
Prometheus scrapes on the status port (15020).

Pure modules (`config` parsing helpers, `bootstrap`, `probes`, `metrics`, `readiness`) build
data; the I/O edges (`ca_client`, `sds`, `prober`, `status`, `envoy`, `http`) talk to the
world; `run` wires them together.
"""
