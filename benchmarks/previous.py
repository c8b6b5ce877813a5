"""An older imgpipe beside this one on the benchmark's held-out splits: IMGPIPE_BENCH_PREVIOUS names its `imgpipe`
executable. On each split it makes its default build and its fine-tuned build, and the benchmark counts the test
photos each got right and those only this default or only that fine-tuned build got right. An issue that asks to
match "today's" fine-tuned build means the release it was filed against; this measures that build on the same
photos in the same run.

An older imgpipe may have no `--groups`, so it gets each split's train and val photos as its whole dataset (hard
links) and splits them itself, keeping this build's share for training and the fewest test photos it accepts. It
never sees the split's test photos, which its own `imgpipe predict` then labels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from ..pipeline.config import BackboneSpec

PREVIOUS_TEST_SHARE = 0.02  # an older build insists on test photos of its own: as few as it accepts
PREVIOUS_BUILDS = ("previous", "previous_fine_tuned")


class PreviousNotFound(ValueError):
    pass


def previous_command(environ=os.environ) -> list[str] | None:
    """The other imgpipe's command, or None when IMGPIPE_BENCH_PREVIOUS is not set."""
    other = environ.get("IMGPIPE_BENCH_PREVIOUS")
    if not other:
        return None
    if shutil.which(other) is None:
        raise PreviousNotFound(
            f"IMGPIPE_BENCH_PREVIOUS={other} is not an executable: name an older release's imgpipe "
            "(its environment's bin/imgpipe), or unset it"
        )
    return [other]


def previous_on_split(
    command: list[str], dataset: Path, splits: list[dict], backbone: BackboneSpec, fine_tune_epochs: int, dest: Path
) -> dict[str, set[str]]:
    """The split's test photos (paths in `dataset`, as in `splits.json`) that the other imgpipe's default and
    fine-tuned builds got wrong, under PREVIOUS_BUILDS."""
    tested = [s for s in splits if s["split"] == "test"]
    seen = [s for s in splits if s["split"] != "test"]
    _link(dataset, seen, dest / "train+val")
    _link(dataset, tested, dest / "test")
    shares = split_shares(sum(s["split"] == "train" for s in seen), len(seen))
    options = ["--arch", backbone.arch, "--alpha", f"{backbone.alpha:g}", "--image-size", str(backbone.image_size)]
    options += ["--weights", str(backbone.weights), "--targets", "tflite", "--allow-failures", "--no-record-history"]
    labels = {s["path"]: s["label"] for s in tested}
    wrong = {}
    for name, extra in zip(PREVIOUS_BUILDS, ([], ["--fine-tune-epochs", str(fine_tune_epochs)])):
        build = ["build", "--dataset", "train+val", "--split", *shares, "--out", name, "--cache-dir", "cache"]
        _run(command, [*build, *options, *extra], dest)
        answers = json.loads(_run(command, ["predict", f"{name}/bundle", "test", "--json", "--top-k", "1"], dest))
        predicted = {Path(a["image"]).relative_to("test").as_posix(): a["top_k"][0]["label"] for a in answers}
        if predicted.keys() != labels.keys():
            raise RuntimeError(f"{command[0]} predict labelled {len(predicted)} of the {len(labels)} test photos")
        wrong[name] = {path for path, label in predicted.items() if label != labels[path]}
        shutil.rmtree(dest / name, ignore_errors=True)  # keeps the benchmark's folder small over the splits
    return wrong


def split_shares(train: int, seen: int) -> list[str]:
    """`--split` for the other imgpipe: this build's share of train among the train and val photos, the rest val
    but PREVIOUS_TEST_SHARE, written to four places so that they add up to 1 as written (imgpipe allows 1e-6)."""
    val = round(max(0.0, 1 - round(train / seen, 4) - PREVIOUS_TEST_SHARE), 4)
    return [f"{1 - val - PREVIOUS_TEST_SHARE:.4f}", f"{val:.4f}", f"{PREVIOUS_TEST_SHARE:.4f}"]


def _link(dataset: Path, photos: list[dict], folder: Path) -> None:
    for photo in photos:
        target = folder / photo["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(dataset / photo["path"], target)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(dataset / photo["path"], target)


def _run(command: list[str], args: list[str], cwd: Path) -> str:
    """stdout of the other imgpipe; exit 3 (an artifact failed a gate, still measured) counts as done."""
    done = subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd)
    if done.returncode not in (0, 3):
        last = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise RuntimeError(f"{command[0]} {args[0]} failed: {last[0]}")
    return done.stdout
