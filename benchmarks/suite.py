"""The benchmark suite: which builds to time, running them, and the JSON and Markdown they leave.

Profiles: `quick` (CI: float and int8 variants, no model-level optimizations) and `full` (every variant,
prune and QAT). Dataset folders come from IMGPIPE_BENCH_DATA (separated by ':'), backbone weights from
IMGPIPE_BENCH_WEIGHTS (a Keras no-top .h5; 'imagenet' needs a network) with IMGPIPE_BENCH_ALPHA; an older
imgpipe to build beside this one on the held-out splits from IMGPIPE_BENCH_PREVIOUS (see `previous`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..exporters.registry import FORMATS
from ..pipeline.config import EMBEDDED_BACKBONE, EMBEDDED_TRAINING, BackboneSpec, BuildConfig
from ..pipeline.verify.metrics import exact_mcnemar_p
from .groups import known_groups, write_groups
from .previous import PREVIOUS_BUILDS, previous_on_split

log = logging.getLogger(__name__)
RESULTS_DIR = Path("benchmarks") / "results"  # relative to where the suite is run: the repository root in CI
# Variants per profile come from each format's row in the format table; model-level optimizations from here.
PROFILE_OPTIMIZATIONS = {"quick": [], "full": ["prune", "qat"]}
PROFILES = tuple(PROFILE_OPTIMIZATIONS)
FINE_TUNE_EPOCHS = 10  # the held-out splits are also built with this much fine-tuning, for comparison
# Group splits drawn per dataset. One split of 500 flowers photos tests 57 of them, where one photo is 1.8 points:
# five splits test ~280 and put each comparison on more than one draw of photographers.
HELD_OUT_SPLITS = 5


@dataclass
class BenchCase:
    name: str
    dataset: Path | None  # None: the embedded dataset
    backbone: BackboneSpec
    baseline: bool = False


def cases_from_environment(environ=os.environ) -> tuple[list[BenchCase], list[str]]:
    """The embedded case always; one case per IMGPIPE_BENCH_DATA folder that exists. Returns (cases, notices)."""
    cases = [BenchCase("embedded", None, EMBEDDED_BACKBONE)]
    notices = []
    folders = [p for p in environ.get("IMGPIPE_BENCH_DATA", "").split(os.pathsep) if p]
    if not folders:
        notices.append(
            "IMGPIPE_BENCH_DATA is not set: only the embedded dataset is benchmarked "
            "(set it to dataset folders separated by ':' to add real photos)."
        )
    weights = environ.get("IMGPIPE_BENCH_WEIGHTS", "imagenet")
    alpha = float(environ.get("IMGPIPE_BENCH_ALPHA", "1.0"))
    if weights != "imagenet" and not Path(weights).is_file():
        notices.append(f"IMGPIPE_BENCH_WEIGHTS={weights} does not exist: real-photo datasets are skipped.")
        return cases, notices
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            notices.append(f"dataset folder {folder} is absent: skipped.")
            continue
        backbone = BackboneSpec("mobilenet_v2", alpha, 224, weights)
        cases.append(BenchCase(path.name, path, backbone, baseline=True))
    return cases, notices


def run_suite(
    profile: str,
    cases: list[BenchCase],
    notices: list[str],
    results_dir: Path = RESULTS_DIR,
    previous: list[str] | None = None,
) -> dict:
    """`previous`: another imgpipe's command, built beside this one on the held-out splits."""
    from ..pipeline.build import run_build

    results_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for case in cases:
        log.info(f"=== benchmark {case.name} ({profile})")
        with tempfile.TemporaryDirectory(prefix="imgpipe-bench-") as tmp:
            config = _config(case, profile, Path(tmp))
            start = time.perf_counter()
            result = run_build(config)
            total = time.perf_counter() - start
            run = _summarise(case, result.manifest, total)
            if case.baseline:
                run["baseline"] = _baseline(case, result.bundle)
                run["versus_baseline"] = _ratios(run, run["baseline"])
                groups = known_groups(case.dataset)
                if groups is not None:
                    run["held_out"] = _held_out(case, profile, Path(tmp), previous, *groups)
        runs.append(run)
        (results_dir / f"{case.name}.json").write_text(json.dumps(run, indent=2) + "\n")
    suite = {
        "profile": profile,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": runs[0]["environment"].get("cpu") if runs else None,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "notices": notices,
        "runs": runs,
    }
    (results_dir / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    return suite


def _config(case: BenchCase, profile: str, out: Path) -> BuildConfig:
    config = BuildConfig(out=out / "build", cache_dir=out / "cache")
    config.dataset = case.dataset
    config.backbone = case.backbone
    if case.dataset is None:
        config.train = EMBEDDED_TRAINING
    config.variants = {name: list(spec.benchmark_variants[profile]) for name, spec in FORMATS.items()}
    config.optimize = list(PROFILE_OPTIMIZATIONS[profile])
    config.allow_failures = True
    return config


def _summarise(case: BenchCase, manifest: dict, total: float) -> dict:
    artifacts = []
    for entry in manifest["artifacts"] + manifest["rejected"]:
        m = entry["metrics"]
        artifacts.append(
            {
                "artifact": f"{entry['format']}:{entry['variant']}",
                "source": entry.get("source"),
                "accuracy": m.get("accuracy"),
                "accuracy_drop": m.get("accuracy_drop"),
                "agreement": m.get("agreement"),
                "bytes": entry["bytes"],
                "gzip_bytes": entry["gzip_bytes"],
                "latency_ms_p50": m.get("latency_ms_p50"),
                "latency_ms_p95": m.get("latency_ms_p95"),
                "published": entry.get("path") is not None,
            }
        )
    return {
        "case": case.name,
        "dataset": manifest["dataset"]["root"],
        "images": manifest["dataset"]["images"],
        "classes": manifest["dataset"]["classes"],
        "backbone": manifest["config"]["backbone"],
        "keras_accuracy": manifest["reference"]["metrics"]["accuracy"],
        "total_seconds": round(total, 2),
        "stages": manifest["timings"],
        "artifacts": artifacts,
        "environment": manifest["environment"],
    }


def _baseline(case: BenchCase, bundle: Path, convert: bool = True) -> dict:
    """The tutorial recipe on the build's own split, read back from the bundle's splits.json."""
    from ..pipeline.bundle.manifest import read_manifest
    from ..pipeline.data.dataset import read_split_file
    from .baseline import run_baseline

    rows = read_split_file(bundle / "splits.json")
    return run_baseline(
        case.dataset,
        [r["path"] for r in rows if r["split"] == "train"],
        [r["path"] for r in rows if r["split"] == "test"],
        read_manifest(bundle)["labels"],
        case.backbone,
        convert=convert,
    )


def _held_out(
    case: BenchCase, profile: str, tmp: Path, previous: list[str] | None, groups: list[tuple[str, str]], what: str
) -> dict:
    """The same build with whole groups (photographers, breeds) held out of training, the same split fine-tuned,
    and the tutorial recipe on it, over HELD_OUT_SPLITS draws of the groups: the accuracy to expect on photos from
    people or breeds no model has seen, and what the default's seconds of training give up, if anything, against
    fine-tuning's minutes."""
    splits = [
        _held_out_split(case, profile, tmp, write_groups(groups, tmp / f"groups-{d}.csv", d), d, previous)
        for d in range(HELD_OUT_SPLITS)
    ]
    return summarise_held_out(splits, what) | ({"previous": " ".join(previous)} if previous else {})


def summarise_held_out(splits: list[dict], what: str) -> dict:
    """Pooled accuracies (photos right over photos tested, in all splits), the photos only the default or only the
    fine-tuned build got right with the exact McNemar p of that split, and median training seconds; the same for
    an older imgpipe's builds when the splits have them."""
    tested = sum(s["test_images"] for s in splits)
    accuracies = ACCURACY_OF | (PREVIOUS_ACCURACY_OF if PREVIOUS_ONLY_ONE_RIGHT[0] in splits[0] else {})
    summary = (
        {"groups": what, "splits": splits, "test_images": tested, "fine_tune_epochs": FINE_TUNE_EPOCHS}
        | {accuracy: sum(s[right] for s in splits) / tested for right, accuracy in accuracies.items()}
        | {key: statistics.median(s[key] for s in splits) for key in SPLIT_SECONDS}
    )
    for pair, p in ((ONLY_ONE_RIGHT, "mcnemar_p"), (PREVIOUS_ONLY_ONE_RIGHT, "previous_mcnemar_p")):
        if pair[0] in splits[0]:
            only = {key: sum(s[key] for s in splits) for key in pair}
            summary |= only | {p: exact_mcnemar_p(*only.values())}
    return summary


# Per held-out split: photos right, for each build, and the pooled accuracy that `summarise_held_out` makes of them.
ACCURACY_OF = {
    "keras_right": "keras_accuracy",
    "fine_tuned_right": "fine_tuned_accuracy",
    "baseline_right": "baseline_accuracy",
}
# Photos only one of the default and the fine-tuned build got right: what tells a real difference from chance.
ONLY_ONE_RIGHT = ("only_keras_right", "only_fine_tuned_right")
# The same for an older imgpipe's builds (IMGPIPE_BENCH_PREVIOUS): this default against the older fine-tuned build.
PREVIOUS_ACCURACY_OF = {f"{name}_right": f"{name}_accuracy" for name in PREVIOUS_BUILDS}
PREVIOUS_ONLY_ONE_RIGHT = ("only_keras_right_vs_previous", "only_previous_fine_tuned_right")
SPLIT_SECONDS = ("train_seconds", "fine_tuned_train_seconds", "baseline_train_seconds")


def _held_out_split(
    case: BenchCase, profile: str, tmp: Path, groups: Path, draw: int, previous: list[str] | None
) -> dict:
    from ..pipeline.build import run_build

    config = _config(case, profile, tmp)
    config.out = tmp / f"held-out-{draw}"
    config.groups = groups
    config.variants = {}
    config.targets = ["tflite"]
    config.optimize = []
    result = run_build(config)
    manifest = result.manifest
    baseline = _baseline(case, result.bundle, convert=False)
    config.out = tmp / f"held-out-{draw}-fine-tuned"
    config.train = replace(config.train, fine_tune_epochs=FINE_TUNE_EPOCHS)
    fine_tuned = run_build(config).manifest
    tested = manifest["reference"]["metrics"]["samples"]
    wrong, wrong_fine_tuned = _wrong(manifest, tested), _wrong(fine_tuned, tested)
    split = {
        "draw": draw,
        "test_images": tested,
        "keras_right": tested - len(wrong),
        "fine_tuned_right": tested - len(wrong_fine_tuned),
        **dict(zip(ONLY_ONE_RIGHT, _only_right(wrong, wrong_fine_tuned))),
        "baseline_right": round(baseline["accuracy"] * tested),
        "train_seconds": round(train_seconds(manifest["timings"]), 2),
        "fine_tuned_train_seconds": round(train_seconds(fine_tuned["timings"]), 2),
        "baseline_train_seconds": baseline["train_seconds"],
    }
    if previous:
        splits = json.loads((result.bundle / "splits.json").read_text())
        other = previous_on_split(
            previous, case.dataset, splits, case.backbone, FINE_TUNE_EPOCHS, tmp / f"held-out-{draw}-previous"
        )
        split |= {f"{name}_right": tested - len(other[name]) for name in PREVIOUS_BUILDS}
        split |= dict(zip(PREVIOUS_ONLY_ONE_RIGHT, _only_right(wrong, other["previous_fine_tuned"])))
    return split


def _only_right(wrong: set[str], other_wrong: set[str]) -> tuple[int, int]:
    """(photos only the first build got right, photos only the other got right), from the photos each got wrong."""
    return len(other_wrong - wrong), len(wrong - other_wrong)


def _wrong(manifest: dict, tested: int) -> set[str]:
    """The test photos a build on a held-out split got wrong, which the two builds of the split compare."""
    samples, mistakes = manifest["reference"]["metrics"]["samples"], manifest["reference"]["mistakes"]
    if samples != tested:
        raise RuntimeError(f"builds on one held-out split tested {samples} and {tested} photos")
    if len(mistakes["listed"]) != mistakes["total"]:
        raise RuntimeError(f"the manifest lists {len(mistakes['listed'])} of {mistakes['total']} mistakes")
    return {m["path"] for m in mistakes["listed"]}


TRAINING_STAGES = ("scan", "features", "augmented features", "train")


def train_seconds(stages: dict) -> float:
    """What imgpipe spends to get from photos to a trained model: scan, features (the augmented views' too) and
    training."""
    return sum(v for k, v in stages.items() if k in TRAINING_STAGES)


def _ratios(run: dict, baseline: dict) -> dict:
    imgpipe_train = train_seconds(run["stages"])
    return {
        "train_time_ratio": round(imgpipe_train / baseline["train_seconds"], 3),
        "accuracy_ratio": round(run["keras_accuracy"] / baseline["accuracy"], 3) if baseline["accuracy"] else None,
        "accuracy_difference": round(run["keras_accuracy"] - baseline["accuracy"], 4),
    }
