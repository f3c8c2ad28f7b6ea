"""Step 2 of the method: iterative top-down vertebra segmentation with a memory channel (pure loop, no I/O).

The loop (Serrador et al. 2024, Fig. 2, and the authors' pseudocode of the inference, plus Lessmann et al.'s minimum
fragment sizes and hard caps):

1. Start at the most superior slice where ``start_prob >= START_THRESHOLD``, at the maximum of ``start_prob``
   in that slice. No such slice -> stop_reason ``"no_spine"``.
2. Crop a patch (``patch_size``) of CT and memory centred on the current point. Parts outside the volume are
   padded: CT with ``CT_PAD_VALUE`` (normalised air, ``nnunet_vertkd.ct_padding``, exactly as in training;
   None = the volume minimum), memory with 0.
3. ``predict_patch`` gives probabilities; ``> FRAGMENT_THRESHOLD`` and not already in memory and inside the
   volume is the candidate mask. Its connected components (26-connectivity, cc3d) are computed; the main
   fragment is ``FRAGMENT_SELECTION = "largest"`` (default) or ``"nearest_centre"``, and every other component
   with a voxel within ``DETACHED_PIECE_MARGIN_VOXELS`` (Euclidean) of the main fragment joins it (detached
   processes of the same vertebra; left out they would be predicted again as the "next" vertebra). Bounding
   boxes are not the test: those of neighbouring vertebrae overlap, and a piece of the next vertebra that joined
   made two vertebrae one instance. A negative margin joins nothing.
   With ``SPLIT_STACKED_VERTEBRAE`` (not in the paper) a fragment of two vertebrae stacked along the spine (two humps
   of cross-section area, a deep valley at the disc) is cut between them (``stacked_split``: along the surfaces
   between the two vertebrae's eroded cores, ``STACKED_CUT = "cores"``, or above the valley, ``"rows"``). After the cut,
   with ``FILL_HOLES`` (not in the paper), the fragment's holes are filled (``fragment_filling``): the small network
   leaves gaps in the cancellous interior of the body, while the reference masks and the training memory are solid.
   (Filling first would fill the disc of a stacked pair joined at front and back, and the cut would miss it.)
4. The point moves to the fragment's centre of mass (rounded to a voxel for cropping; the float centre is
   used for convergence). The last ``N_CONVERGENCE_CENTRES`` (2; the paper: 3) centres are kept; when they all lie within
   ``CONVERGENCE_TOLERANCE_VOXELS`` (2) of each other (max pairwise distance), the vertebra is accepted: its
   fragment is written into the memory and into ``instances`` with the next label (1, 2, ... from the top).
   With ``ACCEPT_COMPLETE_FRAGMENT`` a fragment that is complete in its patch (no voxel within
   ``COMPLETE_FRAGMENT_MARGIN_VOXELS`` of a patch face) is accepted at once: after step 5 the prediction from the
   previous vertebra's centre already shows the whole next vertebra (a 128 mm patch holds it), so one call per
   vertebra can do (docs/loop_calls_accuracy.md measures what it costs).
   When ``MAX_ITERATIONS_PER_VERTEBRA`` is reached without convergence, the last fragment is accepted if
   ``ACCEPT_UNCONVERGED`` (recorded as ``converged=False``), otherwise the loop stops.
   A fragment is accepted only where the spine is: ``start_prob`` must reach ``START_THRESHOLD`` on at least
   ``MIN_SPINE_FRACTION`` of its voxels (and on one at least); otherwise the loop ends (``end_of_spine``). Below the
   last lumbar vertebra the network may still predict a piece of sacrum or pelvis, which the spine model leaves out.
   The first vertebra needs one voxel only: at the top border of a scan the spine signal of a partly visible
   vertebra is weak, and rejecting it would end the scan before it began.
5. After accepting, the loop predicts again **from the same point** (the accepted vertebra's centre) with the
   updated memory: the network now sees the next vertebra below as the topmost one not in memory (paper Fig. 2).
   The point is not moved by a vertebra height: vertebrae with their processes are 42-59 mm tall but only
   24-34 mm apart, so such a jump lands in a disc or the canal below the next vertebra.
6. A *miss* (nothing predicted, or a fragment below the minimum size) does not end the scan at once: the point
   steps ``STEP_ON_MISS_VOXELS`` downward from where the search began (to the maximum of ``start_prob`` in the
   first slice from there, within another ``STEP_ON_MISS_VOXELS``, where it reaches the threshold: the step may end
   in a disc) and the loop predicts again, at most ``MAX_CONSECUTIVE_MISSES`` times in a row.

Stops (``IterativeResult.stop_reason``): ``no_spine``, ``end_of_spine`` (after a miss, no spine at the next step;
or a fragment outside the spine), ``end_of_volume`` (the next step leaves the volume), ``no_fragment`` (nothing
predicted ``MAX_CONSECUTIVE_MISSES + 1`` times in a row), ``fragment_too_small`` (idem, the last miss a fragment below
``MIN_START_FRAGMENT_VOXELS`` for the first vertebra, ``MIN_CONTINUE_FRAGMENT_VOXELS`` afterwards),
``not_converged`` (cap reached with ``ACCEPT_UNCONVERGED=False``), ``max_vertebrae``, ``max_network_calls``.
Every iteration either calls the network (bounded by ``MAX_NETWORK_CALLS``) or ends the loop, every vertebra is
bounded by ``MAX_ITERATIONS_PER_VERTEBRA`` and misses by ``MAX_CONSECUTIVE_MISSES``, so the loop terminates
whatever ``predict_patch`` returns.

Sizes are in voxels of the space the loop runs in (nnU-Net's preprocessed space, 1 mm isotropic for the
plugin's datasets); ``IterativeSettings.scaled_to_spacing`` converts the 1 mm defaults for another spacing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import cc3d
import numpy as np
from scipy.ndimage import distance_transform_edt

from nnunet_vertkd.inference.fragment_filling import fill_fragment
from nnunet_vertkd.inference.stacked_split import CUT_METHODS, upper_of_stacked_pair

PredictPatch = Callable[[np.ndarray], np.ndarray]


@dataclass
class IterativeSettings:
    """Settings of the loop; sizes in voxels of the loop's space (defaults are for 1 mm isotropic)."""
    #: spine probability needed to start / to go on (the authors' value: 0.3)
    START_THRESHOLD: float = 0.3
    #: probability above which a voxel belongs to the predicted vertebra
    FRAGMENT_THRESHOLD: float = 0.5
    #: minimum size of the first vertebra's fragment (Lessmann: 1000 voxels at 1 mm)
    MIN_START_FRAGMENT_VOXELS: int = 1000
    #: minimum size of every later fragment (Lessmann: 500 voxels at 1 mm)
    MIN_CONTINUE_FRAGMENT_VOXELS: int = 500
    #: the last N_CONVERGENCE_CENTRES centres must lie within this distance of each other (pairwise)
    CONVERGENCE_TOLERANCE_VOXELS: float = 2.0
    N_CONVERGENCE_CENTRES: int = 2  # the paper: 3 (docs/loop_calls_accuracy.md: 2 costs no accuracy, a third fewer calls)
    MAX_ITERATIONS_PER_VERTEBRA: int = 20
    MAX_VERTEBRAE: int = 30
    #: hard cap on network calls per scan (default: MAX_VERTEBRAE * MAX_ITERATIONS_PER_VERTEBRA)
    MAX_NETWORK_CALLS: Optional[int] = None
    #: "largest" or "nearest_centre"
    FRAGMENT_SELECTION: str = "largest"
    #: accept the last fragment when a vertebra does not converge within MAX_ITERATIONS_PER_VERTEBRA
    ACCEPT_UNCONVERGED: bool = True
    #: other components with a voxel within this distance of the main fragment join it (detached pieces);
    #: negative: none joins
    DETACHED_PIECE_MARGIN_VOXELS: int = 2
    #: after a miss (no or too small fragment) the point steps this far downward and the loop tries again
    STEP_ON_MISS_VOXELS: int = 32
    #: misses in a row allowed before the loop ends
    MAX_CONSECUTIVE_MISSES: int = 2
    #: CT value outside the volume (None: the volume's minimum, i.e. normalised air)
    CT_PAD_VALUE: Optional[float] = None
    #: accept a fragment at once, without waiting for converged centres, when it is complete in its patch: no
    #: voxel within COMPLETE_FRAGMENT_MARGIN_VOXELS of a patch face (faces outside the volume cannot be touched)
    ACCEPT_COMPLETE_FRAGMENT: bool = False
    COMPLETE_FRAGMENT_MARGIN_VOXELS: int = 4
    #: a fragment below an accepted vertebra is accepted only if start_prob >= START_THRESHOLD on at least this
    #: fraction of its voxels (0: on one voxel, as the first vertebra)
    MIN_SPINE_FRACTION: float = 0.5
    #: a fragment of two vertebrae stacked along the spine is cut between them and the upper one kept
    #: (nnunet_vertkd.inference.stacked_split): STACKED_CUT "cores" = two eroded cores, each at least
    #: STACKED_MIN_PART_FRACTION of both, centres at least STACKED_CORE_DISTANCE_VOXELS apart along the spine, found
    #: within STACKED_MAX_EROSION_VOXELS erosions, cut by a watershed; then (and with "rows" only) a cross-section
    #: valley at most STACKED_VALLEY_DEPTH of the smaller hump, cut horizontally
    SPLIT_STACKED_VERTEBRAE: bool = True
    STACKED_VALLEY_DEPTH: float = 0.65
    STACKED_MIN_PART_FRACTION: float = 0.2
    STACKED_CUT: str = "cores"
    STACKED_CORE_DISTANCE_VOXELS: float = 16.0
    STACKED_MAX_EROSION_VOXELS: int = 8
    #: fill the holes of each fragment (3-D, and 2-D in the sagittal and coronal planes) after a closing of
    #: FILL_CLOSING_ITERATIONS (0: none) with the 6-connected cross (nnunet_vertkd.inference.fragment_filling)
    FILL_HOLES: bool = True
    FILL_CLOSING_ITERATIONS: int = 0

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
            DETACHED_PIECE_MARGIN_VOXELS=(int(round(self.DETACHED_PIECE_MARGIN_VOXELS / mean_spacing))
                                          if self.DETACHED_PIECE_MARGIN_VOXELS >= 0 else -1),
            COMPLETE_FRAGMENT_MARGIN_VOXELS=max(1, int(round(self.COMPLETE_FRAGMENT_MARGIN_VOXELS / mean_spacing))),
            STEP_ON_MISS_VOXELS=max(1, int(round(self.STEP_ON_MISS_VOXELS / mean_spacing))),
            FILL_CLOSING_ITERATIONS=max(0, int(round(self.FILL_CLOSING_ITERATIONS / mean_spacing))),
            STACKED_CORE_DISTANCE_VOXELS=self.STACKED_CORE_DISTANCE_VOXELS / mean_spacing,
            STACKED_MAX_EROSION_VOXELS=max(1, int(round(self.STACKED_MAX_EROSION_VOXELS / mean_spacing))))

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


