"""The onnxruntime session that runs the translated graph, configured so it computes what the graph says.

fp16 emulation rests on Cast(float->float16)->Cast(float16->float) pairs surviving graph optimization.
onnxruntime 1.32 keeps them at every optimization level (test_executor checks the optimized graph and compares
with a NumPy reference), but its CastChainElimination pass is the one entitled to fold cast chains, so it is
disabled outright: a later onnxruntime that considered the lossy pair removable would otherwise silently turn
emulation into fp32 compute. The remaining optimizations (Conv+Clip fusion, NCHWc layouts) only change fp32
summation order.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ....pipeline.core.errors import first_line
from .errors import ProgramError

DISABLED_OPTIMIZERS = ["CastChainElimination"]


def make_session(model: onnx.ModelProto, num_threads: int, package: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )
    except Exception as e:  # noqa: BLE001 (onnxruntime raises its own Fail / InvalidGraph types)
        raise ProgramError(package, f"onnxruntime rejected the translated program ({first_line(e)})") from None
