"""The CSR wire protocol: Istio's `istio.v1.auth.IstioCertificateService/CreateCertificate`.

Built from a descriptor at import time (no generated code to vendor), byte-compatible with
Istio's `security/proto/providers/google/ca.proto` shape: an Istio agent could ask our CA and our
agent could ask istiod. The caller authenticates with its Kubernetes service-account token in
the `authorization: Bearer …` metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = f"/{SERVICE}/CreateCertificate"
AUTHORIZATION_HEADER = "authorization"
CLUSTER_ID_HEADER = "clusterid"


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The token of an `authorization: Bearer <token>` entry in gRPC metadata, if any.
    (Shared with the xDS server, which accepts the same token from a proxy.)"""
    for key, value in metadata:
        if key == AUTHORIZATION_HEADER and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _build() -> tuple[type[Any], type[Any]]:
    pool = descriptor_pool.Default()
    name = "sidemesh/istio_ca.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        # Struct's file must be in the pool before a file that imports it.
        pool.FindFileByName(struct_pb2.DESCRIPTOR.name)
        proto = descriptor_pb2.FileDescriptorProto(
            name=name, package="istio.v1.auth", syntax="proto3",
            dependency=[struct_pb2.DESCRIPTOR.name],
        )  # fmt: skip
        request = proto.message_type.add(name="IstioCertificateRequest")
        F = descriptor_pb2.FieldDescriptorProto
        request.field.add(name="csr", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        request.field.add(
            name="validity_duration", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL
        )
        request.field.add(
            name="metadata", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
            type_name=".google.protobuf.Struct",
        )  # fmt: skip
        response = proto.message_type.add(name="IstioCertificateResponse")
        response.field.add(name="cert_chain", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
        pool.Add(proto)
    request_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")
    )
    response_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")
    )
    return request_class, response_class


CertificateRequest, CertificateResponse = _build()
