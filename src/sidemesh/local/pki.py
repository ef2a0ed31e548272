"""The runtime's certificate authority, and the pod identities' tokens.

One root CA per runtime, kept in Istio's plug-in CA layout (`cacerts`: ca-cert.pem, ca-key.pem,
cert-chain.pem, root-cert.pem) so the control plane's mesh CA can sign workload certificates
with it. It also signs each control plane's webhook serving certificate, which the runtime
(playing the API server) trusts; every pod gets its root as ConfigMap `istio-ca-root-cert`.

Tokens: one random token per pod identity (namespace, service account), kept in a root-only
directory for the pods' projected `istio-token` volumes; their SHA-256 digests go to the token
file the control plane reads (`sidemesh.security.authn.LocalTokenAuthenticator`).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from sidemesh.api import names
from sidemesh.security.authn import issue_local_token
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.files import write_atomically
from sidemesh.security.identity import SpiffeId
from sidemesh.security.store import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, CaMaterial

SERVING_TTL = datetime.timedelta(days=90)
TOKEN_FILE = "tokens.yaml"


class LocalPki:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "pki"
        self.identity_dir = state_dir / "identity"  # plaintext tokens, root only
        self.tokens_dir = state_dir / "tokens"  # digests, mounted into the control plane
        self.token_file = self.tokens_dir / TOKEN_FILE

    def ensure(self) -> CertificateAuthority:
        """Load the runtime's CA, creating it on first use."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths = {n: self.directory / n for n in (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)}
        if not paths[CA_KEY].exists():
            now = datetime.datetime.now(datetime.UTC)
            authority = CertificateAuthority.self_signed(trust_domain=names.TRUST_DOMAIN, now=now)
            for name, data in CaMaterial.from_ca(authority).as_files().items():
                write_atomically(paths[name], data, 0o600)
            return authority
        material = CaMaterial(
            ca_cert=paths[CA_CERT].read_bytes(),
            ca_key=paths[CA_KEY].read_bytes(),
            cert_chain=paths[CERT_CHAIN].read_bytes(),
            root_cert=paths[ROOT_CERT].read_bytes(),
        )
        return material.to_ca(names.TRUST_DOMAIN)

    def root_pem(self) -> str:
        return (self.directory / ROOT_CERT).read_text(encoding="ascii")

    def ca_files(self) -> dict[str, str]:
        """The `cacerts` Secret's data (PEM text), for the control plane."""
        self.ensure()
        return {
            n: (self.directory / n).read_text(encoding="ascii")
            for n in (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)
        }

    def serving_certificate(self, dns_names: list[str]) -> tuple[str, str]:
        """(certificate chain PEM, key PEM) for a control plane's webhook."""
        authority = self.ensure()
        identity = SpiffeId(names.TRUST_DOMAIN, names.CONTROL_PLANE_NAMESPACE, "istiod")
        cert, key = authority.issue_serving_certificate(
            dns_names=dns_names,
            identity=identity,
            now=datetime.datetime.now(datetime.UTC),
            ttl=SERVING_TTL,
        )
        return cert, key.decode("ascii")

    def token(self, namespace: str, service_account: str) -> str:
        """The identity's token, issued (and its digest recorded) on first use."""
        path = self.identity_dir / namespace / service_account
        if path.exists():
            return path.read_text(encoding="ascii")
        self.tokens_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = issue_local_token(
            self.token_file, namespace=namespace, service_account=service_account
        )
        os.chmod(self.token_file, 0o644)  # digests only; the control plane runs as uid 1337
        write_atomically(path, token.encode("ascii"), 0o600)
        return token
