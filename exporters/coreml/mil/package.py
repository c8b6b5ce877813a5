"""Open an .mlpackage the way Xcode and Core ML do, not the way coremltools' MLModel does.

Manifest.json names the root model item; that item's file is the Model protobuf, and `@model_path/...` weight
references resolve next to it. Following the manifest (instead of assuming `Data/com.apple.CoreML/model.mlmodel`)
means a package that Core ML would load differently is read differently here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ....pipeline.core.errors import first_line
from .blob import BlobFile, BlobFormatError
from .errors import ProgramError
from .proto import proto_modules

MODEL_PATH_PREFIX = "@model_path/"


@dataclass
class Package:
    path: Path
    model: object  # coremltools.proto.Model_pb2.Model
    model_dir: Path  # where `@model_path` points
    _blobs: dict[Path, BlobFile] = field(default_factory=dict)

    def error(self, reason: str) -> ProgramError:
        return ProgramError(self.path, reason)

    def blob_file(self, file_name: str) -> BlobFile:
        """Weight files are opened once per package; a reference outside the package is refused."""
        if not file_name.startswith(MODEL_PATH_PREFIX):
            raise self.error(f"weight file reference '{file_name}' does not start with {MODEL_PATH_PREFIX}")
        path = (self.model_dir / file_name[len(MODEL_PATH_PREFIX) :]).resolve()
        if not path.is_relative_to(self.path.resolve()):
            raise self.error(f"weight file reference '{file_name}' points outside the package")
        if path not in self._blobs:
            if not path.is_file():
                raise self.error(f"weight file {path.relative_to(self.path.resolve())} is missing")
            try:
                self._blobs[path] = BlobFile(path)
            except (OSError, BlobFormatError) as e:
                raise self.error(first_line(e)) from None
        return self._blobs[path]


def read_package(path: Path) -> Package:
    """Manifest -> root model item -> Model protobuf; anything else than an ML Program is refused here."""
    path = Path(path)
    if not path.is_dir():
        raise ProgramError(path, "not a Core ML package (no such directory)")
    spec_file = _root_model_file(path)
    model = _parse_model(path, spec_file)
    kind = model.WhichOneof("Type")
    if kind != "mlProgram":
        raise ProgramError(path, f"the model is a {kind}, not an ML Program")
    return Package(path=path, model=model, model_dir=spec_file.parent)


def _root_model_file(path: Path) -> Path:
    manifest_file = path / "Manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text())
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        relative = entry["path"]
    except FileNotFoundError:
        raise ProgramError(path, "not a Core ML package (Manifest.json is missing)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ProgramError(path, f"Manifest.json does not name a root model ({first_line(e)})") from None
    spec_file = (path / "Data" / relative).resolve()
    if not spec_file.is_relative_to(path.resolve()) or not spec_file.is_file():
        raise ProgramError(path, f"the root model file Data/{relative} named by Manifest.json is missing")
    return spec_file


def _parse_model(path: Path, spec_file: Path):
    Model_pb2 = proto_modules().Model_pb2

    model = Model_pb2.Model()
    try:
        model.ParseFromString(spec_file.read_bytes())
    except Exception as e:  # noqa: BLE001 (protobuf raises its own DecodeError types for bad bytes)
        raise ProgramError(path, f"{spec_file.name} is not a Core ML model protobuf ({first_line(e)})") from None
    return model
