"""TFLite Model Metadata (labels, normalization) written and read in-process.

Android apps load the .tflite with MediaPipe Tasks ImageClassifier or the TFLite Task Library. Both read the
`TFLITE_METADATA` entry of the model: a float input without NormalizationOptions is refused, and class names come
from the output tensor's TENSOR_AXIS_LABELS file packed in a zip appended to the model. Google's writer
(tflite-support) pins protobuf<4 and cannot live beside TensorFlow, so the metadata tables are built here with the
flatbuffers Builder, following tensorflow_lite_support/metadata/metadata_schema.fbs (file identifier "M001").

Integer inputs: both apps copy raw uint8 pixels into a uint8 input and never apply NormalizationOptions to it,
and they refuse int8 image inputs. As the schema asks ("quantized models share the same normalization
parameters as their corresponding float models") and as Google's image classifier writer does, the metadata
always carries the float-domain mean/std; Stats are the raw tensor range for uint8 ([0, 255]) and omitted for
int8. A uint8 model is only right in an app when its input quantization turns raw pixels into (pixel - mean) / std,
so that is checked here instead of surfacing as wrong predictions on a phone.

imgpipe's own Preprocessing is packed as `imgpipe.json`, a model-level associated file: Google's readers list and
ignore it, and JSON keeps every float exactly (the NormalizationOptions are float32).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import asdict
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl
from flatbuffers import number_types as N
from flatbuffers.table import Table

from ...pipeline.config import ModelMetadata
from ...pipeline.core.errors import ArtifactError, ExportError
from ...pipeline.core.files import write_bytes_atomic
from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ..base import LABELS_FILE

METADATA_NAME = b"TFLITE_METADATA"
PREPROCESSING_FILE = "imgpipe.json"
# What tflite-support's GetMinimumMetadataParserVersion yields for the fields written here (all from schema 1.0.0).
MIN_PARSER_VERSION = "1.0.0"
# Zero points are integers, so a mean of 127.5 already lands half a level off; a few levels is calibration noise,
# anything beyond is a quantization that does not match the normalization.
RAW_PIXEL_TOLERANCE = 4.0

# Field slots of metadata_schema.fbs tables, in declaration order; a union takes two (its type, then its value).
MODEL_SLOTS = dict(
    name=0, description=1, version=2, subgraph_metadata=3, author=4, license=5, associated_files=6, min_parser_version=7
)
SUBGRAPH_SLOTS = dict(input_tensor_metadata=2, output_tensor_metadata=3)
TENSOR_SLOTS = dict(name=0, description=1, content=3, process_units=4, stats=5, associated_files=6)
FILE_SLOTS = dict(name=0, description=1, type=2)
CONTENT_SLOTS = dict(content_properties_type=0, content_properties=1)
PROCESS_UNIT_SLOTS = dict(options_type=0, options=1)
NORMALIZATION_SLOTS = dict(mean=0, std=1)
STATS_SLOTS = dict(max=0, min=1)
IMAGE_SLOTS = dict(color_space=0)
# Enum and union values from the same schema.
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2  # ContentProperties
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
DESCRIPTIONS, TENSOR_AXIS_LABELS = 1, 2  # AssociatedFileType
RGB = 1  # ColorSpaceType


def embed_metadata(
    path: Path,
    *,
    labels: list[str],
    preprocessing: Preprocessing,
    metadata: ModelMetadata,
    input_quantization: dict | None = None,
) -> None:
    """Rewrite the model at `path` with metadata and packed labels; replaces metadata a previous call wrote.

    The file is replaced atomically so that a crash never leaves a half-written artifact behind.
    """
    path = Path(path)
    model = _load_model(path)
    input_tensor, output_tensor = _io_tensors(model)
    _check_labels(labels, output_tensor)
    _check_input_quantization(input_quantization, input_tensor)
    _check_raw_pixels(input_tensor, preprocessing)
    meta = _metadata_flatbuffer(metadata, preprocessing, len(labels), input_tensor.type, output_tensor.type)
    files = {
        LABELS_FILE: "".join(f"{label}\n" for label in labels),
        PREPROCESSING_FILE: json.dumps(asdict(preprocessing), indent=1, sort_keys=True),
    }
    write_bytes_atomic(path, _with_files(_with_metadata_buffer(model, meta), files))


def read_metadata(path: Path) -> dict | None:
    """What an app would read from the model, plus imgpipe's exact preprocessing; None without metadata."""
    path = Path(path)
    data = _read_bytes(path)
    buffer = _metadata_buffer(data, path)
    if buffer is None:
        return None
    try:
        return _parse(_root(buffer, path), _packed_files(data))
    except (IndexError, ValueError, struct.error) as e:  # json and utf-8 errors are ValueErrors
        raise ArtifactError(f"{path}: unreadable TFLite metadata ({e})") from None


