"""The timer of the storage benchmarks (``pg_pages.py``, ``redis_sizes.py``): the median resists the odd slow run
that a mean would carry."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median_ms(call: Callable[[], Any], runs: int) -> float:
    """Median wall-clock time of ``runs`` calls of ``call``, in milliseconds."""
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)
