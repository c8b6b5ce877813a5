"""Training on more than one device or machine with `tf.distribute`.

- `none`: TensorFlow's default, one device (the GPU when there is one).
- `mirrored`: `MirroredStrategy` over every local GPU (or, without GPUs, every logical CPU device): each batch is
  split across replicas and the gradients summed.
- `multi-worker`: `MultiWorkerMirroredStrategy` over the workers TensorFlow's own `TF_CONFIG` names (the same
  command runs on every worker, each with its own `task`). Worker 0 is the chief: it writes the build; the others
  train their share and write to a temporary folder that is deleted (TensorFlow's own convention).

Models are built and compiled inside the strategy's scope; Keras then distributes `fit` and `predict`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from ..config import DISTRIBUTE
from ..core.errors import ConfigError
from ..core.tf_runtime import load_tensorflow


@dataclass
class Distribution:
    name: str
    strategy: object | None  # None: TensorFlow's default strategy

    @property
    def replicas(self) -> int:
        return 1 if self.strategy is None else self.strategy.num_replicas_in_sync

    @property
    def is_chief(self) -> bool:
        return self.name != "multi-worker" or worker_task()[1] == 0

    def scope(self):
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def describe(self) -> str:
        if self.strategy is None:
            return "one device"
        kind = type(self.strategy).__name__
        return f"{kind}, {self.replicas} replica{'s' if self.replicas != 1 else ''}"


ONE_DEVICE = Distribution("none", None)


def worker_task() -> tuple[str, int]:
    """(task type, index) from TF_CONFIG, checked: a malformed TF_CONFIG is one line, not a gRPC error later."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "--distribute multi-worker: TF_CONFIG is not set; set it on every worker as TensorFlow defines it, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"--distribute multi-worker: TF_CONFIG is not valid ({e!r}); it needs cluster.worker (a list of "
            "host:port) and task.type/task.index"
        ) from None
    if not isinstance(workers, list) or not workers or kind not in ("worker", "chief") or index < 0:
        raise ConfigError("--distribute multi-worker: TF_CONFIG needs a non-empty cluster.worker and a worker task")
    if kind == "worker" and index >= len(workers):
        raise ConfigError(f"--distribute multi-worker: TF_CONFIG task.index {index} but {len(workers)} workers")
    return kind, index


def make_distribution(name: str) -> Distribution:
    """The strategy for `--distribute`. Must run before TensorFlow runs any op (MultiWorkerMirroredStrategy's
    rule), so the build makes it first."""
    if name == "none":
        return Distribution(name, None)
    tf, _ = load_tensorflow()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return Distribution(name, tf.distribute.MirroredStrategy(devices=devices))
    if name == "multi-worker":
        worker_task()
        return Distribution(name, tf.distribute.MultiWorkerMirroredStrategy())
    raise ConfigError(f"--distribute {name}: choose one of {', '.join(DISTRIBUTE)}")


def local_copy(model, distribution: Distribution):
    """`model` with its variables on this process alone. After training, everything else (calibration, export,
    verification) runs on one worker's own copy: a distributed model's predict is a collective step that every
    worker would have to take in lockstep."""
    if distribution.strategy is None:
        return model
    _, keras = load_tensorflow()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
