"""TFLite metadata: what imgpipe writes reads back, leaves the model's numbers alone, and Google's reader accepts it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from imgpipe.exporters.tflite.metadata import embed_metadata, read_metadata
from imgpipe.pipeline.config import ModelMetadata
from imgpipe.pipeline.core.errors import ArtifactError, ExportError
from imgpipe.pipeline.core.preprocessing import Preprocessing

pytestmark = pytest.mark.slow
LABELS = ["circle", "square", "stripes"]
METADATA = ModelMetadata(name="TinyPatterns", description="test model", version="0.0.1", author="tests", license="MIT")
KINDS = {"float": ("fp32", "float"), "int8": ("int8", "int8"), "uint8": ("int8", "uint8")}  # input type: variant, io
CHECKER = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "check-tflite-metadata"


def without_metadata(source: Path, dest: Path) -> Path:
    """The exporter's model with its metadata taken out: what a converter alone writes."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.ModelT.InitFromPackedBuf(source.read_bytes(), 0)
    model.metadata = None
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dest.write_bytes(bytes(builder.Output()))
    return dest


def input_quantization(path: Path) -> dict | None:
    """What the exporter records in Artifact.input_quantization for this file."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_input_details()[0]
    if details["dtype"] == np.float32:
        return None
    scale, zero_point = details["quantization"]
    return {"dtype": np.dtype(details["dtype"]).name, "scale": scale, "zero_point": zero_point}


def raw_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    """The model's own output tensor (still quantized for integer models), one image at a time as in an app."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = Preprocessing(images.shape[1]).normalize(images)
    if inp["dtype"] != np.float32:
        scale, zero_point = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(inp["dtype"])
    outputs = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(outputs)


def embed(path: Path, size: int, **overrides) -> None:
    kwargs = dict(
        labels=LABELS, preprocessing=Preprocessing(size), metadata=METADATA, input_quantization=input_quantization(path)
    )
    embed_metadata(path, **{**kwargs, **overrides})


@pytest.fixture(scope="module")
def plain(exported, tmp_path_factory) -> dict[str, Path]:
    """The three input types an Android app can be handed (float, int8, uint8), without metadata."""
    folder = tmp_path_factory.mktemp("plain")
    return {
        kind: without_metadata(exported("tflite", variant, io_type=io).path, folder / f"{kind}.tflite")
        for kind, (variant, io) in KINDS.items()
    }