def _spine_point_in_slice(start_prob: np.ndarray, index: int, threshold: float, superior_axis: int
                          ) -> Optional[Tuple[int, int, int]]:
    """The maximum of ``start_prob`` in slice ``index`` of the superior-inferior axis, or None when the slice is
    outside the volume or ``start_prob`` stays below ``threshold`` there."""
    if not 0 <= index < start_prob.shape[superior_axis]:
        return None
    sl = np.take(start_prob, index, axis=superior_axis)
    flat = int(np.argmax(sl))
    if float(sl.flat[flat]) < threshold:
        return None
    a, b = np.unravel_index(flat, sl.shape)
    other = tuple(ax for ax in range(3) if ax != superior_axis)
    point = [0, 0, 0]
    point[superior_axis] = int(index)
    point[other[0]], point[other[1]] = int(a), int(b)
    return tuple(point)


def _start_point(start_prob: np.ndarray, threshold: float, superior_axis: int,
                 superior_at_low_index: bool) -> Optional[Tuple[int, int, int]]:
    other = tuple(a for a in range(3) if a != superior_axis)
    slice_has = np.any(start_prob >= threshold, axis=other)
    idx = np.flatnonzero(slice_has)
    if idx.size == 0:
        return None
    top = int(idx[0] if superior_at_low_index else idx[-1])
    return _spine_point_in_slice(start_prob, top, threshold, superior_axis)


