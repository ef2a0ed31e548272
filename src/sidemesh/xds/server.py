"""The control plane's gRPC and monitoring servers: ADS + CA on :15012 (TLS, every ADS stream
authenticated, see `authn.py`), metrics and proxy status on :15014, and — only when asked for —
ADS on :15010 in plaintext, unauthenticated: anyone who reaches that port reads the whole mesh
configuration, so it is off unless a port is given (the agent uses it only with
`--xds-plaintext`).

`sidemesh discovery` wires it as:

    server = ControlPlaneServer(config=ControlPlaneConfig(...), snapshot=initial,
                                ca=ca, authenticator=authenticator, registry=registry)
    await server.start()  ...  await server.stop()

with `ca` from `security.store.load_or_create_ca`, `authenticator` a
`security.authn.TokenReviewAuthenticator` (Kubernetes) or `LocalTokenAuthenticator` (single
host), and `registry` a `registry_kube.KubeRegistry` or `registry_files.FileRegistry`.
The serving certificate for :15012 is issued by the same CA for `istiod[-REV].istio-system.svc`
(and the other names Istio uses) plus `spiffe://<td>/ns/istio-system/sa/istiod`, and renewed at
half its lifetime, or at once when `use_ca` swaps in a CA whose root was renewed. TLS on
:15012 ends in `tls_front.TlsFront` (a client certificate is optional and verified when given,
which grpcio's credentials cannot express); the gRPC server behind it listens on loopback only.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any, Protocol

from grpc import aio

from sidemesh.api import names
from sidemesh.security.authn import Authenticator
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.security.server import CaMetrics, CertificateService
from sidemesh.xds.ads import AdsServer
from sidemesh.xds.authn import XdsAuthenticator
from sidemesh.xds.metrics import XdsMetrics
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.monitoring import MonitoringServer
from sidemesh.xds.tls_front import TlsFront

log = logging.getLogger("sidemesh.xds.server")

SERVING_CERT_TTL = datetime.timedelta(hours=24)
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # After a control-plane restart every sidecar reconnects at once. grpc.aio takes new calls
    # off the core's queue one per event-loop turn, so thousands can wait a moment; gRPC's
    # defaults reject calls at random from 1,000 waiting and all from 3,000, which the proxies
    # see as CANCELLED streams (and retry after a backoff). Waiting is cheaper than retrying.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]
LOOPBACK = "127.0.0.1"


class Registry(Protocol):
    async def run(self, publish: Any) -> None:
        """Publish snapshots (`publish(snapshot)`) until cancelled."""


@dataclass(frozen=True)
class ControlPlaneConfig:
    host: str = "0.0.0.0"
    plaintext_port: int | None = None  # e.g. names.PORT_XDS_PLAINTEXT; None: not served
    tls_port: int | None = names.PORT_XDS_TLS  # needs a CA
    monitoring_port: int | None = names.PORT_MONITORING
    revision: str = "default"
    instance_id: str = field(default_factory=socket.gethostname)
    extra_dns_names: tuple[str, ...] = ()

    def dns_names(self) -> list[str]:
        service = names.service_name(self.revision)
        namespace = names.CONTROL_PLANE_NAMESPACE
        return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                f"{service}.{namespace}.svc.cluster.local", *self.extra_dns_names]  # fmt: skip


class ControlPlaneServer:
    def __init__(
        self,
        *,
        config: ControlPlaneConfig,
        snapshot: MeshSnapshot | None = None,
        ca: CertificateAuthority | None = None,
        authenticator: Authenticator | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self.xds_metrics = XdsMetrics()
        self.ca_metrics = CaMetrics()
        self.ads = AdsServer(
            snapshot or MeshSnapshot(version=0),
            instance_id=config.instance_id,
            metrics=self.xds_metrics,
            wait_for_first_snapshot=snapshot is None and registry is not None,
        )
        self.ca = ca
        self.certificates = (
            CertificateService(ca=ca, authenticator=authenticator, metrics=self.ca_metrics)
            if ca is not None and authenticator is not None
            else None
        )
        self.authenticator = authenticator
        self.registry = registry
        self.front: TlsFront | None = None
        # /debug/* answers loopback, or a token this authenticator accepts (monitoring.py).
        self.monitoring = MonitoringServer(
            metrics=self.render_metrics, syncz=self.ads.status, authenticator=authenticator,
            ready=self.ads.initialized.is_set,
        )
        self._servers: list[aio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.ports: dict[str, int] = {}
        self._serving_context: ssl.SSLContext | None = None
        self._serving_renew_at: datetime.datetime | None = None
        if ca is not None:
            self.ca_metrics.root_expiry = ca.root.not_valid_after_utc

    def use_ca(self, ca: CertificateAuthority) -> None:
        """Sign and trust with `ca` from now on (its root was renewed): new CSRs get chains
        ending in its root, and the next TLS handshake on :15012 gets a serving certificate it
        signed and verifies client certificates against all of its trusted roots."""
        if self.ca is not None and ca.trust_domain != self.ca.trust_domain:
            raise ValueError(
                f"the trust domain cannot change from {self.ca.trust_domain} to {ca.trust_domain}"
            )
        self.ca = ca
        if self.certificates is not None:
            self.certificates.ca = ca
        self.ca_metrics.root_expiry = ca.root.not_valid_after_utc
        self._serving_context = None  # rebuilt from the new CA at the next connection
        self._serving_renew_at = None

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self.ads.set_snapshot(snapshot)

    def render_metrics(self) -> str:
        return "\n".join([*self.xds_metrics.render(), *self.ca_metrics.render(), ""])

    async def start(self) -> None:
        host = self.config.host
        if self.config.plaintext_port is not None:
            server = aio.server(options=GRPC_OPTIONS)
            server.add_generic_rpc_handlers((self.ads.handler(),))
            self.ports["xds"] = server.add_insecure_port(f"{host}:{self.config.plaintext_port}")
            self._servers.append(server)
            log.warning("xDS on %s:%d is plaintext and unauthenticated: whoever reaches it "
                        "reads the mesh configuration", host, self.ports["xds"])  # fmt: skip
        backend_port = None
        if self.config.tls_port is not None and self.ca is not None:
            self.front = TlsFront(context=self._tls_context)
            authenticator = XdsAuthenticator(
                trust_domain=self.ca.trust_domain,
                peer_identities=self.front.identities,
                tokens=self.authenticator,
            )
            server = aio.server(options=GRPC_OPTIONS)
            handlers = [self.ads.handler(authenticator)]
            if self.certificates is not None:
                handlers.append(self.certificates.handler())
            server.add_generic_rpc_handlers(tuple(handlers))
            backend_port = server.add_insecure_port(f"{LOOPBACK}:0")
            self._servers.append(server)
        for server in self._servers:
            await server.start()
        if self.front is not None and backend_port is not None:
            self.ports["xds-tls"] = await self.front.start(
                host, self.config.tls_port or 0, backend=(LOOPBACK, backend_port)
            )
        if self.config.monitoring_port is not None:
            await self.monitoring.start(host, self.config.monitoring_port)
            self.ports["monitoring"] = self.monitoring.port
        if self.registry is not None:
            self._tasks.append(asyncio.create_task(self.registry.run(self.set_snapshot)))
        log.info("control plane %s serving: %s", self.config.instance_id, self.ports)

    async def stop(self, grace: float | None = 1.0) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.front is not None:
            await self.front.stop()
            self.front = None
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        self._servers.clear()
        await self.monitoring.stop()

    # --- the serving certificate -----------------------------------------------------------

    def _issue_serving_certificate(self) -> tuple[bytes, bytes]:
        assert self.ca is not None
        now = datetime.datetime.now(datetime.UTC)
        identity = SpiffeId(self.ca.trust_domain, names.CONTROL_PLANE_NAMESPACE, "istiod")
        chain, key = self.ca.issue_serving_certificate(
            dns_names=self.config.dns_names(), identity=identity, now=now, ttl=SERVING_CERT_TTL
        )
        self._serving_renew_at = now + SERVING_CERT_TTL / 2
        return chain.encode(), key

    def _tls_context(self) -> ssl.SSLContext:
        """The current TLS context for :15012 (a fresh serving certificate at half-life)."""
        renew_at = self._serving_renew_at
        if (
            self._serving_context is not None
            and renew_at is not None
            and datetime.datetime.now(datetime.UTC) < renew_at
        ):
            return self._serving_context
        assert self.ca is not None
        chain, key = self._issue_serving_certificate()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["h2"])
        # Ask for a client certificate; verify it against every trusted root if one is sent
        # (during a root rotation: the old root and the new one).
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=self.ca.root_pem())
        with tempfile.TemporaryDirectory(prefix="sidemesh-serving-") as directory:
            chain_file, key_file = os.path.join(directory, "c.pem"), os.path.join(directory, "k")
            for path, data in ((chain_file, chain), (key_file, key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                    out.write(data)
            context.load_cert_chain(chain_file, key_file)
        self._serving_context = context
        return context
