"""The agent's certificate manager, wired the one way both agents (with and without Envoy)
need it: a short-lived issuer child per request, renewed before the TTL runs out."""

from __future__ import annotations

from pathlib import Path

from sidemesh.agent.issuing import IssuerProcess, PendingAnswer
from sidemesh.agent.issuing_protocol import CA_TIMEOUT
from sidemesh.agent.metrics import AgentMetrics
from sidemesh.agent.rotation import CertificateManager
from sidemesh.agent.settings import AgentSettings
from sidemesh.agent.telemetry import certificate_claim


def certificate_manager(
    settings: AgentSettings,
    *,
    metrics: AgentMetrics,
    output_dir: Path | None,
    first_certificate: PendingAnswer | None = None,
) -> CertificateManager:
    """`first_certificate`: a request already under way (see `launch`)."""
    control_plane = settings.control_plane
    return CertificateManager(
        client=IssuerProcess(
            address=control_plane.ca_address,
            server_name=control_plane.server_name(control_plane.ca_address),
            token_path=settings.paths.token,
            cluster_id=settings.cluster_id,
            timeout=CA_TIMEOUT,
            pending=first_certificate,
            workload=certificate_claim(settings),
        ),
        spiffe_id=settings.identity.spiffe_id,
        root_cert=settings.paths.root_cert,
        ttl=settings.cert_ttl,
        renew_fraction=settings.renew_fraction,
        metrics=metrics,
        output_dir=output_dir,
    )
