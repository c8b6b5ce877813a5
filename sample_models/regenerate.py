"""Rebuild sample_models/: a tiny build of the embedded dataset, a few generated images, and golden outputs.

    python sample_models/regenerate.py

The artifacts are small enough to commit (each under 1 MB) and let an app developer try the integration
snippets before training anything; tests/test_sample_models.py re-runs them with every runner against the goldens.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN_IMAGES = 6
GOLDEN_SEED = 2024
TOP_K = 3


def main() -> int:
    from imgpipe.pipeline.build import run_build
    from imgpipe.pipeline.commands.build_options import given_options
    from imgpipe.pipeline.commands.cli import build_parser
    from imgpipe.pipeline.settings import make_config

    with tempfile.TemporaryDirectory() as tmp:
        args = build_parser().parse_args(
            [
                "build",
                "--arch",
                "mobilenet_v1",
                "--alpha",
                "0.25",
                "--out",
                f"{tmp}/out",
                "--cache-dir",
                f"{tmp}/cache",
                "--variants",
                "tflite:fp32,int8",
                "onnx:fp32",
                "coreml:fp16",
                "--io-type",
                "uint8",
                "--name",
                "TextureClassifier",
            ]
        )
        run_build(make_config(given_options(args), args.config))
        _replace_bundle(Path(tmp) / "out" / "bundle", HERE / "bundle")
    images = write_golden_images(HERE / "images")
    (HERE / "golden.json").write_text(json.dumps(golden_outputs(HERE / "bundle", images), indent=2) + "\n")
    return 0


def write_golden_images(folder: Path) -> list[Path]:
    """Generated texture images, one or two per class, as PNG files (the raw end of the preprocessing contract)."""
    from PIL import Image

    from imgpipe.pipeline.data.synthetic import CLASSES, draw

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rng = np.random.default_rng(GOLDEN_SEED)
    paths = []
    for i in range(GOLDEN_IMAGES):
        name = CLASSES[i % len(CLASSES)]
        path = folder / f"{i}_{name}.png"
        Image.fromarray(draw(name, 120, 100, rng)).save(path)
        paths.append(path)
    return paths


def golden_outputs(bundle: Path, images: list[Path]) -> dict:
    """Top-k of every artifact that can run here, per image: what later code must reproduce."""
    from imgpipe.exporters.registry import open_runner
    from imgpipe.pipeline.bundle.manifest import read_manifest
    from imgpipe.pipeline.core.preprocessing import Preprocessing, load_image

    manifest = read_manifest(bundle)
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    pixels = np.stack([load_image(p, pre.image_size) for p in images])
    goldens = {}
    for entry in manifest["artifacts"]:
        runner = open_runner(entry["format"], bundle / entry["path"], pre)
        if not runner.can_predict:
            continue
        probs = runner.predict(pixels)
        goldens[entry["path"]] = {
            p.name: [
                {"label": manifest["labels"][j], "score": round(float(row[j]), 6)} for j in np.argsort(-row)[:TOP_K]
            ]
            for p, row in zip(images, probs)
        }
    return {"images": [p.name for p in images], "top_k": TOP_K, "outputs": goldens}


def _replace_bundle(built: Path, dest: Path) -> None:
    """The build's bundle without its zips (the same files again), with SHA256SUMS rewritten to match."""
    from imgpipe.pipeline.bundle.checksums import write_sha256sums

    for archive in built.glob("*.zip"):
        archive.unlink()
    write_sha256sums(built)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(built, dest)


if __name__ == "__main__":
    sys.exit(main())
