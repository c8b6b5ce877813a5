#!/usr/bin/env bash
# Make (or reuse) a virtual environment with MediaPipe Tasks for Python, the client Android apps run a bundle's
# model.tflite with, so the tests can check that it computes what imgpipe's verification measured.
#   make_env.sh VENV_DIR        (PYTHON=python3.11 by default; about 50 s and 1 GB the first time)
# mediapipe 0.10.21 needs numpy<2 and protobuf<5, so it cannot share the project's venv (numpy 2).
# The other pins are the versions pip resolves today; without them pip must backtrack past releases that
# need numpy>=2 (opencv-contrib-python>=4.12, jax>=0.7.2).
set -uo pipefail

venv=${1:?usage: make_env.sh VENV_DIR}
python=${PYTHON:-python3.11}
pins=(mediapipe==0.10.21 numpy==1.26.4 protobuf==4.25.9 opencv-contrib-python==4.11.0.86
      jax==0.7.1 jaxlib==0.7.1)
check='import mediapipe; from mediapipe.tasks.python.vision import ImageClassifier
assert mediapipe.__version__ == "0.10.21", mediapipe.__version__'

"$venv/bin/python" -c "$check" 2>/dev/null && exit 0

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "$python" -m venv "$venv" && "$venv/bin/python" -m pip install -q "${pins[@]}"; } >"$log" 2>&1; then
    echo "make_env.sh: installing MediaPipe into $venv failed: $(grep -m1 -E 'ERROR|Error' "$log" || tail -n1 "$log")" >&2
    exit 1
fi
if ! "$venv/bin/python" -c "$check" >"$log" 2>&1; then
    echo "make_env.sh: MediaPipe in $venv does not import: $(tail -n1 "$log")" >&2
    exit 1
fi
