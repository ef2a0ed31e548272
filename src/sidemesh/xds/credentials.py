"""Gateway TLS credentials: Kubernetes Secrets named by a Gateway server's `credentialName`.

Istio's formats, both accepted: `kubernetes.io/tls` (`tls.crt`, `tls.key`, optional `ca.crt`)
and the generic one (`cert`, `key`, optional `cacert`); a separate `<name>-cacert` Secret for
the client CA is not read. A Secret is only usable when its certificate chain and key parse
(and belong together): Envoy refuses a listener with a broken certificate, which would hold back
the gateway's every other listener, so a bad credential fails here, alone, with a reason.

The key is material the control plane hands only to gateways of the Secret's own namespace
(see `xds.gateway`); it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

TLS_SECRET_TYPE = "kubernetes.io/tls"
_KEYS = (("tls.crt", "tls.key", "ca.crt"), ("cert", "key", "cacert"))


@dataclass(frozen=True)
class TlsCredential:
    namespace: str
    name: str
    certificate_chain: str = field(repr=False)  # PEM
    private_key: str = field(repr=False)  # PEM
    ca_certificates: str = field(default="", repr=False)  # PEM; "" when the Secret has none


class CredentialError(ValueError):
    """A Secret that cannot serve as a gateway credential; the message never quotes it."""


def _field(secret: Mapping[str, Any], key: str) -> str | None:
    """A Secret field as text: `stringData` as written, `data` base64-decoded."""
    plain = secret.get("stringData") or {}
    if isinstance(plain, Mapping) and isinstance(plain.get(key), str):
        return str(plain[key])
    encoded = secret.get("data") or {}
    raw = encoded.get(key) if isinstance(encoded, Mapping) else None
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise CredentialError(f"data.{key} is not a base64 string")
    try:
        return base64.b64decode(raw, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialError(f"data.{key} is not base64-encoded PEM") from None


def _check_pair(chain: str, key: str) -> None:
    try:
        certificates = x509.load_pem_x509_certificates(chain.encode())
    except ValueError:
        raise CredentialError("the certificate chain is not PEM certificates") from None
    try:
        private_key = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialError("the private key is not an unencrypted PEM key") from None
    public = (
        certificates[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    own = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != own:
        raise CredentialError("the private key does not belong to the first certificate")


def tls_credential(secret: Mapping[str, Any]) -> TlsCredential:
    """The credential a Secret holds; raises CredentialError (naming the Secret, not its data)."""
    meta = secret.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    try:
        for cert_key, key_key, ca_key in _KEYS:
            chain, key = _field(secret, cert_key), _field(secret, key_key)
            if chain is not None and key is not None:
                _check_pair(chain, key)
                ca = _field(secret, ca_key) or ""
                if ca:
                    try:
                        x509.load_pem_x509_certificates(ca.encode())
                    except ValueError:
                        raise CredentialError(f"{ca_key} is not PEM certificates") from None
                return TlsCredential(namespace, name, chain, key, ca)
        raise CredentialError("has neither tls.crt/tls.key nor cert/key")
    except CredentialError as exc:
        raise CredentialError(f"Secret {namespace}/{name}: {exc}") from None


def credentials_of(
    secrets: Iterable[Mapping[str, Any]], problems: list[str]
) -> dict[tuple[str, str], TlsCredential]:
    """(namespace, name) → credential for every Secret that holds one. Secrets of other types
    (service-account tokens, docker configs) are not credentials and are skipped silently;
    a TLS-shaped one that is broken is skipped with its reason appended to `problems`."""
    found: dict[tuple[str, str], TlsCredential] = {}
    for secret in secrets:
        kind = secret.get("type")
        data = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
        if kind != TLS_SECRET_TYPE and not any(c in data and k in data for c, k, _ in _KEYS):
            continue
        try:
            credential = tls_credential(secret)
        except CredentialError as exc:
            problems.append(str(exc))
            continue
        found[(credential.namespace, credential.name)] = credential
    return found
