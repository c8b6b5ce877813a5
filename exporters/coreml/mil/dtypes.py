"""MIL element types: how the program declares them and how the weight file stores them.

One table, because the program's declared type and the blob header's type code must agree before any bytes are
trusted; a mismatch means the package was assembled wrongly and running it would compute garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MilType:
    name: str  # the MIL spelling, as in op definitions ("fp16", "uint6")
    numpy: np.dtype  # the dtype values are decoded into
    bits: int  # storage width; below 8 means bit-packed
    signed: bool
    blob_code: int | None  # MILBlob BlobDataType, None when the weight file cannot hold this type

    @property
    def sub_byte(self) -> bool:
        return self.bits < 8


def _t(name, numpy, bits, signed, blob_code=None):
    return MilType(name, np.dtype(numpy), bits, signed, blob_code)


# keyed by the MIL.proto DataType enum name
BY_PROTO_NAME: dict[str, MilType] = {
    "BOOL": _t("bool", np.bool_, 8, False),
    "STRING": _t("string", np.object_, 0, False),
    "FLOAT16": _t("fp16", np.float16, 16, True, 1),
    "FLOAT32": _t("fp32", np.float32, 32, True, 2),
    "FLOAT64": _t("fp64", np.float64, 64, True),
    "BFLOAT16": _t("bf16", np.float32, 16, True, 5),
    "INT8": _t("int8", np.int8, 8, True, 4),
    "INT16": _t("int16", np.int16, 16, True, 6),
    "INT32": _t("int32", np.int32, 32, True, 14),
    "INT64": _t("int64", np.int64, 64, True),
    "INT4": _t("int4", np.int8, 4, True, 8),
    "UINT8": _t("uint8", np.uint8, 8, False, 3),
    "UINT16": _t("uint16", np.uint16, 16, False, 7),
    "UINT32": _t("uint32", np.uint32, 32, False, 15),
    "UINT64": _t("uint64", np.uint64, 64, False),
    "UINT1": _t("uint1", np.uint8, 1, False, 9),
    "UINT2": _t("uint2", np.uint8, 2, False, 10),
    "UINT3": _t("uint3", np.uint8, 3, False, 12),
    "UINT4": _t("uint4", np.uint8, 4, False, 11),
    "UINT6": _t("uint6", np.uint8, 6, False, 13),
}

FLOAT_TYPES = ("fp16", "fp32", "fp64", "bf16")


def unpack_bits(raw: np.ndarray, bits: int, count: int, signed: bool = False) -> np.ndarray:
    """Sub-byte elements are packed from the least significant bit of each byte upward, crossing byte borders."""
    stream = np.unpackbits(np.ascontiguousarray(raw, dtype=np.uint8), bitorder="little")
    needed = count * bits
    if stream.size < needed:
        raise ValueError(f"{count} {bits}-bit values need {needed} bits, only {stream.size} stored")
    values = stream[:needed].reshape(count, bits).astype(np.int16) @ (1 << np.arange(bits, dtype=np.int16))
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values


def decode_bytes(raw: bytes | np.ndarray, mil_type: MilType, count: int) -> np.ndarray:
    """Whole-byte types are little-endian arrays; bf16 keeps the top half of an fp32."""
    if mil_type.sub_byte:
        return unpack_bits(np.frombuffer(raw, np.uint8), mil_type.bits, count, mil_type.signed).astype(mil_type.numpy)
    if mil_type.name == "bf16":
        halves = np.frombuffer(raw, "<u2", count=count).astype(np.uint32)
        return (halves << 16).view(np.float32)
    return np.frombuffer(raw, mil_type.numpy.newbyteorder("<"), count=count).astype(mil_type.numpy)
