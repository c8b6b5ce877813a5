"""What can be checked in a saved Core ML package without running it: each check reads what Core ML will use
(the program's ops for scale, bias and labels, the description for names and metadata)."""

from __future__ import annotations

import numpy as np

from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ..base import EmbeddedInfo
from .mil.program import Program
from .package import LABEL_OUTPUT, PREVIEW_TYPE_KEY, PROBS_OUTPUT, classify_labels, find_classify, input_scale_bias

METADATA_KEYS = ("labels", "preprocessing", "imgpipe_version", "variant", PREVIEW_TYPE_KEY)


def structural_checks(spec, program: Program, embedded: EmbeddedInfo, pre: Preprocessing | None) -> dict[str, bool]:
    """`spec` is the package's Model protobuf, `program` its main function as the executor reads it."""
    classify = find_classify(program)
    labels = classify_labels(program)
    scale, bias = input_scale_bias(program)
    return {
        "input_is_rgb_image": _input_is_rgb_image(spec),
        "input_size_matches": pre is not None and _input_size(spec) == (pre.image_size, pre.image_size),
        "preprocessing_scale_matches": pre is not None and bool(np.isclose(scale, pre.coreml_scale, atol=1e-7)),
        "preprocessing_bias_matches": pre is not None and bool(np.allclose(bias, pre.coreml_bias, atol=1e-6)),
        # `imgpipe predict` and apps reading the package trust the embedded copy, not the caller's
        "embedded_preprocessing_matches": pre is not None and embedded.preprocessing == pre,
        "labels_present": len(labels) > 0,
        "labels_match_embedded": labels == embedded.labels,
        "output_names": _output_names_ok(spec, classify),
        "metadata_present": _metadata_present(spec),
        "xcode_preview_image_classifier": spec.description.metadata.userDefined.get(PREVIEW_TYPE_KEY)
        == "imageClassifier",
    }


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
