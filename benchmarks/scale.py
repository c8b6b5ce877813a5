"""The `scale` profile: how a build's wall time and peak memory grow with the number of photos, and what an
unchanged rebuild and a rebuild after adding 50 photos cost.

Photos are generated, distinct and deterministic: variants (crop, flip, colour, JPEG quality) of the photos of a
source folder (IMGPIPE_BENCH_SCALE_SOURCE, else the first IMGPIPE_BENCH_DATA folder) or, without one, textures of
the embedded dataset's kind. Each build runs in its own process, so its peak RSS is its own (os.wait4).
Sizes: IMGPIPE_BENCH_SCALE_SIZES (default 1000,5000; 25000 and more are opt-in: they take tens of minutes here).
IMGPIPE_BENCH_IMGPIPE names another `imgpipe` executable to time instead (an older version, side by side).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
DEFAULT_SIZES = (1000, 5000)
ADDED = 50


def run_scale(results_dir: Path, environ=os.environ) -> dict:
    sizes = [int(s) for s in environ.get("IMGPIPE_BENCH_SCALE_SIZES", ",".join(map(str, DEFAULT_SIZES))).split(",")]
    source = _source_folder(environ)
    weights = environ.get("IMGPIPE_BENCH_WEIGHTS")
    alpha = ["--alpha", environ["IMGPIPE_BENCH_ALPHA"]] if environ.get("IMGPIPE_BENCH_ALPHA") else []
    backbone = (
        ["--weights", weights, "--image-size", "224", *alpha]
        if weights and Path(weights).is_file()
        else ["--weights", "none", "--image-size", "96", "--alpha", "0.35", "--epochs", "2"]
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="imgpipe-scale-") as tmp:
        for n in sizes:
            root = Path(tmp) / str(n)
            data = generate_photos(source, n + ADDED, root / "all")
            dataset = _first(data, root / "data", n)
            args = [
                "--dataset",
                str(dataset),
                "--out",
                str(root / "out"),
                "--cache-dir",
                str(root / "cache"),
                "--targets",
                "tflite",
                "onnx",
                "--allow-failures",
                *backbone,
            ]
            command = _command(environ)
            first = _build(command, args)
            unchanged = _build(command, args)
            _add(data, dataset, n, ADDED)
            added = _build(command, args)
            runs.append(
                {
                    "photos": n,
                    "first": first,
                    "unchanged_rebuild": unchanged,
                    "rebuild_after_adding": {"photos_added": ADDED, **added},
                    "unchanged_rebuild_ratio": round(unchanged["seconds"] / first["seconds"], 3),
                }
            )
            log.info(f"scale {n}: first {first['seconds']:.0f} s, {first['peak_rss_mib']:.0f} MiB peak")
    result = {"source": source.name if source else "generated textures", "backbone": backbone, "runs": runs}
    (results_dir / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def generate_photos(source: Path | None, n: int, dest: Path, seed: int = 0) -> Path:
    """`n` distinct JPEGs in class folders under `dest`: variants of the source photos, or drawn textures."""
    from PIL import Image, ImageEnhance, ImageOps

    rng = np.random.default_rng(seed)
    originals = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if source else []
    for i in range(n):
        if originals:
            original = originals[i % len(originals)]
            label = original.parent.name
            with Image.open(original) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                w, h = img.size
                scale = rng.uniform(0.8, 1.0)
                cw, ch = int(w * scale), int(h * scale)
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                img = img.crop((x, y, x + cw, y + ch))
                if rng.random() < 0.5:
                    img = ImageOps.mirror(img)
                img = ImageEnhance.Color(img).enhance(rng.uniform(0.8, 1.2))
                img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
        else:
            from ..pipeline.data.synthetic import CLASSES, draw

            label = CLASSES[i % len(CLASSES)]
            img = Image.fromarray(draw(label, 160, 120, rng))
        folder = dest / label
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{label}_{i:06d}.jpg", quality=int(rng.integers(85, 96)))
    return dest


def _first(data: Path, dataset: Path, n: int) -> Path:
    """A dataset of the first `n` generated photos, by hard links (no extra disk)."""
    for i, path in enumerate(_photos(data)):
        if i >= n:
            break
        target = dataset / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return dataset


def _add(data: Path, dataset: Path, n: int, count: int) -> None:
    for path in _photos(data)[n : n + count]:
        target = dataset / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)


def _photos(data: Path) -> list[Path]:
    return sorted(data.rglob("*.jpg"), key=lambda p: p.name.rsplit("_", 1)[1])


def _command(environ) -> list[str]:
    other = environ.get("IMGPIPE_BENCH_IMGPIPE")
    return [other] if other else [sys.executable, "-m", "imgpipe.pipeline.commands.cli"]


def _build(command: list[str], args: list[str]) -> dict:
    """One `imgpipe build` in a child process: wall seconds, peak RSS, and what its manifest says it did."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:  # a pipe would fill up and block a chatty child
        child = subprocess.Popen([*command, "build", *args], stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        stderr.seek(0)
        last = stderr.read().strip().splitlines()[-1:]
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        raise RuntimeError(f"imgpipe build failed: {last or status}")
    out = Path(args[args.index("--out") + 1])
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    timings = manifest["timings"]
    training = manifest["training"]
    computed = training.get("features_computed", training.get("bottlenecks_computed", 0))
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "features_computed": computed,
        "feature_ms_per_photo": round(1000 * _feature_seconds(timings) / computed, 2) if computed else None,
        "reused": sorted(name for name, stage in manifest.get("stages", {}).items() if stage.get("reused")),
        "timings": timings,
    }


def _source_folder(environ) -> Path | None:
    explicit = environ.get("IMGPIPE_BENCH_SCALE_SOURCE")
    folders = [explicit] if explicit else [p for p in environ.get("IMGPIPE_BENCH_DATA", "").split(os.pathsep) if p]
    return next((Path(f) for f in folders if f and Path(f).is_dir()), None)


def _feature_seconds(timings: dict) -> float:
    """The feature stage without the one-time LiteRT conversion (reported beside it); older builds timed it
    inside training."""
    if "features" in timings:
        return timings["features"] - timings.get("features.litert_conversion", 0.0)
    return timings.get("train.features", timings.get("train.bottlenecks", 0.0))
