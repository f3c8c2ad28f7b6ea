"""What a measuring process reads about itself: resident memory now and at its peak, and the spread of timings."""
from __future__ import annotations

import os
import resource
import statistics
import sys
from typing import List

BYTES_PER_MB = 1024 ** 2


def rss_now_mb() -> float:
    """Resident set size of this process now (MB; NaN where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / BYTES_PER_MB
    except (OSError, ValueError):
        return float("nan")


def peak_rss_mb() -> float:
    """Maximum resident set size of this process so far (``getrusage``; MB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / BYTES_PER_MB if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def rss_of_process_kb(pid: int) -> int:
    """Resident set size of another process (``VmRSS`` of /proc/PID/status, KiB; 0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def spread(values: List[float]) -> dict:
    """Median, min, max, quartiles, count and every value (rounded) of a list of timings."""
    v = sorted(values)
    if not v:
        return {}
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2], "n": len(v),
            "values": [round(x, 5) for x in values]}


def memory_fields(device, rss_before_mb: float) -> dict:
    """Peak memory of the measurement: CUDA ``max_memory_allocated``, or on the CPU the peak RSS of the process
    and its increase over ``rss_before_mb``."""
    import torch
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / BYTES_PER_MB,
                "memory_kind": "torch.cuda.max_memory_allocated"}
    peak = peak_rss_mb()
    return {"peak_memory_mb": peak, "memory_increase_mb": peak - rss_before_mb,
            "memory_kind": "max RSS of the process (getrusage)"}
