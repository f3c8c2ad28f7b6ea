"""Split a fragment that holds two vertebrae stacked along the spine and keep the upper one.

A small network at 2 mm sometimes predicts the topmost free vertebra *and* the one below it, confidently and
connected (C1 with C2, C6 with C7 …, and on real CT the partly visible vertebra at the top border of a scan with
the first whole one below it). Accepted as it is, the pair becomes one instance and the lower vertebra is lost or
split between two instances. ``upper_of_stacked_pair`` keeps the upper vertebra, the one the loop is looking for;
the lower one is not lost: it is not in the memory, so the loop finds it next. Two tests, in this order:

1. **Cores** (``method="cores"``, the loop's default). The fragment is eroded (6-connected cross, one voxel at a
   time, at most ``max_erosions`` times) until it falls apart into two *cores* stacked along the spine: the two
   largest components, each at least ``min_part_fraction`` of both, their centres at least
   ``min_core_distance_voxels`` apart along the superior-inferior axis and at least ``MIN_ALONG_TO_ACROSS`` times
   their distance across it (a vertebral body and its own arch lie mostly front to back). Every voxel of the
   fragment then goes to the core it reaches first, climbing down the distance to the fragment's surface (a
   marker watershed, ``skimage.segmentation.watershed``), and the upper core's share is kept: the cut follows the
   disc and the facet joints whatever their tilt. Where the spine is tilted in the patch (kyphosis, lordosis, a
   scan not aligned with the spine), the rows above any horizontal cut also hold the top of the lower vertebra,
   and its articular processes always reach up beside the upper one's.
2. **Valley** (both methods, when the cores test finds no pair). The cross-section area of a stacked pair along
   the superior-inferior axis has two humps with a deep valley at the disc; a single vertebra has one hump (body
   and arch) and at most a tail (a spinous process reaching down). The deepest valley that leaves at least
   ``min_part_fraction`` of the fragment on each side, when it is at most ``max_valley_depth`` of the smaller hump,
   is cut horizontally: the rows above it are kept.
"""
from __future__ import annotations

from typing import Optional

import cc3d
import edt
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

CUT_METHODS = ("cores", "rows")
_CROSS_3D = ndi.generate_binary_structure(3, 1)
#: two cores are stacked when their centres are at least this much further apart along the spine than across it
#: times this factor (a vertebral body and its own arch and spinous process lie mostly front to back)
MIN_ALONG_TO_ACROSS = 0.5


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


def upper_core_region(fragment: np.ndarray, superior_axis: int, superior_at_low_index: bool,
                      min_part_fraction: float, min_core_distance_voxels: float, max_erosions: int
                      ) -> Optional[np.ndarray]:
    """The upper vertebra of a stacked pair cut along the surfaces between two eroded cores (test 1 of the module
    docstring), or None when erosion shows no two cores stacked along ``superior_axis``."""
    fragment = np.asarray(fragment, dtype=bool)
    if not fragment.any():
        return None
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(fragment))
    pair = fragment[box]
    cores = pair
    for _ in range(int(max_erosions)):
        cores = ndi.binary_erosion(cores, _CROSS_3D)
        labels, n = cc3d.connected_components(cores.astype(np.uint8), connectivity=6, return_N=True)
        if n < 2:
            if n == 0:
                return None
            continue
        sizes = np.bincount(labels.ravel())[1:]
        a, b = np.argsort(-sizes)[:2] + 1
        if min(sizes[a - 1], sizes[b - 1]) < min_part_fraction * (sizes[a - 1] + sizes[b - 1]):
            continue
        centre_a, centre_b = (np.argwhere(labels == lab).mean(axis=0) for lab in (a, b))
        d = np.abs(centre_b - centre_a)
        along = float(d[superior_axis])
        across = float(np.sqrt(np.sum(np.delete(d, superior_axis) ** 2)))
        if along < min_core_distance_voxels or along < MIN_ALONG_TO_ACROSS * across:
            continue
        upper_is_a = (centre_a[superior_axis] < centre_b[superior_axis]) == bool(superior_at_low_index)
        markers = np.zeros(pair.shape, dtype=np.int32)
        markers[labels == (a if upper_is_a else b)] = 1
        markers[labels == (b if upper_is_a else a)] = 2
        depth = edt.edt(np.ascontiguousarray(pair, dtype=np.uint8), black_border=False, parallel=1)
        basins = watershed(-depth, markers, mask=pair)
        out = np.zeros_like(fragment)
        out[box] = basins == 1
        return out
    return None


def upper_of_stacked_pair(fragment: np.ndarray, superior_axis: int, superior_at_low_index: bool,
                          max_valley_depth: float, min_part_fraction: float, method: str = "rows",
                          min_core_distance_voxels: Optional[float] = None, max_erosions: Optional[int] = None
                          ) -> np.ndarray:
    """The upper vertebra of ``fragment`` (boolean patch) when it holds two stacked along ``superior_axis``
    (``method="cores"``: the cores test, then the valley; ``"rows"``: the valley only; module docstring);
    otherwise ``fragment`` unchanged. The core distance and erosions (needed by "cores") are in voxels of the
    patch."""
    if method not in CUT_METHODS:
        raise ValueError(f"the stacked-vertebra cut must be one of {CUT_METHODS}, got {method!r}")
    if method == "cores" and (min_core_distance_voxels is None or max_erosions is None):
        raise ValueError("the cores test needs min_core_distance_voxels and max_erosions")
    other = tuple(a for a in range(fragment.ndim) if a != superior_axis)
    area = fragment.sum(axis=other)
    rows = np.flatnonzero(area)
    if rows.size < 3:
        return fragment
    if method == "cores":
        upper = upper_core_region(fragment, superior_axis, superior_at_low_index, min_part_fraction,
                                  min_core_distance_voxels, max_erosions)
        if upper is not None:
            return upper
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
