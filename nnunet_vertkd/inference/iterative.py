"""Step 2 of the method: iterative top-down vertebra segmentation with a memory channel (pure loop, no I/O).

The loop (METHOD.md "Inference", plus Lessmann et al.'s minimum fragment sizes and hard caps):

1. Start at the most superior slice where ``start_prob >= START_THRESHOLD``, at the maximum of ``start_prob``
   in that slice. No such slice -> stop_reason ``"no_spine"``.
2. Crop a patch (``patch_size``) of CT and memory centred on the current point. Parts outside the volume are
   padded: CT with ``CT_PAD_VALUE`` (default: the volume minimum, i.e. normalised air), memory with 0.
3. ``predict_patch`` gives probabilities; ``> FRAGMENT_THRESHOLD`` and not already in memory and inside the
   volume is the candidate mask. Its connected components (26-connectivity, cc3d) are computed and one
   fragment is kept: ``FRAGMENT_SELECTION = "largest"`` (default: the largest component; spurious blobs are
   small) or ``"nearest_centre"`` (the component whose centre of mass is nearest the patch centre).
4. The point moves to the fragment's centre of mass (rounded to a voxel for cropping; the float centre is
   used for convergence). The last ``N_CONVERGENCE_CENTRES`` (3) centres are kept; when they all lie within
   ``CONVERGENCE_TOLERANCE_VOXELS`` (2) of each other (max pairwise distance), the vertebra is accepted: its
   fragment is written into the memory and into ``instances`` with the next label (1, 2, ... from the top).
   When ``MAX_ITERATIONS_PER_VERTEBRA`` is reached without convergence, the last fragment is accepted if
   ``ACCEPT_UNCONVERGED`` (recorded as ``converged=False``), otherwise the loop stops.
5. After accepting, the point moves downward from the accepted vertebra's centre by
   ``STEP_AFTER_ACCEPT_EXTENT_FRACTION`` x its superior-inferior extent (≈ the next vertebra's centre). The
   loop goes on while ``start_prob`` (its maximum within ``START_CHECK_RADIUS_VOXELS`` of the point) is
   ``>= START_THRESHOLD`` there and the point is inside the volume.

Stops (``IterativeResult.stop_reason``): ``no_spine``, ``end_of_spine`` (start_prob below threshold at the
next point), ``end_of_volume`` (next point outside the volume), ``no_fragment`` (nothing predicted),
``fragment_too_small`` (below ``MIN_START_FRAGMENT_VOXELS`` for the first vertebra, ``MIN_CONTINUE_FRAGMENT_VOXELS``
afterwards), ``not_converged`` (cap reached with ``ACCEPT_UNCONVERGED=False``), ``max_vertebrae``,
``max_network_calls``. Every iteration either calls the network (bounded by ``MAX_NETWORK_CALLS``) or ends the
loop, and every vertebra is bounded by ``MAX_ITERATIONS_PER_VERTEBRA``, so the loop terminates whatever
``predict_patch`` returns.

Sizes are in voxels of the space the loop runs in (nnU-Net's preprocessed space, 1 mm isotropic for the
plugin's datasets); ``IterativeSettings.scaled_to_spacing`` converts the 1 mm defaults for another spacing.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import cc3d
import numpy as np

PredictPatch = Callable[[np.ndarray], np.ndarray]


@dataclass
class IterativeSettings:
    """Settings of the loop; sizes in voxels of the loop's space (defaults are for 1 mm isotropic)."""
    #: spine probability needed to start / to go on (METHOD.md: 0.3)
    START_THRESHOLD: float = 0.3
    #: probability above which a voxel belongs to the predicted vertebra
    FRAGMENT_THRESHOLD: float = 0.5
    #: minimum size of the first vertebra's fragment (Lessmann: 1000 voxels at 1 mm)
    MIN_START_FRAGMENT_VOXELS: int = 1000
    #: minimum size of every later fragment (Lessmann: 500 voxels at 1 mm)
    MIN_CONTINUE_FRAGMENT_VOXELS: int = 500
    #: the last N_CONVERGENCE_CENTRES centres must lie within this distance of each other (pairwise)
    CONVERGENCE_TOLERANCE_VOXELS: float = 2.0
    N_CONVERGENCE_CENTRES: int = 3
    MAX_ITERATIONS_PER_VERTEBRA: int = 20
    MAX_VERTEBRAE: int = 30
    #: hard cap on network calls per scan (default: MAX_VERTEBRAE * MAX_ITERATIONS_PER_VERTEBRA)
    MAX_NETWORK_CALLS: Optional[int] = None
    #: "largest" or "nearest_centre"
    FRAGMENT_SELECTION: str = "largest"
    #: accept the last fragment when a vertebra does not converge within MAX_ITERATIONS_PER_VERTEBRA
    ACCEPT_UNCONVERGED: bool = True
    #: after accepting, move this fraction of the vertebra's superior-inferior extent below its centre
    STEP_AFTER_ACCEPT_EXTENT_FRACTION: float = 1.0
    #: start_prob is checked as its maximum in a cube of this half-width around the point
    START_CHECK_RADIUS_VOXELS: int = 3
    #: CT value outside the volume (None: the volume's minimum, i.e. normalised air)
    CT_PAD_VALUE: Optional[float] = None

    def max_network_calls(self) -> int:
        if self.MAX_NETWORK_CALLS is not None:
            return int(self.MAX_NETWORK_CALLS)
        return int(self.MAX_VERTEBRAE) * int(self.MAX_ITERATIONS_PER_VERTEBRA)

    def scaled_to_spacing(self, spacing_mm: Sequence[float]) -> "IterativeSettings":
        """Copy with voxel sizes/distances converted from the 1 mm defaults to voxels of ``spacing_mm``."""
        voxel_volume = float(np.prod(spacing_mm))
        mean_spacing = float(np.mean(spacing_mm))
        return dataclasses.replace(
            self,
            MIN_START_FRAGMENT_VOXELS=max(1, int(round(self.MIN_START_FRAGMENT_VOXELS / voxel_volume))),
            MIN_CONTINUE_FRAGMENT_VOXELS=max(1, int(round(self.MIN_CONTINUE_FRAGMENT_VOXELS / voxel_volume))),
            CONVERGENCE_TOLERANCE_VOXELS=self.CONVERGENCE_TOLERANCE_VOXELS / mean_spacing,
            START_CHECK_RADIUS_VOXELS=max(0, int(round(self.START_CHECK_RADIUS_VOXELS / mean_spacing))))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class VertebraInfo:
    label: int
    centre: Tuple[float, float, float]  # centre of mass, voxel coordinates of the loop's (X, Y, Z) array
    iterations: int
    converged: bool
    n_voxels: int

    def to_dict(self) -> dict:
        return {"label": self.label, "centre": [round(float(c), 3) for c in self.centre],
                "iterations": self.iterations, "converged": self.converged, "n_voxels": self.n_voxels}


