"""Core ML export: one ML Program `.mlpackage` per variant, with labels, preprocessing and Xcode metadata inside.

The image input does the normalization itself (ImageType scale/bias), so an app hands over a CGImage or
CVPixelBuffer and reads `classLabel` / `classLabelProbs`, the names Xcode's generated class and Vision use.
Nothing off macOS can run a Core ML model, so there the runner checks the artifact's structure instead of predicting.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from imgpipe import __version__
from imgpipe.errors import ArtifactError, ConfigError, ExportError, first_line
from imgpipe.exporters.base import Artifact, EmbeddedInfo, ExportContext, Runner
from imgpipe.exporters.registry import FORMATS
from imgpipe.preprocessing import Preprocessing
from imgpipe.tf_runtime import load_tensorflow

INPUT_NAME = "image"
LABEL_OUTPUT = "classLabel"
PROBS_OUTPUT = "classLabelProbs"
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"
PALETTE_BITS = (4, 6, 8)
# coremltools' own default: smaller tensors (biases, most depthwise kernels) stay fp16 because compressing
# them saves little and costs accuracy.
WEIGHT_THRESHOLD = 2048
METADATA_KEYS = ("labels", "preprocessing", "imgpipe_version", "variant", PREVIEW_TYPE_KEY)
UNAVAILABLE_REASON = "Core ML prediction needs macOS (coremltools cannot run models on Linux)"


def export(ctx: ExportContext, variant: str, dest: Path) -> Artifact:
    """Convert `ctx.model` to `dest` (an .mlpackage directory), replacing it only once the new one is complete."""
    compression = _compression(variant, ctx.options)
    _check_input_size(ctx)
    ct = _coremltools()
    precision = "fp32" if variant == "fp32" else "fp16"
    try:
        mlmodel = _convert(ct, ctx, precision)
        if compression is not None:
            mlmodel = _compress(ct, mlmodel, compression)
    except Exception as e:  # the converter raises anything from ValueError to NotImplementedError
        raise ExportError(f"Core ML {variant} conversion failed: {first_line(e)}") from None
    spec = mlmodel.get_spec()
    _name_outputs(ct, spec)
    _describe(spec, ctx, variant)
    _save_atomically(ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True), Path(dest))
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
            "head_weights_max_abs_diff": _head_weights_diff(ctx.model, Path(dest)),
        },
    )


def _head_weights_diff(model, path: Path) -> float:
    """Largest difference between the Keras classifier head and the one in the package: the numerical evidence
    Linux can give that the trained weights (not a fresh or transposed matrix) were shipped. Expect ~0 for fp32,
    ~1e-3 for fp16, more for compressed variants."""
    kernel, bias = final_dense_weights(path)
    keras_kernel, keras_bias = model.layers[-1].get_weights()
    return float(max(np.abs(kernel - keras_kernel).max(), np.abs(bias - keras_bias).max()))


def _compression(variant: str, options) -> dict | None:
    """The compression settings a variant stands for, validated before minutes are spent converting."""
    variants = FORMATS["coreml"].variants
    if variant not in variants:
        raise ConfigError(f"unknown Core ML variant '{variant}'; valid variants: {', '.join(variants)}")
    if variant == "int8":
        return {
            "method": "linear_quantize_weights",
            "mode": "linear_symmetric",
            "dtype": "int8",
            "granularity": "per_channel",
            "weight_threshold": WEIGHT_THRESHOLD,
        }
    if variant == "palettize":
        if options.palette_bits not in PALETTE_BITS:
            raise ConfigError(
                f"palette bits {options.palette_bits} is not supported; valid: {', '.join(map(str, PALETTE_BITS))}"
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


def _coremltools():
    """coremltools imports TensorFlow, and only converts tf_keras models if the legacy switch was set first."""
    load_tensorflow()
    import coremltools

    return coremltools


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


def _save_atomically(mlmodel, dest: Path) -> None:
    """Stage the package next to `dest` (same filesystem, so the renames are atomic) and swap it in when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        staged, previous = staging / dest.name, staging / "previous"
        mlmodel.save(str(staged))
        if dest.exists():
            os.replace(dest, previous)
        try:
            os.replace(staged, dest)
        except OSError:
            if previous.exists():
                os.replace(previous, dest)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_runner(path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1) -> "CoreMLRunner":
    """`num_threads` is ignored: Core ML schedules its own work over CPU, GPU and Neural Engine."""
    return CoreMLRunner(Path(path), preprocessing)