def _parse(root: Table, files: dict[str, bytes]) -> dict:
    subgraph = _tables(root, MODEL_SLOTS["subgraph_metadata"])[0]
    input_tensor = _tables(subgraph, SUBGRAPH_SLOTS["input_tensor_metadata"])[0]
    output_tensor = _tables(subgraph, SUBGRAPH_SLOTS["output_tensor_metadata"])[0]
    mean, std = _normalization(input_tensor)
    fields = ("name", "description", "version", "author", "license")
    return {
        **{field: _string(root, MODEL_SLOTS[field]) for field in fields},
        "labels": _labels(output_tensor, files),
        "mean": mean,
        "std": std,
        "preprocessing": _preprocessing(root, files),
    }


# --- writing ---------------------------------------------------------------------------------------------------


def _load_model(path: Path) -> tfl.ModelT:
    data = _read_bytes(path)
    _check_tflite(data, path)
    return tfl.ModelT.InitFromPackedBuf(data, 0)


def _io_tensors(model: tfl.ModelT) -> tuple[tfl.TensorT, tfl.TensorT]:
    subgraph = model.subgraphs[0]
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        raise ValueError("image classifier metadata needs a model with one input and one output")
    return subgraph.tensors[subgraph.inputs[0]], subgraph.tensors[subgraph.outputs[0]]


def _check_labels(labels: list[str], output_tensor: tfl.TensorT) -> None:
    """labels.txt is one label per line, matched to output positions by order alone."""
    if len(labels) != int(output_tensor.shape[-1]):
        raise ValueError(f"{len(labels)} labels for a model with {int(output_tensor.shape[-1])} outputs")
    bad = [label for label in labels if not label or "\n" in label or "\r" in label]
    if bad:
        raise ExportError(f"labels must be non-empty single lines for labels.txt; got {bad!r}")


def _check_input_quantization(declared: dict | None, tensor: tfl.TensorT) -> None:
    """The artifact's recorded input quantization and the file must describe the same model."""
    actual = _tensor_quantization(tensor)
    if declared is None or actual is None:
        same = declared is actual
    else:
        same = (
            declared["dtype"] == actual["dtype"]
            and int(declared["zero_point"]) == actual["zero_point"]
            and bool(np.isclose(float(declared["scale"]), actual["scale"], rtol=1e-6))
        )
    if not same:
        raise ValueError(f"input_quantization {declared} does not match the model's input {actual}")


