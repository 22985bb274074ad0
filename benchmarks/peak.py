"""This machine's measured matrix-multiply peak, the yardstick for the stages' FLOP rates."""

from __future__ import annotations

import time

import numpy as np


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best-of `repeats` GFLOP/s of an (n x n) @ (n x n) float32 matmul through numpy's BLAS,
    with all the threads it uses by default. Best, not median: a peak is what the hardware can do."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
