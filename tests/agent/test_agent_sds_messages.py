"""The hand-written SDS wire format agrees with the real protobuf classes, both ways."""

from __future__ import annotations

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from sidemesh.agent import sds_messages
from sidemesh.agent.sds_messages import SECRET_TYPE, WireError, decode_request


def test_requests_decode_as_protobuf_encodes_them() -> None:
    request = discovery_pb2.DiscoveryRequest(
        version_info="7", resource_names=["default", "ROOTCA"], type_url=SECRET_TYPE,
        response_nonce="abc",
    )  # fmt: skip
    request.node.id = "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local"
    request.node.metadata.update({"LABELS": "x" * 300})  # a long nested field, skipped
    decoded = decode_request(request.SerializeToString())
    assert decoded.resource_names == ["default", "ROOTCA"]
    assert (decoded.version_info, decoded.type_url, decoded.response_nonce) == (
        "7", SECRET_TYPE, "abc",
    )  # fmt: skip
    assert decoded.error_message is None


def test_a_nack_carries_envoys_reason() -> None:
    request = discovery_pb2.DiscoveryRequest(resource_names=["default"], response_nonce="n")
    request.error_detail.CopyFrom(status_pb2.Status(code=3, message="bad key type"))
    assert decode_request(request.SerializeToString()).error_message == "bad key type"
    empty = discovery_pb2.DiscoveryRequest()
    empty.error_detail.SetInParent()  # present, though empty: still a NACK
    assert decode_request(empty.SerializeToString()).error_message == ""


def test_responses_parse_as_protobuf() -> None:
    chain, key, root = b"-----CHAIN-----\n" * 200, b"-----KEY-----\n", b"-----ROOT-----\n"
    encoded = sds_messages.discovery_response(
        version_info="3",
        secrets=[
            sds_messages.certificate_secret("default", chain_pem=chain, key_pem=key),
            sds_messages.validation_secret("ROOTCA", trusted_ca_pem=root),
        ],
        nonce="n1",
    )
    response = discovery_pb2.DiscoveryResponse.FromString(encoded)
    assert (response.version_info, response.type_url, response.nonce) == ("3", SECRET_TYPE, "n1")
    secrets = {}
    for resource in response.resources:
        assert resource.type_url == SECRET_TYPE
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        secrets[secret.name] = secret
    assert secrets["default"].tls_certificate.certificate_chain.inline_bytes == chain
    assert secrets["default"].tls_certificate.private_key.inline_bytes == key
    assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == root


@pytest.mark.parametrize("junk", [b"\x0a\x05ab", b"\x80", b"\x0b"])
def test_malformed_requests_are_refused(junk: bytes) -> None:
    with pytest.raises(WireError):
        decode_request(junk)
