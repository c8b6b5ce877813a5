"""Core ML's protobuf schema (`coremltools.proto`, the generated public classes): the one thing the executor needs
from coremltools.

`import coremltools.proto` runs coremltools' own `__init__`, which imports TensorFlow: `imgpipe predict
model.mlpackage` took 6.5 s with it and takes 1.2 s without (medians, this project's 2-core machine). The
generated modules need nothing but protobuf, so they are loaded from coremltools' folder as a package of their
own (0.05 s) unless coremltools is imported already, in which case its modules are taken. Both copies describe
the same .proto files with identical bytes, which protobuf's descriptor pool accepts twice, so coremltools can
still be imported afterwards (tested).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

from ....pipeline.core.errors import ArtifactError

PRIVATE_NAME = f"{__package__}._coremltools_proto"


def proto_modules() -> SimpleNamespace:
    package = sys.modules.get("coremltools.proto") or sys.modules.get(PRIVATE_NAME) or _load_private_copy()
    return SimpleNamespace(MIL_pb2=package.MIL_pb2, Model_pb2=package.Model_pb2)


def _load_private_copy():
    found = importlib.util.find_spec("coremltools")  # finds the folder without running its __init__
    if found is None or not found.submodule_search_locations:
        raise ArtifactError("coremltools is not installed: pip install coremltools (reading Core ML packages needs it)")
    folder = Path(next(iter(found.submodule_search_locations))) / "proto"
    spec = importlib.util.spec_from_file_location(
        PRIVATE_NAME, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PRIVATE_NAME] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[PRIVATE_NAME]
        raise
    return package
