"""SPIFFE identities of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`."""

from __future__ import annotations

from dataclasses import dataclass

SCHEME = "spiffe://"


@dataclass(frozen=True, order=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse Istio's workload form; ValueError names what is wrong."""
        if not uri.startswith(SCHEME):
            raise ValueError(f"{uri!r} is not a spiffe:// URI")
        parts = uri[len(SCHEME) :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
            raise ValueError(f"{uri!r} is not of the form spiffe://TD/ns/NS/sa/SA")
        return cls(parts[0], parts[2], parts[4])
