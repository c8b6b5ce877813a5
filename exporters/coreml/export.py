"""Core ML export: one ML Program `.mlpackage` per variant, with labels, preprocessing and Xcode metadata inside.

The image input does the normalization itself (ImageType scale/bias), so an app hands over a CGImage or
CVPixelBuffer and reads `classLabel` / `classLabelProbs`, the names Xcode's generated class and Vision use.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ConfigError, ExportError, first_line
from ...pipeline.core.files import replace_tree_atomic
from ...pipeline.core.preprocessing import INPUT_NAME
from ...pipeline.core.version import __version__
from ..base import Artifact, ExportContext
from ..registry import FORMATS
from .package import LABEL_OUTPUT, PREVIEW_TYPE_KEY, PROBS_OUTPUT, coremltools, final_dense_weights

# coremltools' own default: smaller tensors (biases, most depthwise kernels) stay fp16 because compressing
# them saves little and costs accuracy.
WEIGHT_THRESHOLD = 2048


def export(ctx: ExportContext, variant: str, dest: Path) -> Artifact:
    """Convert `ctx.model` to `dest` (an .mlpackage directory), replacing it only once the new one is complete."""
    compression = _compression(variant, ctx.options)
    _check_input_size(ctx)
    ct = coremltools()
    precision = "fp32" if variant == "fp32" else "fp16"
    try:
        mlmodel = _base_program(ct, ctx, precision)
        if compression is not None:
            mlmodel = _compress(ct, mlmodel, compression)
    except Exception as e:  # the converter raises anything from ValueError to NotImplementedError
        raise ExportError(f"Core ML {variant} conversion failed: {first_line(e)}") from None
    spec = mlmodel.get_spec()
    _name_outputs(ct, spec)
    _describe(spec, ctx, variant)
    final = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    replace_tree_atomic(Path(dest), lambda staged: save_reproducibly(final, staged))
    return Artifact(
        format="coreml",
        variant=variant,
        path=Path(dest),
        labels=list(ctx.labels),
        preprocessing=ctx.preprocessing,
        source=ctx.source,
        details={
            "model_type": "mlprogram",
            "compute_precision": precision,
            # the compression ops need iOS 16, so coremltools raises the spec version of compressed variants
            "minimum_deployment_target": ct.target(spec.specificationVersion).name,
            "specification_version": spec.specificationVersion,
            "compression": compression,
            "head_weights_max_abs_diff": head_weights_diff(ctx.model, Path(dest)),
        },
    )


def save_reproducibly(mlmodel, path: Path) -> None:
    """Save the package so that its bytes depend on the model only. coremltools writes its spec in protobuf's map
    order, which follows Python's per-process string hashing, and names the package's two items with random
    UUIDs: two identical builds gave different model.mlmodel and Manifest.json files (and ios.zip, SHA256SUMS)."""
    from coremltools.proto import Model_pb2

    mlmodel.save(str(path))
    spec_file = path / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    spec_file.write_bytes(spec.SerializeToString(deterministic=True))
    manifest_file = path / "Manifest.json"
    manifest = json.loads(manifest_file.read_text())
    ids = {
        old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"imgpipe:{item['path']}"))
        for old, item in manifest["itemInfoEntries"].items()
    }
    manifest["itemInfoEntries"] = {ids[old]: item for old, item in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = ids[manifest["rootModelIdentifier"]]
    manifest_file.write_text(json.dumps(manifest, indent=4, sort_keys=True))


def _base_program(ct, ctx: ExportContext, precision: str):
    """The converted (uncompressed) program at `precision`, converted once per model: every compressed variant
    starts from the fp16 one, and conversion is the slow step."""
    key = ("coreml", precision, id(ctx.model))
    model, mlmodel = ctx.memo.get(key, (None, None))
    if model is not ctx.model:  # keyed by identity; the model is kept so its id cannot be reused
        mlmodel = _convert(ct, ctx, precision)
        ctx.memo[key] = (ctx.model, mlmodel)
    return mlmodel


def head_weights_diff(model, path: Path) -> float:
    """Largest difference between the Keras classifier head and the one in the package: the numerical evidence
    Linux can give that the trained weights (not a fresh or transposed matrix) were shipped. Expect ~0 for fp32,
    ~1e-3 for fp16, more for compressed variants."""
    kernel, bias = final_dense_weights(path)
    keras_kernel, keras_bias = model.layers[-1].get_weights()
    return float(max(np.abs(kernel - keras_kernel).max(), np.abs(bias - keras_bias).max()))


def _compression(variant: str, options) -> dict | None:
    """The compression settings a variant stands for, validated before minutes are spent converting."""
    FORMATS["coreml"].variant(variant)  # raises for an unknown one
    if variant == "int8":
        return {
            "method": "linear_quantize_weights",
            "mode": "linear_symmetric",
            "dtype": "int8",
            "granularity": "per_channel",
            "weight_threshold": WEIGHT_THRESHOLD,
        }
    if variant == "palettize":
        bits = FORMATS["coreml"].options[0].choices
        if options.palette_bits not in bits:
            raise ConfigError(
                f"palette bits {options.palette_bits} is not supported; valid: {', '.join(map(str, bits))}"
            )
        return {
            "method": "palettize_weights",
            "mode": "kmeans",
            "nbits": options.palette_bits,
            "granularity": "per_tensor",
            "weight_threshold": WEIGHT_THRESHOLD,
        }
    if variant == "pruned":
        if not 0.0 < options.coreml_sparsity < 1.0:
            raise ConfigError(f"Core ML sparsity {options.coreml_sparsity} must be between 0 and 1 (exclusive)")
        return {
            "method": "prune_weights",
            "mode": "magnitude",
            "target_sparsity": options.coreml_sparsity,
            "weight_threshold": WEIGHT_THRESHOLD,
        }
    return None


def _check_input_size(ctx: ExportContext) -> None:
    """MobileNet runs at any size, so the converter would silently build an input the model was not trained for."""
    size = ctx.preprocessing.image_size
    model_size = tuple(ctx.model.input_shape[1:3])
    if model_size != (size, size):
        raise ConfigError(
            f"preprocessing image size {size} does not match the model's {model_size[0]}x{model_size[1]} input"
        )


def _convert(ct, ctx: ExportContext, precision: str):
    size = ctx.preprocessing.image_size
    image = ct.ImageType(
        name=INPUT_NAME,
        shape=(1, size, size, 3),
        scale=ctx.preprocessing.coreml_scale,
        bias=ctx.preprocessing.coreml_bias,
        color_layout=ct.colorlayout.RGB,
    )
    return ct.convert(
        ctx.model,
        source="tensorflow",
        convert_to="mlprogram",
        inputs=[image],
        classifier_config=ct.ClassifierConfig(list(ctx.labels), predicted_feature_name=LABEL_OUTPUT),
        minimum_deployment_target=ct.target.iOS15,
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        skip_model_load=True,  # exporting needs no compiled model, and loading fails off macOS anyway
    )


def _compress(ct, mlmodel, compression: dict):
    """Compress the fp16 model: from fp32, 6-bit palettes come out ~12% larger (uncompressed small tensors stay
    fp32) and k-means takes ~3x longer."""
    opt = ct.optimize.coreml
    if compression["method"] == "linear_quantize_weights":
        op_config = opt.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
        )
        return opt.linear_quantize_weights(mlmodel, opt.OptimizationConfig(global_config=op_config))
    if compression["method"] == "palettize_weights":
        op_config = opt.OpPalettizerConfig(
            mode="kmeans", nbits=compression["nbits"], granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD
        )
        return opt.palettize_weights(mlmodel, opt.OptimizationConfig(global_config=op_config))
    op_config = opt.OpMagnitudePrunerConfig(
        target_sparsity=compression["target_sparsity"], weight_threshold=WEIGHT_THRESHOLD
    )
    return opt.prune_weights(mlmodel, opt.OptimizationConfig(global_config=op_config))


def _name_outputs(ct, spec) -> None:
    """coremltools calls the probabilities `classLabel_probs`; Xcode's template and Vision expect `classLabelProbs`."""
    current = spec.description.predictedProbabilitiesName
    if current != PROBS_OUTPUT:
        ct.utils.rename_feature(spec, current, PROBS_OUTPUT)


def _describe(spec, ctx: ExportContext, variant: str) -> None:
    """What Xcode shows on the model page, plus what imgpipe needs to run the artifact without its manifest."""
    meta = spec.description.metadata
    meta.shortDescription = ctx.metadata.description
    meta.author = ctx.metadata.author
    meta.license = ctx.metadata.license
    meta.versionString = ctx.metadata.version
    size = ctx.preprocessing.image_size
    descriptions = {
        INPUT_NAME: f"RGB photo, whole image resized to {size}x{size} (no crop); the model normalizes it itself",
        LABEL_OUTPUT: "Most likely class label",
        PROBS_OUTPUT: "Probability of each class label",
    }
    for feature in [*spec.description.input, *spec.description.output]:
        feature.shortDescription = descriptions.get(feature.name, "")
    meta.userDefined.update(
        {
            "name": ctx.metadata.name,
            "labels": json.dumps(list(ctx.labels)),
            "preprocessing": json.dumps(ctx.preprocessing.to_dict()),
            "imgpipe_version": __version__,
            "variant": variant,
            "source": ctx.source,
            PREVIEW_TYPE_KEY: "imageClassifier",
        }
    )