@dataclass
class IterativeResult:
    instances: np.ndarray  # int16, same shape as ct, 1..N top-down
    n_network_calls: int
    vertebra_centres: List[Tuple[float, float, float]]
    iterations_per_vertebra: List[int]
    stop_reason: str
    start_point: Optional[Tuple[int, int, int]] = None
    vertebrae: List[VertebraInfo] = field(default_factory=list)

    @property
    def n_vertebrae(self) -> int:
        return len(self.vertebrae)


def crop_patch(volume: np.ndarray, centre: Sequence[int], patch_size: Sequence[int], pad_value: float
               ) -> Tuple[np.ndarray, Tuple[slice, ...], Tuple[slice, ...]]:
    """Patch of ``patch_size`` centred on ``centre`` (patch index ps//2 is the centre), padded outside.

    Returns (patch, volume_slices, patch_slices): ``patch[patch_slices] == volume[volume_slices]``.
    """
    vol_sl, patch_sl = [], []
    for c, p, s in zip(centre, patch_size, volume.shape):
        lo = int(c) - p // 2
        hi = lo + p
        vlo, vhi = max(lo, 0), min(hi, s)
        if vhi <= vlo:  # no overlap at all
            vlo = vhi = 0
        vol_sl.append(slice(vlo, vhi))
        patch_sl.append(slice(vlo - lo, vlo - lo + (vhi - vlo)))
    patch = np.full(tuple(patch_size), pad_value, dtype=volume.dtype)
    patch[tuple(patch_sl)] = volume[tuple(vol_sl)]
    return patch, tuple(vol_sl), tuple(patch_sl)


