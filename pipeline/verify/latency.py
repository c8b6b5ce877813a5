"""Single-image latency: what one camera frame costs, preprocessing included, on the build machine's CPU.

Every artifact that runs here is timed in the same session, in rounds of short blocks whose order is shuffled
each round, so a burst of load from another process lands on all of them alike instead of on whichever artifact
happened to be timed then (on a shared 2-core machine one artifact's p50 moved 2.5x between two runs when timed
alone). Each block's first call is dropped (cache warm-up after the previous artifact). Wall-clock p50/p95 are what
an app waits; per-thread CPU time is reported beside them because it barely moves with other processes' load.
This is the build machine's CPU, not a phone: the report says so, with the CPU's instruction set.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np

from ...exporters.base import Runner
from ..config import LatencyConfig
from .verify import Verification


def add_latencies(verifications: list[Verification], one_image: np.ndarray, config: LatencyConfig) -> None:
    """Measure every verification whose runner can be timed here, together, and add the numbers to its metrics."""
    timed = {
        i: v.runner
        for i, v in enumerate(verifications)
        if v.runner is not None and v.runner.can_predict and v.runner.latency_unavailable_reason is None
    }
    for i, numbers in measure_interleaved(timed, one_image, config).items():
        verifications[i].metrics.update(numbers)


def measure_interleaved(runners: dict, one_image: np.ndarray, config: LatencyConfig) -> dict:
    wall = {key: [] for key in runners}
    cpu = {key: [] for key in runners}
    for runner in runners.values():
        for _ in range(config.warmup):
            runner.predict(one_image)
    order = list(runners)
    shuffle = random.Random(0).shuffle
    block = max(1, min(config.block, config.runs))
    for _ in range(-(-config.runs // block)):
        shuffle(order)
        for key in order:
            _time_block(runners[key], one_image, block, wall[key], cpu[key])
    return {key: _summary(wall[key], cpu[key], config) for key in runners}


def _time_block(runner: Runner, image: np.ndarray, runs: int, wall: list[float], cpu: list[float]) -> None:
    runner.predict(image)  # dropped: the caches still hold the previous artifact
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        runner.predict(image)
        wall.append((time.perf_counter() - start) * 1000.0)
        cpu.append((time.thread_time() - start_cpu) * 1000.0)


def _summary(wall: list[float], cpu: list[float], config: LatencyConfig) -> dict:
    wall = sorted(wall)
    return {
        "latency_ms_p50": statistics.median(wall),
        "latency_ms_p95": wall[min(len(wall) - 1, round(0.95 * (len(wall) - 1)))],
        "latency_ms_p10": wall[round(0.10 * (len(wall) - 1))],
        "latency_cpu_ms_p50": statistics.median(cpu),
        "latency_threads": config.threads,
        "latency_runs": len(wall),
    }