def read_embedded(path: Path) -> EmbeddedInfo:
    ct = _coremltools()
    mlmodel = _load_spec_only(ct, Path(path))
    return _embedded(mlmodel.get_spec(), lambda: _classify_labels(_load_program(mlmodel)))


class CoreMLRunner(Runner):
    """Predicts through Core ML itself on macOS; elsewhere it can only inspect the package."""

    def __init__(self, path: Path, preprocessing: Preprocessing | None = None):
        ct = _coremltools()
        self.path = path
        self._spec_model = _load_spec_only(ct, path)
        self._program_cache = None
        self.embedded = _embedded(self._spec_model.get_spec(), lambda: _classify_labels(self._program()))
        self.preprocessing = preprocessing or self.embedded.preprocessing
        self._model = None
        if platform.system() == "Darwin":
            self._model = _load(ct, path, skip_model_load=False)
        else:
            self.can_predict = False
            self.unavailable_reason = UNAVAILABLE_REASON

    def predict(self, images: np.ndarray) -> np.ndarray:
        """One image per call, as an app calls it; the probabilities come back as a dict, put in label order."""
        if self._model is None:
            raise ArtifactError(f"{self.path}: {self.unavailable_reason}")
        from PIL import Image

        rows = []
        for image in images:
            scores = self._model.predict({INPUT_NAME: Image.fromarray(np.asarray(image, dtype=np.uint8), "RGB")})
            rows.append([scores[PROBS_OUTPUT][label] for label in self.embedded.labels])
        return np.asarray(rows, dtype=np.float32)

    def structural_checks(self) -> dict[str, bool]:
        """Off macOS this is all the verification there is, so each check reads what Core ML will actually use:
        the program's ops for scale, bias and labels, the description for names and metadata."""
        spec = self._spec_model.get_spec()
        program = self._program()
        classify = _find_classify(program)
        scale, bias = _input_scale_bias(program)
        pre = self.preprocessing
        return {
            "input_is_rgb_image": _input_is_rgb_image(spec),
            "input_size_matches": pre is not None and _input_size(spec) == (pre.image_size, pre.image_size),
            "preprocessing_scale_matches": pre is not None and bool(np.isclose(scale, pre.coreml_scale, atol=1e-7)),
            "preprocessing_bias_matches": pre is not None and bool(np.allclose(bias, pre.coreml_bias, atol=1e-6)),
            # `imgpipe predict` and apps reading the package trust the embedded copy, not the caller's
            "embedded_preprocessing_matches": pre is not None and self.embedded.preprocessing == pre,
            "labels_present": classify is not None and len(classify.classes.val) > 0,
            "labels_match_embedded": classify is not None and list(classify.classes.val) == self.embedded.labels,
            "output_names": _output_names_ok(spec, classify),
            "metadata_present": _metadata_present(spec),
            "xcode_preview_image_classifier": spec.description.metadata.userDefined.get(PREVIEW_TYPE_KEY)
            == "imageClassifier",
        }

    def _program(self):
        """The pyMIL program is loaded on demand: building it reads every weight."""
        if self._program_cache is None:
            self._program_cache = _load_program(self._spec_model)
        return self._program_cache