@pytest.fixture(scope="module")
def embedded(plain, tiny_images, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("embedded")
    paths = {kind: Path(shutil.copy(path, folder / path.name)) for kind, path in plain.items()}
    for path in paths.values():
        embed(path, tiny_images[0].shape[1])
    return paths


@pytest.mark.parametrize("kind", KINDS)
def test_read_metadata_round_trips(embedded, tiny_images, kind):
    size = tiny_images[0].shape[1]
    got = read_metadata(embedded[kind])
    assert {k: got[k] for k in ("name", "description", "version", "author", "license")} == {
        "name": "TinyPatterns",
        "description": "test model",
        "version": "0.0.1",
        "author": "tests",
        "license": "MIT",
    }
    assert got["labels"] == LABELS
    assert got["mean"] == [127.5] * 3 and got["std"] == [127.5] * 3
    assert Preprocessing.from_dict(got["preprocessing"]) == Preprocessing(size)


@pytest.mark.parametrize("kind", KINDS)
def test_model_outputs_are_unchanged(plain, embedded, tiny_images, kind):
    images, _ = tiny_images
    np.testing.assert_array_equal(raw_outputs(embedded[kind], images), raw_outputs(plain[kind], images))


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_adds_under_2kb_plus_labels(plain, embedded, kind):
    labels_bytes = len("".join(f"{label}\n" for label in LABELS))
    added = embedded[kind].stat().st_size - plain[kind].stat().st_size
    assert 0 < added < 2048 + labels_bytes


def test_plain_model_has_no_metadata(plain):
    assert read_metadata(plain["float"]) is None


def test_embedding_again_replaces_the_metadata(embedded, tiny_images, tmp_path):
    path = Path(shutil.copy(embedded["float"], tmp_path / "model.tflite"))
    embed(path, tiny_images[0].shape[1])
    assert path.read_bytes() == embedded["float"].read_bytes()
    embed(path, tiny_images[0].shape[1], labels=["a", "b", "c"], metadata=ModelMetadata(name="Renamed"))
    got = read_metadata(path)
    assert got["labels"] == ["a", "b", "c"] and got["name"] == "Renamed"
    assert list(tmp_path.iterdir()) == [path]


def test_per_channel_normalization_keeps_exact_values_in_json(plain, tiny_images, tmp_path):
    size = tiny_images[0].shape[1]
    imagenet = Preprocessing(size, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    path = Path(shutil.copy(plain["float"], tmp_path / "model.tflite"))
    embed(path, size, preprocessing=imagenet)
    got = read_metadata(path)
    assert Preprocessing.from_dict(got["preprocessing"]) == imagenet
    np.testing.assert_allclose(got["mean"], imagenet.mean, rtol=1e-6)
    np.testing.assert_allclose(got["std"], imagenet.std, rtol=1e-6)


def test_uint8_input_must_take_raw_pixels(plain, tiny_images, tmp_path):
    """Apps copy raw pixels into uint8 inputs, so a normalization the quantization does not encode is refused."""
    path = Path(shutil.copy(plain["uint8"], tmp_path / "model.tflite"))
    with pytest.raises(ExportError, match="raw pixels"):
        embed(
            path,
            tiny_images[0].shape[1],
            preprocessing=Preprocessing(tiny_images[0].shape[1], mean=(0,) * 3, std=(255,) * 3),
        )
    assert path.read_bytes() == plain["uint8"].read_bytes()


def test_declared_input_quantization_must_match_the_file(plain, tiny_images):
    with pytest.raises(ValueError, match="does not match"):
        embed(
            plain["float"],
            tiny_images[0].shape[1],
            input_quantization={"dtype": "uint8", "scale": 1.0, "zero_point": 0},
        )


def test_labels_must_fit_the_output_and_labels_txt(plain, tiny_images):
    size = tiny_images[0].shape[1]
    with pytest.raises(ValueError, match="3 outputs"):
        embed(plain["float"], size, labels=["a", "b"])
    with pytest.raises(ExportError, match="single lines"):
        embed(plain["float"], size, labels=["a", "b\nc", "d"])


def test_missing_or_foreign_files_raise_artifact_error(tmp_path):
    missing = tmp_path / "missing.tflite"
    with pytest.raises(ArtifactError, match="missing.tflite"):
        read_metadata(missing)
    with pytest.raises(ArtifactError, match="missing.tflite"):
        embed_metadata(missing, labels=LABELS, preprocessing=Preprocessing(96), metadata=METADATA)
    foreign = tmp_path / "notes.tflite"
    foreign.write_text("not a model")
    with pytest.raises(ArtifactError, match="notes.tflite: not a TFLite model"):
        read_metadata(foreign)


@pytest.mark.skipif(not CHECKER.exists(), reason=f"Google's reader wrapper {CHECKER} is absent (no ../shared)")
@pytest.mark.parametrize("kind", KINDS)
def test_googles_metadata_reader_accepts_it(embedded, kind):
    """tflite-support's MetadataDisplayer, in its own venv since it cannot live beside TensorFlow."""
    result = subprocess.run([str(CHECKER), str(embedded[kind])], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    metadata_json, _, packed = result.stdout.rpartition("packed files:")
    meta = json.loads(metadata_json)
    subgraph = meta["subgraph_metadata"][0]
    normalization = subgraph["input_tensor_metadata"][0]["process_units"][0]
    output = subgraph["output_tensor_metadata"][0]
    assert meta["name"] == "TinyPatterns" and meta["min_parser_version"] == "1.0.0"
    assert normalization["options_type"] == "NormalizationOptions"
    assert normalization["options"] == {"mean": [127.5] * 3, "std": [127.5] * 3}
    assert output["associated_files"][0]["name"] == "labels.txt"
    assert output["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
    assert [name.strip() for name in packed.split(",")] == ["labels.txt", "imgpipe.json"]
