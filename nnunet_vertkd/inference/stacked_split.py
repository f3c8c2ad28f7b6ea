"""Split a fragment that holds two vertebrae stacked along the spine and keep the upper one.

A small network at 2 mm sometimes predicts the topmost free vertebra *and* the one below it, confidently and
connected (C1 with C2, C6 with C7 …). Accepted as it is, the pair becomes one instance and the lower vertebra is
lost. The cross-section area of such a fragment along the superior-inferior axis has two humps with a deep valley
at the disc between them; a single vertebra has one hump (body and arch) and at most a tail (a spinous process
reaching down). ``upper_of_stacked_pair`` finds the deepest valley that has a substantial part of the fragment on
both sides and, when it is deep enough, keeps only the rows above it: the vertebra the loop is looking for. The
lower one is not lost: it is not in the memory, so the loop finds it next.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def stacked_valley(area: np.ndarray, min_part_fraction: float) -> Optional[tuple]:
    """The deepest valley of a cross-section profile (top first): ``(index, depth)`` with depth = area at the
    valley / the smaller of the largest areas above and below it, over the indices that leave at least
    ``min_part_fraction`` of the total area on each side; None when there is no such index."""
    area = np.asarray(area, dtype=float)
    total = float(area.sum())
    if total <= 0 or area.size < 3:
        return None
    above = np.cumsum(area) - area  # area strictly above each index
    below = total - above - area
    peak_above = np.maximum.accumulate(area)[:-2]  # largest area above index k = 1 .. n-2
    peak_below = np.maximum.accumulate(area[::-1])[::-1][2:]  # largest area below it
    k = np.arange(1, area.size - 1)
    ok = (above[k] >= min_part_fraction * total) & (below[k] >= min_part_fraction * total)
    if not ok.any():
        return None
    depth = area[k] / np.maximum(np.minimum(peak_above, peak_below), 1e-9)
    depth[~ok] = np.inf
    best = int(np.argmin(depth))  # the first of equal depths: the most superior valley
    return int(k[best]), float(depth[best])


def upper_of_stacked_pair(fragment: np.ndarray, superior_axis: int, superior_at_low_index: bool,
                          max_valley_depth: float, min_part_fraction: float) -> np.ndarray:
    """``fragment`` (boolean patch) cut above its deepest valley along ``superior_axis`` when that valley is at most
    ``max_valley_depth`` of the smaller hump; otherwise ``fragment`` unchanged."""
    other = tuple(a for a in range(fragment.ndim) if a != superior_axis)
    area = fragment.sum(axis=other)
    rows = np.flatnonzero(area)
    if rows.size < 3:
        return fragment
    profile = area[rows[0]:rows[-1] + 1]
    if not superior_at_low_index:
        profile = profile[::-1]
    valley = stacked_valley(profile, min_part_fraction)
    if valley is None or valley[1] > max_valley_depth:
        return fragment
    k = valley[0]
    keep = np.zeros(fragment.shape[superior_axis], dtype=bool)
    if superior_at_low_index:
        keep[rows[0]:rows[0] + k] = True
    else:
        keep[rows[-1] - k + 1:rows[-1] + 1] = True
    shape = [1] * fragment.ndim
    shape[superior_axis] = -1
    return fragment & keep.reshape(shape)
