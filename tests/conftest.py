"""Shared fixtures: tiny models and images generated on the spot, so tests need no network and no ../shared.

Expensive things are made once per session and shared: the tiny trained model, every exported artifact
(`exported`), and one real `imgpipe build` through the command line (`cli_build`) that the end-to-end tests read.

The suite runs on two pytest-xdist workers (`-n 2` in pyproject.toml). Session and module fixtures are made once
per worker that needs them, so `pytest_collection_modifyitems` keeps each file's tests on one worker, and every
test that reads one of the expensive shared builds on the worker that makes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

SHARED_BUILDS = ("cli_build_run", "flowers_build")  # made once: their readers share one worker

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Each worker's TensorFlow (and the builds it starts) computes on its share of the cores: by default every
    # worker's thread pools take every core, and on 2 cores the two workers' threads preempted each other.
    _cores = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _variable in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_variable, _cores)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from imgpipe.exporters.base import ExportContext  # noqa: E402
from imgpipe.pipeline.config import ExportOptions, ModelMetadata  # noqa: E402
from imgpipe.pipeline.core.preprocessing import Preprocessing  # noqa: E402

TINY_SIZE = 96
TINY_LABELS = ["circle", "square", "stripes"]
SHARED = Path(os.environ.get("IMGPIPE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FLOWERS = SHARED / "datasets" / "flowers"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
needs_shared = pytest.mark.skipif(
    not (FLOWERS.is_dir() and SHARED_WEIGHTS.is_file()),
    reason=f"real photos and ImageNet weights not found under {SHARED} (set IMGPIPE_SHARED)",
)


def make_pattern_images(n_per_class: int, size: int = TINY_SIZE, seed: int = 0):
    """uint8 RGB images of three easily separated patterns, and their integer labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            bg = rng.integers(0, 90, 3)
            fg = rng.integers(150, 256, 3)
            cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [int(rng.integers(size // 6, size // 3))]
            if label == 0:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            elif label == 1:
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            else:
                period = int(rng.integers(6, 14))
                mask = (xx // (period // 2)) % 2 == 0
            img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def quick_build_args(data, out, cache, *extra: str) -> list[str]:
    """`imgpipe build` arguments for the quickest real build (random init, 96 px, alpha 0.35, one epoch): for tests
    about what a build does with its artifacts, not about how well it learns."""
    return [
        "build",
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--weights",
        "none",
        "--image-size",
        "96",
        "--alpha",
        "0.35",
        "--epochs",
        "1",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_images():
    """(images uint8 (60, 96, 96, 3), labels int) — 20 per class."""
    return make_pattern_images(20)


@pytest.fixture(scope="session")
def tiny_model(tiny_images, tmp_path_factory):
    """A flat MobileNetV2 (alpha 0.35, 96 px, random init) briefly trained on the pattern images.

    Trained just enough that its predictions are not constant, so parity and quantization checks mean something.
    Trained once per run (15-17 s): the first xdist worker to need it saves its weights where the other loads them.
    """
    from imgpipe.pipeline.config import BackboneSpec
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow
    from imgpipe.pipeline.training.model import build_classifier

    tf, keras = load_tensorflow()
    keras.utils.set_random_seed(0)
    model = build_classifier(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, "none"), len(TINY_LABELS))
    images, labels = tiny_images
    x = Preprocessing(TINY_SIZE).normalize(images)
    for layer in model.layers:  # Keras' 0.999 BN momentum leaves statistics stale in a run this short
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with _one_worker_at_a_time(tmp_path_factory, "tiny_model") as shared:
        weights = shared / "tiny_model.weights.h5"
        if weights.is_file():
            model.load_weights(str(weights))
        else:
            model.fit(x, labels, epochs=15, batch_size=8, verbose=0)
            partial = weights.with_name("partial-" + weights.name)
            model.save_weights(str(partial))
            partial.replace(weights)
    probs = model.predict(x, verbose=0)
    assert probs.max(axis=1).mean() > 0.5 and len(set(probs.argmax(1))) > 1, "tiny model did not learn"
    return model


@contextmanager
def _one_worker_at_a_time(tmp_path_factory, name: str):
    """The run's folder shared by every xdist worker, held by one worker at a time (a lock file in it)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # each worker's base folder sits in the run's
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared


@pytest.fixture(scope="session")
def keras_probs(tiny_model, tiny_images):
    """The float Keras model's probabilities on the tiny images: every exporter's parity reference."""
    return tiny_model.predict(Preprocessing(TINY_SIZE).normalize(tiny_images[0]), verbose=0)


@pytest.fixture(scope="session")
def export_context(tiny_model, tiny_images, tmp_path_factory):
    """Everything an exporter needs, for the tiny model."""
    images, _ = tiny_images
    return ExportContext(
        model=tiny_model,
        labels=list(TINY_LABELS),
        preprocessing=Preprocessing(TINY_SIZE),
        metadata=ModelMetadata(name="TinyPatterns", description="test model", version="0.0.1"),
        workdir=tmp_path_factory.mktemp("work"),
        calibration_images=images,
    )


@pytest.fixture(scope="session")
def exported(export_context, tmp_path_factory):
    """exported(format, variant, **options) -> Artifact: each combination converted once per session, by the real
    exporter, into its own folder (conversions are what the suite spends its time on)."""
    from imgpipe.exporters.registry import FORMATS

    artifacts = {}

    def get(fmt: str, variant: str, **options):
        key = (fmt, variant, tuple(sorted(options.items())))
        if key not in artifacts:
            spec = FORMATS[fmt]
            folder = tmp_path_factory.mktemp(f"{fmt}-{variant}")
            ctx = replace(export_context, options=ExportOptions(**options))
            artifacts[key] = spec.load().export(ctx, variant, folder / f"model{spec.suffix}")
        return artifacts[key]

    return get


def write_pattern_dataset(root: Path, n_per_class: int, seed: int) -> Path:
    """The pattern images as a class-folder dataset on disk (PNG, every third a JPEG), as a user would have it."""
    from PIL import Image

    images, labels = make_pattern_images(n_per_class, seed=seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / TINY_LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if i % 3 == 0 else ".png"
        Image.fromarray(image).save(folder / f"{TINY_LABELS[label]}_{i:03d}{suffix}", quality=95)
    return root


@pytest.fixture(scope="session")
def tiny_backbone_weights(tiny_model, tmp_path_factory) -> Path:
    """The tiny model's backbone saved as a Keras no-top .h5: "pretrained" weights that tell the patterns apart,
    so builds can take the real transfer-learning path (cached features, head) with no download."""
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow
    from imgpipe.pipeline.training.model import feature_extractor

    load_tensorflow()
    path = tmp_path_factory.mktemp("weights") / "tiny_mobilenet_v2_0.35_no_top.h5"
    feature_extractor(tiny_model).save_weights(str(path))
    return path


def cli_build_args(root: Path, weights: Path, out: Path) -> list[str]:
    """The shared build's command line (dataset, config file and cache under `root`), into `out`."""
    return [
        "build",
        "--dataset",
        str(root / "data"),
        "--out",
        str(out),
        "--cache-dir",
        str(root / "cache"),
        "--weights",
        str(weights),
        "--image-size",
        str(TINY_SIZE),
        "--config",
        str(root / "imgpipe.toml"),
        "--variants",
        "tflite:fp32,int8",
        "onnx:fp32,int8",
        "coreml:fp16",
        "--io-type",
        "uint8",
        "--name",
        "TinyPatterns",
        "--feature-views",
        "1",  # not the default: the one end-to-end build whose head also trains on augmented views
        "--allow-failures",
    ]


@dataclass
class CliRun:
    """A finished `imgpipe build` process: its exit code, folders and everything it printed."""

    code: int
    out: Path
    data: Path
    cache: Path
    stdout: str
    stderr: str
    messages: list[str]  # every line imgpipe logged, as its logging handlers received them


# `python -m imgpipe.pipeline.commands.cli` with one addition: imgpipe's own log records are also written to a
# file, so a test can tell imgpipe's lines from anything else that reached the console.
RECORDING_CLI = """
import json, logging, sys
from imgpipe.pipeline.commands.cli import main
messages = []
class Keep(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())
logging.getLogger("imgpipe").addHandler(Keep(logging.DEBUG))
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(messages, f)
sys.exit(code)
"""


def run_cli_process(args: list[str], root: Path, timeout: int = 1200) -> tuple[int, str, str, list[str]]:
    """Run the command line in a fresh process as a user would (no TF_CPP_MIN_LOG_LEVEL, no pytest capture, a
    cache of its own), returning (exit code, stdout, stderr, imgpipe's logged messages)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TQDM_DISABLE")}
    env["XDG_CACHE_HOME"] = str(root / "xdg-cache")
    messages_file = root / "messages.json"
    proc = subprocess.run(
        [sys.executable, "-c", RECORDING_CLI, str(messages_file), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=root,
    )
    messages = json.loads(messages_file.read_text()) if messages_file.is_file() else []
    return proc.returncode, proc.stdout, proc.stderr, messages


@pytest.fixture(scope="session")
def cli_build_run(tiny_backbone_weights, tmp_path_factory) -> CliRun:
    """One real `imgpipe build`, run in its own process exactly as a user runs it, shared by every end-to-end
    test: pattern photos on disk, the tiny backbone as weights file (width read from it), all three formats with
    int8 variants, a config file whose gate rejects the ONNX int8 model. Its console output is kept.

    Its photos are the ones the tiny backbone was trained on (`tiny_images`): trained from scratch on 60 images,
    that backbone tells new pattern images apart only 27-80 % of the time, depending on the run's float round-off
    (measured), so on other photos the build's accuracy, and every test comparing its formats' labels, was luck."""
    root = tmp_path_factory.mktemp("cli-build")
    data = write_pattern_dataset(root / "data", n_per_class=20, seed=0)
    config = root / "imgpipe.toml"
    config.write_text('[gates."onnx:int8"]\nmax_bytes = 1000\n')
    code, stdout, stderr, messages = run_cli_process(cli_build_args(root, tiny_backbone_weights, root / "out"), root)
    return CliRun(code, root / "out", data, root / "cache", stdout, stderr, messages)


@pytest.fixture(scope="session")
def cli_build(cli_build_run):
    """(exit code, OUT, dataset folder) of the shared real build (see `cli_build_run`)."""
    return cli_build_run.code, cli_build_run.out, cli_build_run.data


@pytest.fixture(scope="session")
def flowers_build(tmp_path_factory):
    """A build of the shared flowers photos with genuine ImageNet MobileNetV2-0.35 weights: (manifest, root)."""
    from imgpipe.pipeline.build import run_build
    from imgpipe.pipeline.config import BackboneSpec, BuildConfig

    root = tmp_path_factory.mktemp("flowers")
    config = BuildConfig(out=root / "out", dataset=FLOWERS, cache_dir=root / "cache")
    config.backbone = BackboneSpec("mobilenet_v2", 0.35, 224, str(SHARED_WEIGHTS))
    config.variants = {"tflite": ["fp32", "int8"], "onnx": ["fp32", "int8"], "coreml": ["fp16"]}
    config.allow_failures = True
    return run_build(config).manifest, root


# The groups that take longest, started first so both workers finish together (longest-first scheduling;
# measured: 120, 75, 68, 48, 44 and 27 s of work). flowers_build comes second because it needs no tiny model:
# its worker builds the flowers while the other trains that model for both.
HEAVIEST_GROUPS = (
    "cli_build_run",
    "flowers_build",
    "tests/test_coreml_executor.py",
    "tests/test_optimize.py",
    "tests/test_distribute.py",
    "tests/test_training.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(items):
    """An xdist group per file, or per shared build for the tests that read one (`--dist loadgroup`), handed out
    heaviest first (`--no-loadscope-reorder` keeps this order)."""
    groups = {}
    for item in items:
        shared = next((name for name in SHARED_BUILDS if name in item.fixturenames), None)
        groups[item] = shared or item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(groups[item]))
    rank = {group: i for i, group in enumerate(HEAVIEST_GROUPS)}
    items.sort(key=lambda item: rank.get(groups[item], len(rank)))