def _max_pairwise_distance(points: Sequence[np.ndarray]) -> float:
    d = 0.0
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            d = max(d, float(np.linalg.norm(points[i] - points[j])))
    return d


def _start_point(start_prob: np.ndarray, threshold: float, superior_axis: int,
                 superior_at_low_index: bool) -> Optional[Tuple[int, int, int]]:
    other = tuple(a for a in range(3) if a != superior_axis)
    slice_has = np.any(start_prob >= threshold, axis=other)
    idx = np.flatnonzero(slice_has)
    if idx.size == 0:
        return None
    top = int(idx[0] if superior_at_low_index else idx[-1])
    sl = np.take(start_prob, top, axis=superior_axis)
    a, b = np.unravel_index(int(np.argmax(sl)), sl.shape)
    point = [0, 0, 0]
    point[superior_axis] = top
    point[other[0]], point[other[1]] = int(a), int(b)
    return tuple(point)


def _prob_near(start_prob: np.ndarray, point: Sequence[int], radius: int) -> float:
    sl = tuple(slice(max(int(p) - radius, 0), min(int(p) + radius + 1, s)) for p, s in zip(point, start_prob.shape))
    region = start_prob[sl]
    return float(region.max()) if region.size else 0.0


def _select_fragment(candidate: np.ndarray, selection: str, patch_centre: np.ndarray) -> Optional[np.ndarray]:
    labels, n = cc3d.connected_components(candidate.astype(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return None
    if selection == "largest":
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        return labels == int(np.argmax(counts))
    if selection == "nearest_centre":
        best, best_d = None, math.inf
        for lab in range(1, n + 1):
            com = np.argwhere(labels == lab).mean(axis=0)
            d = float(np.linalg.norm(com - patch_centre))
            if d < best_d:
                best, best_d = lab, d
        return labels == best
    raise ValueError(f"FRAGMENT_SELECTION must be 'largest' or 'nearest_centre', got {selection!r}")


def segment_vertebrae_iteratively(predict_patch: PredictPatch, ct: np.ndarray, start_prob: np.ndarray,
                                  superior_axis: int, superior_at_low_index: bool, patch_size: Sequence[int],
                                  settings: Optional[IterativeSettings] = None,
                                  on_vertebra: Optional[Callable[[VertebraInfo], None]] = None
                                  ) -> IterativeResult:
    """Segment vertebrae one at a time from the top (see the module docstring for the exact loop).

    predict_patch: callable((2, *patch_size) float32 [CT, memory]) -> (*patch_size) probabilities.
    ct: (X, Y, Z) normalised CT; start_prob: spine probability or binary mask, same shape.
    superior_axis / superior_at_low_index: from nnunet_vertkd.orientation.superior_axis.
    on_vertebra: optional callback after each accepted vertebra (progress bars).
    """
    s = settings or IterativeSettings()
    ct = np.asarray(ct, dtype=np.float32)
    start_prob = np.nan_to_num(np.asarray(start_prob, dtype=np.float32), nan=0.0)
    if ct.ndim != 3 or start_prob.shape != ct.shape:
        raise ValueError(f"ct and start_prob must be 3D arrays of the same shape, got {ct.shape} and {start_prob.shape}")
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) != 3 or min(patch_size) < 1:
        raise ValueError(f"patch_size must be 3 positive ints, got {patch_size}")
    if superior_axis not in (0, 1, 2):
        raise ValueError(f"superior_axis must be 0, 1 or 2, got {superior_axis}")
    if s.MAX_ITERATIONS_PER_VERTEBRA < 1 or s.N_CONVERGENCE_CENTRES < 1:
        raise ValueError("MAX_ITERATIONS_PER_VERTEBRA and N_CONVERGENCE_CENTRES must be >= 1")
    pad_value = float(np.min(ct)) if s.CT_PAD_VALUE is None else float(s.CT_PAD_VALUE)
    down = 1 if superior_at_low_index else -1  # index step towards inferior
    patch_centre = np.array([p // 2 for p in patch_size], dtype=float)
    shape = np.array(ct.shape)
    max_calls = s.max_network_calls()

    memory = np.zeros(ct.shape, dtype=np.float32)
    instances = np.zeros(ct.shape, dtype=np.int16)
    vertebrae: List[VertebraInfo] = []
    n_calls = 0

    def result(reason: str, start=None) -> IterativeResult:
        return IterativeResult(instances=instances, n_network_calls=n_calls,
                               vertebra_centres=[v.centre for v in vertebrae],
                               iterations_per_vertebra=[v.iterations for v in vertebrae],
                               stop_reason=reason, start_point=start, vertebrae=vertebrae)

    start = _start_point(start_prob, s.START_THRESHOLD, superior_axis, superior_at_low_index)
    if start is None:
        return result("no_spine")
    point = np.array(start, dtype=int)

    while True:
        if len(vertebrae) >= s.MAX_VERTEBRAE:
            return result("max_vertebrae", start)
        if vertebrae:  # the first point is on the spine by construction
            if np.any(point < 0) or np.any(point >= shape):
                return result("end_of_volume", start)
            if _prob_near(start_prob, point, s.START_CHECK_RADIUS_VOXELS) < s.START_THRESHOLD:
                return result("end_of_spine", start)
        min_size = s.MIN_CONTINUE_FRAGMENT_VOXELS if vertebrae else s.MIN_START_FRAGMENT_VOXELS
        centres: List[np.ndarray] = []
        fragment_vol = None  # (volume slices, fragment mask within them)
        converged = False
        iterations = 0
        while iterations < s.MAX_ITERATIONS_PER_VERTEBRA:
            if n_calls >= max_calls:
                return result("max_network_calls", start)
            ct_patch, vol_sl, patch_sl = crop_patch(ct, point, patch_size, pad_value)
            mem_patch, _, _ = crop_patch(memory, point, patch_size, 0.0)
            prob = predict_patch(np.stack([ct_patch, mem_patch]).astype(np.float32, copy=False))
            n_calls += 1
            iterations += 1
            prob = np.asarray(prob, dtype=np.float32)
            if prob.shape != patch_size:
                raise ValueError(f"predict_patch returned shape {prob.shape}, expected {patch_size}")
            inside = np.zeros(patch_size, dtype=bool)
            inside[patch_sl] = True
            candidate = (np.nan_to_num(prob, nan=0.0) > s.FRAGMENT_THRESHOLD) & (mem_patch < 0.5) & inside
            frag = _select_fragment(candidate, s.FRAGMENT_SELECTION, patch_centre)
            if frag is None:
                return result("no_fragment", start)
            if int(frag.sum()) < min_size:
                return result("fragment_too_small", start)
            offset = np.array([sl.start for sl in vol_sl]) - np.array([sl.start for sl in patch_sl])
            centre = np.argwhere(frag).mean(axis=0) + offset  # volume coordinates
            fragment_vol = (vol_sl, frag[patch_sl])
            centres.append(centre)
            centres = centres[-s.N_CONVERGENCE_CENTRES:]
            point = np.clip(np.round(centre).astype(int), 0, shape - 1)
            if len(centres) >= s.N_CONVERGENCE_CENTRES and \
                    _max_pairwise_distance(centres) <= s.CONVERGENCE_TOLERANCE_VOXELS:
                converged = True
                break
        if not converged and not s.ACCEPT_UNCONVERGED:
            return result("not_converged", start)
        # accept the last fragment
        vol_sl, frag_in_vol = fragment_vol
        label = len(vertebrae) + 1
        region_inst = instances[vol_sl]
        region_mem = memory[vol_sl]
        write = frag_in_vol & (region_mem < 0.5)
        region_inst[write] = label
        region_mem[write] = 1.0
        coords = np.argwhere(write) + np.array([sl.start for sl in vol_sl])
        info = VertebraInfo(label=label, centre=tuple(float(c) for c in coords.mean(axis=0)),
                            iterations=iterations, converged=converged, n_voxels=int(write.sum()))
        vertebrae.append(info)
        if on_vertebra is not None:
            on_vertebra(info)
        # next point: below the accepted vertebra by a fraction of its superior-inferior extent
        si = coords[:, superior_axis]
        extent = int(si.max() - si.min() + 1)
        nxt = np.round(np.array(info.centre)).astype(int)
        nxt[superior_axis] += down * max(1, int(round(extent * s.STEP_AFTER_ACCEPT_EXTENT_FRACTION)))
        point = nxt