def final_dense_weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The classifier head's kernel (features, classes) and bias as stored in the package, decompressed to float.

    Comparing them with the Keras Dense layer proves on Linux that the trained weights (and not, say, a fresh
    initialization or a transposed matrix) made it into the artifact.
    """
    ct = _coremltools()
    classify = _find_classify(_load_program(_load_spec_only(ct, Path(path))))
    if classify is None:
        raise ArtifactError(f"{path}: no classify op, so this is not an image classifier")
    var = classify.probabilities
    while var.op is not None and var.op.op_type in ("cast", "softmax"):
        var = var.op.x
    op = var.op
    if op is None or op.op_type not in ("linear", "matmul"):
        raise ArtifactError(f"{path}: the probabilities do not come from a linear layer")
    if op.op_type == "linear":
        kernel = _const_value(op.weight).T
        bias = _const_value(op.bias) if op.bias is not None else np.zeros(kernel.shape[1])
    else:  # a zero bias is folded away and the Dense layer stays a plain matmul
        kernel = _const_value(op.y)
        kernel = kernel.T if op.transpose_y.val else kernel
        bias = np.zeros(kernel.shape[1])
    return kernel.astype(np.float32), np.asarray(bias, dtype=np.float32)


def _const_value(var) -> np.ndarray:
    """Compressed weights are constexpr ops (palette, affine, sparse) that Core ML expands at load time."""
    if var.val is not None:
        return np.asarray(var.val)
    return np.asarray(var.op.materialized_val_inference())


def _load(ct, path: Path, skip_model_load: bool):
    try:
        return ct.models.MLModel(str(path), skip_model_load=skip_model_load)
    except Exception as e:  # coremltools raises bare Exceptions and protobuf errors for broken packages
        raise ArtifactError(f"{path}: not a loadable Core ML model ({first_line(e)})") from None


def _load_spec_only(ct, path: Path):
    mlmodel = _load(ct, path, skip_model_load=True)
    if mlmodel.get_spec().WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{path}: not an ML Program (imgpipe exports .mlpackage ML Programs only)")
    return mlmodel


def _load_program(mlmodel):
    """Reload the package into pyMIL: the spec alone keeps scale, bias and labels inside the op list.

    milproto.load is what coremltools' own compression utilities use to read a saved package.
    """
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = mlmodel.get_spec()
    try:
        return load(spec, spec.specificationVersion, mlmodel.weights_dir)
    except Exception as e:  # a truncated weight.bin surfaces as a bare ValueError("index out of bounds")
        raise ArtifactError(f"{mlmodel.package_path}: the ML Program cannot be read ({first_line(e)})") from None


def _embedded(spec, classify_labels) -> EmbeddedInfo:
    """Labels and preprocessing from imgpipe's metadata; a package from elsewhere still has the classify labels."""
    user = spec.description.metadata.userDefined
    labels = json.loads(user["labels"]) if "labels" in user else [str(c) for c in classify_labels()]
    preprocessing = Preprocessing.from_dict(json.loads(user["preprocessing"])) if "preprocessing" in user else None
    return EmbeddedInfo(labels=labels, preprocessing=preprocessing)


def _find_classify(program):
    ops = program.functions["main"].operations
    return next((op for op in ops if op.op_type == "classify"), None)


def _classify_labels(program) -> list:
    classify = _find_classify(program)
    return list(classify.classes.val) if classify is not None else []


def _input_scale_bias(program) -> tuple[float, list[float]]:
    """The ImageType scale and bias become a `mul` and an `add` right after the input; coremltools leaves out
    either when it is the identity (scale 1, bias 0)."""
    scale, bias = 1.0, [0.0, 0.0, 0.0]
    var = program.functions["main"].inputs[INPUT_NAME]
    consumers = var.child_ops
    if len(consumers) == 1 and consumers[0].op_type == "mul":
        scale = float(np.asarray(consumers[0].y.val).reshape(-1)[0])
        var = consumers[0].outputs[0]
        consumers = var.child_ops
    if len(consumers) == 1 and consumers[0].op_type == "add":
        bias = [float(b) for b in np.asarray(consumers[0].y.val).reshape(-1)]
    return scale, bias


def _input_is_rgb_image(spec) -> bool:
    inputs = spec.description.input
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type.WhichOneof("Type") != "imageType":
        return False
    return inputs[0].type.imageType.colorSpace == inputs[0].type.imageType.RGB


def _input_size(spec) -> tuple[int, int] | None:
    if not _input_is_rgb_image(spec):
        return None
    image = spec.description.input[0].type.imageType
    return image.height, image.width


def _output_names_ok(spec, classify) -> bool:
    """The description and the program must agree, or Core ML refuses to load the package."""
    desc = spec.description
    described = {o.name: o.type.WhichOneof("Type") for o in desc.output}
    return (
        described == {LABEL_OUTPUT: "stringType", PROBS_OUTPUT: "dictionaryType"}
        and desc.predictedFeatureName == LABEL_OUTPUT
        and desc.predictedProbabilitiesName == PROBS_OUTPUT
        and classify is not None
        and [v.name for v in classify.outputs] == [LABEL_OUTPUT, PROBS_OUTPUT]
    )


def _metadata_present(spec) -> bool:
    meta = spec.description.metadata
    fields = (meta.shortDescription, meta.author, meta.license, meta.versionString)
    features = [*spec.description.input, *spec.description.output]
    return (
        all(fields)
        and all(f.shortDescription for f in features)
        and all(meta.userDefined.get(k) for k in METADATA_KEYS)
    )
