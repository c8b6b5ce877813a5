"""Core ML's protobuf schema (`coremltools.proto`, the generated public classes): the one thing the executor needs
from coremltools. Importing it imports coremltools, which imports TensorFlow, so the legacy-Keras switch is set
first, as everywhere in imgpipe."""

from __future__ import annotations

from types import SimpleNamespace

from ....pipeline.core.tf_runtime import load_tensorflow


def proto_modules() -> SimpleNamespace:
    load_tensorflow()
    from coremltools.proto import MIL_pb2, Model_pb2

    return SimpleNamespace(MIL_pb2=MIL_pb2, Model_pb2=Model_pb2)