def _tensor_quantization(tensor: tfl.TensorT) -> dict | None:
    dtype = {tfl.TensorType.INT8: "int8", tfl.TensorType.UINT8: "uint8"}.get(tensor.type)
    if dtype is None:
        return None
    q = tensor.quantization
    return {"dtype": dtype, "scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}


def _check_raw_pixels(tensor: tfl.TensorT, preprocessing: Preprocessing) -> None:
    """Apps feed raw pixels to a uint8 input, so (pixel - zero_point) * scale must equal (pixel - mean) / std."""
    q = _tensor_quantization(tensor)
    if q is None or q["dtype"] != "uint8":
        return
    pixels = np.array([0.0, 255.0])
    worst = max(
        float(np.abs((pixels - q["zero_point"]) * q["scale"] - (pixels - m) / s).max() * s)
        for m, s in zip(preprocessing.mean, preprocessing.std)
    )
    if worst > RAW_PIXEL_TOLERANCE:
        raise ExportError(
            f"uint8 input quantization (scale {q['scale']:.6g}, zero point {q['zero_point']}) does not match the "
            f"normalization mean {list(preprocessing.mean)} / std {list(preprocessing.std)} (off by {worst:.1f} "
            "pixel levels); MediaPipe and the Task Library feed raw pixels to uint8 inputs, so apps would see "
            "wrong inputs. Calibrate with images normalized by the same mean/std, or export float input."
        )


def _metadata_flatbuffer(
    metadata: ModelMetadata, preprocessing: Preprocessing, n_labels: int, input_type: int, output_type: int
) -> bytes:
    b = flatbuffers.Builder(1024)
    input_tensor = _input_tensor(b, preprocessing, input_type)
    output_tensor = _output_tensor(b, n_labels, output_type)
    subgraph = _table(
        b,
        SUBGRAPH_SLOTS,
        input_tensor_metadata=_offsets(b, [input_tensor]),
        output_tensor_metadata=_offsets(b, [output_tensor]),
    )
    json_file = _associated_file(
        b,
        PREPROCESSING_FILE,
        "imgpipe preprocessing (JSON): image size, resize, mean/std at full precision.",
        DESCRIPTIONS,
    )
    texts = {
        field: b.CreateString(getattr(metadata, field))
        for field in ("name", "description", "version", "author", "license")
    }
    root = _table(
        b,
        MODEL_SLOTS,
        **texts,
        subgraph_metadata=_offsets(b, [subgraph]),
        associated_files=_offsets(b, [json_file]),
        min_parser_version=b.CreateString(MIN_PARSER_VERSION),
    )
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def _input_tensor(b: flatbuffers.Builder, p: Preprocessing, tensor_type: int) -> int:
    image = _table(b, IMAGE_SLOTS, color_space=(N.Int8Flags, RGB))
    content = _table(
        b, CONTENT_SLOTS, content_properties_type=(N.Uint8Flags, IMAGE_PROPERTIES), content_properties=image
    )
    normalization = _table(b, NORMALIZATION_SLOTS, mean=_floats(b, p.mean), std=_floats(b, p.std))
    unit = _table(b, PROCESS_UNIT_SLOTS, options_type=(N.Uint8Flags, NORMALIZATION_OPTIONS), options=normalization)
    low = [(0.0 - m) / s for m, s in zip(p.mean, p.std)]
    high = [(255.0 - m) / s for m, s in zip(p.mean, p.std)]
    description = (
        f"Input image to be classified: RGB, {p.image_size}x{p.image_size} ({p.resize}), "
        "normalized as (pixel - mean) / std."
    )
    return _table(
        b,
        TENSOR_SLOTS,
        name=b.CreateString(INPUT_NAME),
        description=b.CreateString(description),
        content=content,
        process_units=_offsets(b, [unit]),
        **_stats(b, tensor_type, low, high),
    )


def _output_tensor(b: flatbuffers.Builder, n_labels: int, tensor_type: int) -> int:
    labels = _associated_file(b, LABELS_FILE, "Labels for categories that the model can recognize.", TENSOR_AXIS_LABELS)
    content = _table(
        b, CONTENT_SLOTS, content_properties_type=(N.Uint8Flags, FEATURE_PROPERTIES), content_properties=_table(b, {})
    )
    return _table(
        b,
        TENSOR_SLOTS,
        name=b.CreateString("probability"),
        description=b.CreateString(f"Probabilities of the {n_labels} labels respectively."),
        content=content,
        associated_files=_offsets(b, [labels]),
        **_stats(b, tensor_type, [0.0], [1.0]),
    )


def _stats(b: flatbuffers.Builder, tensor_type: int, float_low: list[float], float_high: list[float]) -> dict:
    """The tensor's value range as Google's writer records it: float domain, raw uint8 range, nothing for int8."""
    ranges = {tfl.TensorType.FLOAT32: (float_low, float_high), tfl.TensorType.UINT8: ([0.0], [255.0])}
    if tensor_type not in ranges:
        return {}
    low, high = ranges[tensor_type]
    return {"stats": _table(b, STATS_SLOTS, max=_floats(b, high), min=_floats(b, low))}


def _associated_file(b: flatbuffers.Builder, name: str, description: str, file_type: int) -> int:
    return _table(
        b, FILE_SLOTS, name=b.CreateString(name), description=b.CreateString(description), type=(N.Int8Flags, file_type)
    )


def _table(b: flatbuffers.Builder, slots: dict[str, int], **fields) -> int:
    """One table from already-built children (offsets) and scalars given as (flags, value)."""
    b.StartObject(max(slots.values(), default=-1) + 1)
    for name, value in fields.items():
        if isinstance(value, tuple):
            flags, scalar = value
            b.PrependSlot(flags, slots[name], scalar, 0)
        else:
            b.PrependUOffsetTRelativeSlot(slots[name], value, 0)
    return b.EndObject()


def _floats(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.float32))


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _with_metadata_buffer(model: tfl.ModelT, metadata: bytes) -> bytes:
    """Repack the model with the metadata buffer, reusing the buffer slot of earlier metadata like Google's writer."""
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.metadata = model.metadata or []
    existing = [entry for entry in model.metadata if entry.name == METADATA_NAME]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        entry = tfl.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers)
        model.buffers.append(buffer)
        model.metadata.append(entry)
    b = flatbuffers.Builder(1 << 20)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _with_files(model_bytes: bytes, files: dict[str, str]) -> bytes:
    """Model flatbuffer with a zip of `files` appended, as Google's writer packs associated files.

    Files are stored uncompressed with a fixed timestamp: the Task Library maps them in place and refuses
    compressed entries, and equal inputs then give byte-identical artifacts.
    """
    buffer = io.BytesIO(model_bytes)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text.encode("utf-8"))
    return buffer.getvalue()


