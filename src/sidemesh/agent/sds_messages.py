"""The SDS messages the agent exchanges with Envoy, in protobuf's wire format (pure).

The agent reads one message type (DiscoveryRequest: names, nonce, version, error) and writes
two (DiscoveryResponse carrying Secrets). Encoding and decoding these few fields by hand costs a
page of code; loading protobuf and the xds-protos descriptor pools for them cost the agent
megabytes for the life of the pod. Field numbers are those of
envoy/service/discovery/v3/discovery.proto and
envoy/extensions/transport_sockets/tls/v3/{secret,common}.proto; tests check this encoding
against the real protobuf classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from sidemesh.api.protowire import length_delimited

SECRET_TYPE: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

_VARINT: Final = 0
_FIXED64: Final = 1
_LENGTH_DELIMITED: Final = 2
_FIXED32: Final = 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _string(number: int, text: str) -> bytes:
    return length_delimited(number, text.encode()) if text else b""


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise WireError("truncated or oversized varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field: ints for varints, bytes for the rest."""
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == _VARINT:
            value, position = _read_varint(data, position)
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _read_varint(data, position)
            if position + length > len(data):
                raise WireError("truncated field")
            value, position = data[position : position + length], position + length
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value, position = data[position : position + size], position + size
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        yield number, value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise WireError("expected a string field")
    return value.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SecretRequest:
    """A DiscoveryRequest, reduced to what the SDS server acts on."""

    resource_names: list[str] = field(default_factory=list)
    type_url: str = ""
    version_info: str = ""
    response_nonce: str = ""
    error_message: str | None = None  # set when Envoy NACKs (error_detail present)


def decode_request(data: bytes) -> SecretRequest:
    names: list[str] = []
    values = {"type_url": "", "version_info": "", "response_nonce": ""}
    error: str | None = None
    for number, value in fields(data):
        if number == 1:
            values["version_info"] = _text(value)
        elif number == 3:
            names.append(_text(value))
        elif number == 4:
            values["type_url"] = _text(value)
        elif number == 5:
            values["response_nonce"] = _text(value)
        elif number == 6:  # google.rpc.Status: code 1, message 2
            if not isinstance(value, bytes):
                raise WireError("error_detail is not a message")
            error = "".join(_text(v) for n, v in fields(value) if n == 2)
    return SecretRequest(resource_names=names, error_message=error, **values)


def _data_source(inline: bytes) -> bytes:
    return length_delimited(2, inline)  # DataSource.inline_bytes


def certificate_secret(name: str, *, chain_pem: bytes, key_pem: bytes) -> bytes:
    """Secret{name, tls_certificate{certificate_chain, private_key}}."""
    tls_certificate = length_delimited(1, _data_source(chain_pem)) + length_delimited(
        2, _data_source(key_pem)
    )
    return _string(1, name) + length_delimited(2, tls_certificate)


def validation_secret(name: str, *, trusted_ca_pem: bytes) -> bytes:
    """Secret{name, validation_context{trusted_ca}}."""
    return _string(1, name) + length_delimited(4, length_delimited(1, _data_source(trusted_ca_pem)))


def discovery_response(*, version_info: str, secrets: list[bytes], nonce: str) -> bytes:
    """DiscoveryResponse{version_info, resources: Any(Secret)…, type_url, nonce}."""
    resources = b"".join(
        length_delimited(2, _string(1, SECRET_TYPE) + length_delimited(2, secret))
        for secret in secrets
    )
    return _string(1, version_info) + resources + _string(4, SECRET_TYPE) + _string(5, nonce)
