"""What the benchmarks share: the best wall time of a few runs after a warm-up."""

from __future__ import annotations

import time


def best_of(run, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``run()`` in seconds, after one warm-up run (kernels
    chosen, memory allocated)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best
