"""Turn MIL.proto `Value`s (inline or in the weight file) into NumPy arrays of their declared type and shape.

Inline tensors use whichever repeated field fits (floats, ints, ...) and pack fp16, 8-bit and sub-byte types into
`bytes`; file tensors point into a weight blob. Both must produce exactly the declared element count.
"""

from __future__ import annotations

import numpy as np

from ....pipeline.core.errors import first_line
from .blob import BlobFormatError
from .dtypes import BY_PROTO_NAME, MilType, decode_bytes
from .package import Package
from .proto import proto_modules


def tensor_type(value_type) -> tuple[MilType, tuple[int | None, ...]]:
    """(element type, shape) of a ValueType; an unknown dimension is None."""
    MIL_pb2 = proto_modules().MIL_pb2

    tt = value_type.tensorType
    name = MIL_pb2.DataType.Name(tt.dataType)
    if name not in BY_PROTO_NAME:
        raise ValueError(f"element type {name} is not supported")
    dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
    return BY_PROTO_NAME[name], dims


def decode_value(package: Package, value) -> np.ndarray:
    """A tensor Value as an array of the declared shape (rank 0 for scalars)."""
    kind = value.type.WhichOneof("type")
    if kind == "listType":
        return _list(package, value)
    if kind != "tensorType":
        raise package.error(f"cannot read a constant of kind {kind} (only tensors are supported)")
    try:
        mil_type, shape = tensor_type(value.type)
    except ValueError as e:
        raise package.error(first_line(e)) from None
    if any(d is None for d in shape):
        raise package.error("a constant has an unknown dimension")
    count = int(np.prod(shape, dtype=np.int64))
    where = value.WhichOneof("value")
    if where == "blobFileValue":
        blob = package.blob_file(value.blobFileValue.fileName)
        try:
            flat = blob.read(int(value.blobFileValue.offset), mil_type, count)
        except BlobFormatError as e:
            raise package.error(first_line(e)) from None
    elif where == "immediateValue":
        flat = _immediate(package, value.immediateValue, mil_type, count)
    else:
        raise package.error("a constant has no value")
    return flat.reshape(shape)


def _list(package: Package, value) -> np.ndarray:
    """classify's class labels arrive as an inline list of scalar tensors; they become one 1-D array."""
    if value.WhichOneof("value") != "immediateValue" or value.immediateValue.WhichOneof("value") != "list":
        raise package.error("a list constant is not stored inline")
    items = [decode_value(package, item) for item in value.immediateValue.list.values]
    if any(item.ndim != 0 for item in items):
        raise package.error("a list constant holds non-scalar elements")
    length = value.type.listType.length
    if length.WhichOneof("dimension") == "constant" and length.constant.size != len(items):
        raise package.error(f"a list constant declares {length.constant.size} elements and holds {len(items)}")
    if items and items[0].dtype == object:
        return np.array([item[()] for item in items], dtype=object)
    return np.array([item[()] for item in items])


def _immediate(package: Package, immediate, mil_type: MilType, count: int) -> np.ndarray:
    if immediate.WhichOneof("value") != "tensor":
        raise package.error(f"cannot read an inline {immediate.WhichOneof('value')} constant")
    tensor = immediate.tensor
    field = tensor.WhichOneof("value")
    if field == "bytes":
        raw = tensor.bytes.values
        try:
            flat = decode_bytes(raw, mil_type, count)
        except ValueError as e:
            raise package.error(f"inline {mil_type.name} constant is malformed ({first_line(e)})") from None
    elif field is None:
        flat = np.zeros(0, mil_type.numpy)
    else:
        items = list(getattr(tensor, field).values)
        flat = np.array(items, dtype=object if mil_type.name == "string" else mil_type.numpy)
    if flat.size != count:
        raise package.error(f"inline {mil_type.name} constant has {flat.size} values, its shape needs {count}")
    return flat
