"""Moving running pods to the sidecar their namespace now selects.

`mutability` says what a running pod's spec lets Kubernetes change in place; `plan` decides,
per pod, between nothing, an in-place patch (only istio-proxy restarts) and a restart of its
workload; `upgrade` and `restarter` carry the plans out against the API server.
"""
