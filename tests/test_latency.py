"""Latency: all artifacts timed in one interleaved session, and only those whose timing means something here."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from imgpipe.exporters.base import Artifact, Runner
from imgpipe.pipeline.config import LatencyConfig
from imgpipe.pipeline.core.preprocessing import Preprocessing
from imgpipe.pipeline.verify.latency import add_latencies, measure_interleaved
from imgpipe.pipeline.verify.verify import Verification


class Sleeper(Runner):
    def __init__(self, seconds: float, log: list, name: str, latency_unavailable_reason=None):
        self.seconds, self.log, self.name = seconds, log, name
        self.latency_unavailable_reason = latency_unavailable_reason

    def predict(self, images):
        self.log.append(self.name)
        time.sleep(self.seconds)
        return np.zeros((len(images), 2), np.float32)


def test_artifacts_are_timed_in_interleaved_blocks_and_ranked_by_cost():
    log = []
    runners = {"slow": Sleeper(0.004, log, "slow"), "fast": Sleeper(0.001, log, "fast")}
    numbers = measure_interleaved(runners, np.zeros((1, 4, 4, 3), np.uint8), LatencyConfig(warmup=1, runs=12, block=3))
    assert numbers["slow"]["latency_ms_p50"] > numbers["fast"]["latency_ms_p50"] >= 1.0
    assert numbers["fast"]["latency_runs"] == numbers["slow"]["latency_runs"] == 12
    timed = log[2:]  # after one warm-up call each
    switches = sum(a != b for a, b in zip(timed, timed[1:]))
    assert switches >= 4, "blocks of each artifact alternate instead of one artifact timed after the other"
    assert numbers["slow"]["latency_ms_p10"] <= numbers["slow"]["latency_ms_p50"] <= numbers["slow"]["latency_ms_p95"]


def test_an_artifact_whose_time_means_nothing_here_is_left_unmeasured():
    log = []
    artifact = Artifact("coreml", "fp16", Path("x"), ["a", "b"], Preprocessing(96))
    verifications = [
        Verification(artifact, {"latency_ms_p50": None}, "t", runner=Sleeper(0, log, "device", "needs a phone")),
        Verification(artifact, {"latency_ms_p50": None}, "t", runner=Sleeper(0, log, "here")),
    ]
    add_latencies(verifications, np.zeros((1, 4, 4, 3), np.uint8), LatencyConfig(warmup=0, runs=2, block=1))
    assert verifications[0].metrics["latency_ms_p50"] is None and "device" not in log
    assert verifications[1].metrics["latency_ms_p50"] is not None
