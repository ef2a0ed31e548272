"""The few protobuf wire-format pieces we write by hand: varints and length-delimited fields.

Used where building a message object would cost more than the bytes (xDS responses assembled
from pre-encoded resources) or where no generated class exists (the gRPC health check the
agent sends to apps)."""

from __future__ import annotations


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    """(value, next position); ValueError for a truncated or over-long varint."""
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (a string, bytes, or embedded message)."""
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload
