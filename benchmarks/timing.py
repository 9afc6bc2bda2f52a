"""Latency statistics and the timed loop, in plain numpy.

The loop follows TFLite's ``benchmark_model``: untimed warm-up runs first
(allocation, caches, XNNPACK weight packing), then at least ``runs`` timed
runs and at least ``min_seconds`` of them, whichever takes longer (its
``--num_runs`` and ``--min_secs``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

#: Stage names, in the order a sample runs them.
STAGES = ("preprocess", "invoke", "postprocess")


def percentiles(samples_ms) -> dict:
    """mean, std, min, max, p50, p90, p99 of latency samples.

    Args:
        samples_ms: float array-like (N,), N >= 1, in ms.

    Returns:
        dict of floats in ms. Percentiles use numpy's default linear
        interpolation between ranks; std is the population standard deviation.
    """
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
    }


def fps(p50_ms: float) -> float:
    """Images per second (Hz) of one stream at the median latency: 1000 / p50."""
    return 1e3 / p50_ms if p50_ms > 0 else 0.0


def time_stages(stages: Sequence[Callable], runs: int, warmup: int, min_seconds: float = 0.0) -> np.ndarray:
    """Time a pipeline of stages, each run fed the previous one's result.

    Args:
        stages: callables; the first takes no argument, each next one takes
            the previous one's return value.
        runs: least number of timed runs (>= 1).
        warmup: untimed runs before them.
        min_seconds: least timed wall time, s; the loop goes on past ``runs``
            until it is reached.

    Returns:
        float64 array (N, len(stages)) of per-stage times in ms, N >= runs;
        a row's sum is one run's latency.
    """

    def once():
        value = None
        for i, stage in enumerate(stages):
            value = stage() if i == 0 else stage(value)

    for _ in range(warmup):
        once()
    rows = []
    clock = time.perf_counter
    start = clock()
    while len(rows) < runs or clock() - start < min_seconds:
        marks = [clock()]
        value = None
        for i, stage in enumerate(stages):
            value = stage() if i == 0 else stage(value)
            marks.append(clock())
        rows.append(np.diff(marks))
    return np.array(rows, dtype=np.float64) * 1e3


def time_once(fn: Callable) -> tuple[float, object]:
    """(wall time of one call in ms, its result); for load and first inference."""
    t0 = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t0) * 1e3, result
