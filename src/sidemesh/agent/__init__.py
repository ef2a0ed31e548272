"""The sidecar agent: what the `istio-proxy` container runs (`sidemesh agent proxy sidecar`).

It obtains the workload certificate from the control plane's CA, serves it to Envoy over SDS on
a Unix socket, writes Envoy's bootstrap and supervises Envoy, and answers the pod's probes and
Prometheus scrapes on the status port (15020).

Pure modules (`config` parsing helpers, `bootstrap`, `probes`, `metrics`, `readiness`,
`sds_messages`) build data; the I/O edges (`issuing`, `sds`, `server`, `prober`, `status`,
`envoy`, `http`) talk to the world; `run` wires them together.

Processes: `sidemesh agent proxy` resolves the settings and execs `python -m sidemesh.agent`
(`launch`), which runs for the life of the pod and loads no CLI, pydantic, gRPC, protobuf or
crypto; each certificate request runs in a short-lived child
(`python -m sidemesh.agent.request_certificate`, with `ca_client` and `certs`).
"""
