"""The few protobuf wire-format pieces we write by hand: varints and length-delimited fields.

Used where building a message object would cost more than the bytes (xDS responses assembled
from pre-encoded resources)."""

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


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (a string, bytes, or embedded message)."""
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload
