"""Backbone weight files: is it a Keras weights file at all, which backbone was it made for, does it fit.

Checked before any photo is decoded, because a file that does not fit would otherwise fail after minutes of work
with a Keras shape error. A file is identified by the shapes of its weights, in order, compared with those of
each candidate backbone: the names inside Keras' own files come from old Keras versions and do not match today's
layer names, and file names are only a hint.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from ..config import ALPHAS, ARCHITECTURES, DEFAULT_ALPHA, BackboneSpec
from ..core.errors import WeightsError
from ..core.tf_runtime import load_tensorflow
from .model import backbone_model, build_backbone

SKELETON_SIZE = 96  # shapes of convolution weights do not depend on the input size
log = logging.getLogger(__name__)


def resolve_backbone(spec: BackboneSpec, fitted: dict | None = None) -> BackboneSpec:
    """`spec` with its width multiplier decided (the one the weights file was made for, else DEFAULT_ALPHA) and its
    weights known to load: a file that does not fit, or ImageNet weights that cannot be downloaded, fail here.
    The console says which width was chosen and why. `fitted` (JSON-able, kept in the build's cache) holds the
    width of each weights file already checked, by path, size and modification time: checking builds a Keras
    skeleton, which costs TensorFlow's import and a second."""
    asked = None if spec.weights_file is None else _identity(spec)
    if spec.weights_file is None:
        why = "as set" if spec.alpha is not None else "the default width, --alpha to change"
        spec = spec if spec.alpha is not None else replace(spec, alpha=DEFAULT_ALPHA)
        if spec.weights == "imagenet":
            _fetch_imagenet(spec)
    elif (alpha := (fitted or {}).get(asked)) is not None:
        spec, why = replace(spec, alpha=alpha), "checked by an earlier build"
    elif spec.alpha is None:
        found = identify(spec.weights_file, prefer=spec.arch)
        if found is None or found[0] != spec.arch:
            _raise_misfit(spec, found)
        spec, why = replace(spec, alpha=found[1]), f"the width {spec.weights_file.name} was made for"
    else:
        check_weights_fit(spec)
        why = "as set; the weights file fits it"
    if asked is not None and fitted is not None:
        fitted[asked] = spec.alpha
    log.info(f"backbone: {describe_backbone(spec)} (alpha {_width(spec.alpha)}: {why})")
    return spec


def _identity(spec: BackboneSpec) -> str | None:
    """The weights file as it is now (an edited or replaced file has another size or time) and the width asked;
    None when it cannot be read (the check then says why)."""
    try:
        stat = spec.weights_file.stat()
    except OSError:
        return None
    return f"{spec.weights_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{spec.arch}|{spec.alpha}"


def describe_backbone(spec: BackboneSpec) -> str:
    weights = {"imagenet": "ImageNet weights", "none": "random initialisation"}.get(
        spec.weights, f"weights {Path(spec.weights).name}"
    )
    return f"{spec.arch} alpha {_width(spec.alpha)}, {spec.image_size} px, {weights}"


def _width(alpha: float) -> str:
    """1.0 rather than 1: widths are written with a decimal point everywhere else (help, Keras file names)."""
    return f"{alpha:.1f}" if float(alpha).is_integer() else f"{alpha:g}"


def _fetch_imagenet(spec: BackboneSpec) -> None:
    """Keras downloads (or finds in its cache) the ImageNet file while building the backbone."""
    _, keras = load_tensorflow()
    build_backbone(spec, keras.Input((spec.image_size, spec.image_size, 3)))


def check_weights_fit(spec: BackboneSpec) -> None:
    shapes = weight_shapes(spec.weights_file)
    if shapes != _skeleton_shapes(spec.arch, spec.alpha):
        _raise_misfit(spec, identify(spec.weights_file, prefer=spec.arch))


def weight_shapes(path: Path) -> tuple[tuple[int, ...], ...]:
    """Every weight's shape in the file's layer order: the order Keras loads them in."""
    import h5py

    if not os.access(path, os.R_OK):  # h5py words a permission as "unable to open file"
        raise WeightsError(f"--weights {path}: permission denied; fix its permissions (chmod/chown)")
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            shapes = []
            for layer in _names(group.attrs["layer_names"]):
                for weight in _names(group[layer].attrs["weight_names"]):
                    shapes.append(tuple(int(d) for d in group[layer][weight].shape))
            return tuple(shapes)
    except (OSError, KeyError, ValueError) as e:
        raise WeightsError(
            f"{path}: not a Keras weights file ({_short(e)}); pass a Keras no-top .h5 such as "
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5, 'imagenet' or 'none'"
        ) from None


def identify(path: Path, prefer: str) -> tuple[str, float] | None:
    """(architecture, alpha) whose no-top weights have exactly the file's shapes; the preferred architecture and
    the alpha its file name suggests are tried first, since building each candidate costs about a second."""
    shapes = weight_shapes(path)
    hint = _alpha_hint(Path(path).name)
    for arch in sorted(ARCHITECTURES, key=lambda a: a != prefer):
        for alpha in sorted(ALPHAS[arch], key=lambda a: hint is None or not math.isclose(a, hint)):
            if shapes == _skeleton_shapes(arch, alpha):
                return arch, alpha
    return None


def _raise_misfit(spec: BackboneSpec, found: tuple[str, float] | None) -> None:
    wanted = f"{spec.arch}" + (f" alpha {spec.alpha:g}" if spec.alpha is not None else "")
    if found is None:
        fix = "it fits none of the MobileNets imgpipe builds; pass the no-top .h5 made for this backbone"
    else:
        arch, alpha = found
        fix = f"it was made for {arch} alpha {alpha:g}: pass --arch {arch} --alpha {alpha:g}"
    raise WeightsError(f"{spec.weights}: these weights do not fit {wanted}; {fix}")


@lru_cache(maxsize=None)
def _skeleton_shapes(arch: str, alpha: float) -> tuple[tuple[int, ...], ...]:

    spec = BackboneSpec(arch=arch, alpha=alpha, image_size=SKELETON_SIZE, weights="none")
    model = backbone_model(spec, weights=None, input_shape=(SKELETON_SIZE, SKELETON_SIZE, 3))
    return tuple(tuple(int(d) for d in w.shape) for layer in model.layers for w in layer.weights)


def _alpha_hint(name: str) -> float | None:
    """Keras' file names carry the width: `..._0.5_224_no_top.h5` (V2), `mobilenet_2_5_224_...` (V1: 0.25),
    `..._224_1.0_float_no_top...` (V3)."""
    match = re.search(r"_(\d\.\d+)_\d+_no_top", name) or re.search(r"_(1\.0|0\.75)_float", name)
    if match:
        return float(match.group(1))
    match = re.search(r"mobilenet_(1_0|7_5|5_0|2_5)_\d+_tf", name)
    return {"1_0": 1.0, "7_5": 0.75, "5_0": 0.5, "2_5": 0.25}[match.group(1)] if match else None


def _names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:120]
