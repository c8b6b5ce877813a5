"""Training under tf.distribute: TF_CONFIG checked before any work, a mirrored build over two logical CPU
devices, and a multi-worker build of two local processes in which only the chief writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_SIZE, write_pattern_dataset

from imgpipe.pipeline.core.errors import ConfigError
from imgpipe.pipeline.training.distribute import worker_task


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "TF_CONFIG is not set"),
        ("{not json", "TF_CONFIG is not valid"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not valid"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "task.index 3 but 1 workers"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty cluster.worker"),
    ],
)
def test_a_bad_tf_config_is_one_line(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=message):
        worker_task()


def test_the_task_is_read_from_tf_config(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
    )
    assert worker_task() == ("worker", 1)


BUILD = """
import sys
logical_cpus = int(sys.argv[1])
if logical_cpus > 1:  # must happen before TensorFlow makes its devices
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
from imgpipe.pipeline.commands.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _args(data: Path, out: Path, cache: Path, weights: Path, strategy: str, *extra: str) -> list[str]:
    return [
        "build", "--dataset", str(data), "--out", str(out), "--cache-dir", str(cache), "--weights", str(weights),
        "--image-size", str(TINY_SIZE), "--targets", "tflite", "--distribute", strategy, *extra,
    ]  # fmt: skip


def _start(args: list[str], logical_cpus: int, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(logical_cpus), *args],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_a_mirrored_build_over_two_devices_trains_and_exports(tiny_backbone_weights, tmp_path):
    data = write_pattern_dataset(tmp_path / "data", n_per_class=10, seed=5)
    out = tmp_path / "out"
    proc = _start(_args(data, out, tmp_path / "cache", tiny_backbone_weights, "mirrored"), 2, tmp_path)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["distribute"] == {"strategy": "mirrored", "replicas": 2}
    assert manifest["training"]["features_engine"] == "keras predict (MirroredStrategy, 2 replicas)"
    assert manifest["artifacts"][0]["parity"]["passed"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
@pytest.mark.e2e
def test_two_local_workers_train_together_and_only_the_chief_writes(tiny_backbone_weights, tmp_path):
    data = write_pattern_dataset(tmp_path / "data", n_per_class=10, seed=5)
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        # The Adam head: epochs whose gradients the workers all-reduce (the default head is solved on each alone).
        args = _args(data, tmp_path / f"out{index}", tmp_path / f"cache{index}", tiny_backbone_weights, "multi-worker")
        args += ["--head", "adam", "--epochs", "3"]
        procs.append(_start(args, 1, tmp_path, {"TF_CONFIG": tf_config}))
    results = [p.communicate(timeout=900) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    manifest = json.loads((tmp_path / "out0" / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["distribute"] == {"strategy": "multi-worker", "replicas": 2}
    assert manifest["artifacts"][0]["parity"]["passed"]
    assert not (tmp_path / "out1").exists(), "a worker other than the chief keeps nothing"
