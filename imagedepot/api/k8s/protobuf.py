"""Just enough Kubernetes protobuf to read a core v1 Secret: kubectl sends built-in types in
protobuf, and this decoder turns the `k8s\\x00` envelope into the Secret's JSON shape. It is
a wire-format reader with no HTTP in it, so it is kept apart from the secret routes.
"""

from __future__ import annotations

import base64
from typing import Any

from imagedepot.api.k8s.status import bad_request

PROTOBUF = "application/vnd.kubernetes.protobuf"
_PROTOBUF_MAGIC = b"k8s\x00"


def _protobuf_fields(buffer: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one protobuf message (varint and length-delimited)."""
    fields: list[tuple[int, int | bytes]] = []
    position = 0

    def varint() -> int:
        nonlocal position
        value, shift = 0, 0
        while True:
            if position >= len(buffer) or shift > 63:
                raise bad_request("the protobuf body is truncated")
            byte = buffer[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(buffer):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, buffer[position : position + length]))
            position += length
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise bad_request(f"unsupported protobuf wire type {wire}")
    return fields


def _pb_text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise bad_request("the protobuf body has a number where text belongs")
    return value.decode("utf-8", errors="replace")


def _pb_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise bad_request("the protobuf body has a number where bytes belong")
    return value


def secret_from_protobuf(raw: bytes) -> dict[str, Any]:
    """A core v1 Secret sent as Kubernetes protobuf (kubectl does so for built-in types),
    read into its JSON shape: the `Unknown` envelope, then ObjectMeta name/namespace, data,
    type and stringData."""
    if not raw.startswith(_PROTOBUF_MAGIC):
        raise bad_request("the protobuf body lacks the k8s envelope")
    envelope = dict(_protobuf_fields(raw[len(_PROTOBUF_MAGIC) :]))
    type_meta = dict(_protobuf_fields(_pb_bytes(envelope.get(1, b""))))
    body: dict[str, Any] = {
        "apiVersion": _pb_text(type_meta.get(1, b"")) or None,
        "kind": _pb_text(type_meta.get(2, b"")) or None,
        "metadata": {},
        "data": {},
        "stringData": {},
    }
    for number, value in _protobuf_fields(_pb_bytes(envelope.get(2, b""))):
        if number == 1:
            meta = dict(_protobuf_fields(_pb_bytes(value)))
            for field_number, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
                if field_number in meta:
                    body["metadata"][key] = _pb_text(meta[field_number])
        elif number in (2, 4):
            entry = dict(_protobuf_fields(_pb_bytes(value)))
            key = _pb_text(entry.get(1, b""))
            if number == 2:
                body["data"][key] = base64.b64encode(_pb_bytes(entry.get(2, b""))).decode()
            else:
                body["stringData"][key] = _pb_text(entry.get(2, b""))
        elif number == 3:
            body["type"] = _pb_text(value)
    return body
