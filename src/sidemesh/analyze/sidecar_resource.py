"""SM0015 SidecarListenerNotServed: a Sidecar listener asking for what the control plane does
not do, so the user learns it from `sidemesh analyze` and not from missing traffic.

The reasons are the generator's own (`xds.sidecar_ingress`, `xds.sidecar_egress`): an ingress
port with `tls` (the pod's own certificate files) or on one of the proxy's ports is dropped; an
egress listener bound to a unix domain socket, on one of the proxy's ports, or `captureMode:
NONE` without a port gets no listener of its own. Pure: parsed Sidecars in, findings out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sidemesh.analyze import findings as codes
from sidemesh.analyze.findings import Finding
from sidemesh.api.networking import Resource, Sidecar
from sidemesh.xds.sidecar_egress import egress_plan
from sidemesh.xds.sidecar_ingress import ingress_decisions

POD_IP = "<pod IP>"  # the decisions read it only to word a forward to the pod's own address


def sidecar_findings(
    sidecars: Iterable[Resource[Sidecar]], scope: set[str] | None
) -> Iterator[Finding]:
    for sidecar in sidecars:
        if scope is not None and sidecar.namespace not in scope:
            continue
        where = f"Sidecar {sidecar.namespace}/{sidecar.name}"
        decisions = ingress_decisions(sidecar.spec.ingress, pod_ip=POD_IP)
        for index, decision in enumerate(decisions):
            if decision.port.refused:
                yield Finding(
                    codes.SIDECAR_LISTENER_NOT_SERVED, where,
                    f"spec.ingress[{index}]: {decision.reason}",
                    "serve the port without tls (mTLS still applies), or terminate TLS in "
                    "the app; move a listener off the proxy's ports (15000-15090)",
                )  # fmt: skip
        plan = egress_plan(sidecar.spec)
        for limit in () if plan is None else plan.limits:
            yield Finding(
                codes.SIDECAR_LISTENER_NOT_SERVED, where, f"spec.{limit}",
                "bind an IP address (captureMode NONE defaults to 127.0.0.1) and give the "
                "listener a port outside the proxy's own (15000-15090)",
            )  # fmt: skip