# --- reading ---------------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read TFLite model ({e.strerror or e})") from None


def _check_tflite(data: bytes, path: Path) -> None:
    if len(data) < 8 or not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise ArtifactError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")


def _metadata_buffer(data: bytes, path: Path) -> bytes | None:
    _check_tflite(data, path)
    try:
        model = tfl.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_NAME:
                buffer = model.Buffers(entry.Buffer())
                return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    except (IndexError, ValueError, struct.error) as e:
        raise ArtifactError(f"{path}: corrupt TFLite model ({e})") from None
    return None


def _root(buffer: bytes, path: Path) -> Table:
    if len(buffer) < 8 or not flatbuffers.util.BufferHasIdentifier(buffer, 0, b"M001"):
        raise ArtifactError(f"{path}: TFLITE_METADATA is not TFLite Model Metadata (no M001 identifier)")
    return Table(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, 0))


def _packed_files(data: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        return {}


def _labels(output_tensor: Table, files: dict[str, bytes]) -> list[str]:
    for file in _tables(output_tensor, TENSOR_SLOTS["associated_files"]):
        if _scalar(file, FILE_SLOTS["type"], N.Int8Flags) == TENSOR_AXIS_LABELS:
            return files.get(_string(file, FILE_SLOTS["name"]), b"").decode("utf-8").splitlines()
    return []


def _normalization(input_tensor: Table) -> tuple[list[float] | None, list[float] | None]:
    for unit in _tables(input_tensor, TENSOR_SLOTS["process_units"]):
        if _scalar(unit, PROCESS_UNIT_SLOTS["options_type"], N.Uint8Flags) == NORMALIZATION_OPTIONS:
            options = _child(unit, PROCESS_UNIT_SLOTS["options"])
            return _float_list(options, NORMALIZATION_SLOTS["mean"]), _float_list(options, NORMALIZATION_SLOTS["std"])
    return None, None


def _preprocessing(root: Table, files: dict[str, bytes]) -> dict | None:
    names = [_string(f, FILE_SLOTS["name"]) for f in _tables(root, MODEL_SLOTS["associated_files"])]
    if PREPROCESSING_FILE not in names or PREPROCESSING_FILE not in files:
        return None
    return json.loads(files[PREPROCESSING_FILE])


def _string(table: Table, slot: int) -> str | None:
    o = table.Offset(4 + 2 * slot)
    return table.String(table.Pos + o).decode("utf-8") if o else None


def _scalar(table: Table, slot: int, flags) -> int:
    o = table.Offset(4 + 2 * slot)
    return table.Get(flags, table.Pos + o) if o else 0


def _child(table: Table, slot: int) -> Table:
    return Table(table.Bytes, table.Indirect(table.Pos + table.Offset(4 + 2 * slot)))


def _tables(table: Table, slot: int) -> list[Table]:
    o = table.Offset(4 + 2 * slot)
    if not o:
        return []
    start = table.Vector(o)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(o))]


def _float_list(table: Table, slot: int) -> list[float]:
    o = table.Offset(4 + 2 * slot)
    return table.GetVectorAsNumpy(N.Float32Flags, o).tolist() if o else []