def _select_fragment(candidate: np.ndarray, selection: str, patch_centre: np.ndarray,
                     margin_voxels: int = 0) -> Optional[np.ndarray]:
    """The main component of ``candidate`` (26-connected) plus every other component with a voxel within
    ``margin_voxels`` (Euclidean) of it; None when ``candidate`` is empty."""
    if selection not in ("largest", "nearest_centre"):
        raise ValueError(f"FRAGMENT_SELECTION must be 'largest' or 'nearest_centre', got {selection!r}")
    labels, n = cc3d.connected_components(candidate.astype(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return None
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"])
    if selection == "largest":
        main = 1 + int(np.argmax(counts[1:]))
    else:
        centroids = np.asarray(stats["centroids"])[1:]
        main = 1 + int(np.argmin(np.linalg.norm(centroids - patch_centre[None], axis=1)))
    if n == 1 or margin_voxels < 0:
        return labels == main
    # a detached piece joins when one of its voxels lies within margin_voxels (Euclidean) of the main fragment;
    # bounding boxes are not enough: those of neighbouring vertebrae overlap (spinous processes reach over the
    # next vertebra), so a piece of the next vertebra would join and two vertebrae become one instance
    box = stats["bounding_boxes"][main]
    lo = [max(sl.start - margin_voxels - 1, 0) for sl in box]
    hi = [min(sl.stop + margin_voxels + 1, size) for sl, size in zip(box, labels.shape)]
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = labels[region]
    near = distance_transform_edt(sub != main) <= margin_voxels
    keep = [lab for lab in np.unique(sub[near]) if lab != 0]
    return np.isin(labels, keep)


def _is_complete(fragment: np.ndarray, margin_voxels: int) -> bool:
    """True when no voxel of ``fragment`` lies within ``margin_voxels`` of a face of its patch."""
    for axis in range(fragment.ndim):
        other = tuple(a for a in range(fragment.ndim) if a != axis)
        idx = np.flatnonzero(np.any(fragment, axis=other))
        if idx.size == 0 or idx[0] < margin_voxels or idx[-1] >= fragment.shape[axis] - margin_voxels:
            return False
    return True


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
    if s.MAX_CONSECUTIVE_MISSES < 0 or s.STEP_ON_MISS_VOXELS < 1:
        raise ValueError("MAX_CONSECUTIVE_MISSES must be >= 0 and STEP_ON_MISS_VOXELS >= 1")
    if s.STACKED_CUT not in CUT_METHODS:
        raise ValueError(f"STACKED_CUT must be one of {CUT_METHODS}, got {s.STACKED_CUT!r}")
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
    misses = 0

    while True:
        if len(vertebrae) >= s.MAX_VERTEBRAE:
            return result("max_vertebrae", start)
        min_size = s.MIN_CONTINUE_FRAGMENT_VOXELS if vertebrae else s.MIN_START_FRAGMENT_VOXELS
        centres: List[np.ndarray] = []
        fragment_vol = None  # (volume slices, fragment mask within them)
        converged = False
        miss = None  # None, "no_fragment" or "fragment_too_small"
        iterations = 0
        search_point = point.copy()
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
            frag = _select_fragment(candidate, s.FRAGMENT_SELECTION, patch_centre, s.DETACHED_PIECE_MARGIN_VOXELS)
            if frag is not None and s.SPLIT_STACKED_VERTEBRAE:
                frag = upper_of_stacked_pair(frag, superior_axis, superior_at_low_index, s.STACKED_VALLEY_DEPTH,
                                             s.STACKED_MIN_PART_FRACTION, s.STACKED_CUT,
                                             s.STACKED_CORE_DISTANCE_VOXELS, s.STACKED_MAX_EROSION_VOXELS)
            if frag is not None and s.FILL_HOLES:
                frag = fill_fragment(frag, superior_axis, s.FILL_CLOSING_ITERATIONS) & inside & (mem_patch < 0.5)
            if frag is None or int(frag.sum()) < min_size:
                miss = "no_fragment" if frag is None else "fragment_too_small"
                break
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
            if s.ACCEPT_COMPLETE_FRAGMENT and _is_complete(frag, s.COMPLETE_FRAGMENT_MARGIN_VOXELS):
                converged = True
                break
        if miss is not None:
            # nothing usable here: step down along the spine and try again (a gap, a small vertebra)
            misses += 1
            if misses > s.MAX_CONSECUTIVE_MISSES:
                return result(miss, start)
            index = int(search_point[superior_axis]) + down * int(s.STEP_ON_MISS_VOXELS)
            if not 0 <= index < shape[superior_axis]:
                return result("end_of_volume", start)
            nxt = None  # the spine at that level, or in the next STEP_ON_MISS_VOXELS slices below (a disc, a gap)
            for i in range(index, index + down * int(s.STEP_ON_MISS_VOXELS), down):
                nxt = _spine_point_in_slice(start_prob, i, s.START_THRESHOLD, superior_axis)
                if nxt is not None:
                    break
            if nxt is None:
                return result("end_of_spine", start)
            point = np.array(nxt, dtype=int)
            continue
        if not converged and not s.ACCEPT_UNCONVERGED:
            return result("not_converged", start)
        # accept the last fragment, if it lies on the spine
        vol_sl, frag_in_vol = fragment_vol
        region_mem = memory[vol_sl]
        write = frag_in_vol & (region_mem < 0.5)
        on_spine = start_prob[vol_sl][write] >= s.START_THRESHOLD
        if not on_spine.any() or (vertebrae and float(on_spine.mean()) < s.MIN_SPINE_FRACTION):
            return result("end_of_spine", start)
        label = len(vertebrae) + 1
        instances[vol_sl][write] = label
        region_mem[write] = 1.0
        coords = np.argwhere(write) + np.array([sl.start for sl in vol_sl])
        info = VertebraInfo(label=label, centre=tuple(float(c) for c in coords.mean(axis=0)),
                            iterations=iterations, converged=converged, n_voxels=int(write.sum()))
        vertebrae.append(info)
        misses = 0
        if on_vertebra is not None:
            on_vertebra(info)
        # the next vertebra is searched from this vertebra's centre, with the updated memory (paper Fig. 2)
        point = np.clip(np.round(np.array(info.centre)).astype(int), 0, shape - 1)
