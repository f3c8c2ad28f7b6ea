"""Per-vertebra training samples: which (case, target vertebra) pairs exist, how they are drawn, and where the patch
goes. Pure functions plus small parameter-drawing classes (no torch, no I/O).

Conventions
    * Labels of the preprocessed segmentation are the consecutive cranio-caudal labels of the vertebra dataset
      (1 = C1 ... 26 = L6, ``nnunet_vertkd.labels``); 0 is background and -1 marks voxels outside nnU-Net's
      crop. For target vertebra ``t``: memory = (seg > 0) & (seg < t) (every vertebra cranial to t),
      target = seg == t.
    * Coordinates are voxel indices of nnU-Net's preprocessed array (spatial axes only, after transpose_forward).
      The superior-inferior axis there comes from ``nnunet_vertkd.orientation.superior_axis``.
    * Patch geometry follows batchgeneratorsv2's ``SpatialTransform``: output voxel p (centred coordinates,
      p_i in [-(P_i - 1) / 2, (P_i - 1) / 2]) is read from input voxel x = A @ p + (c - 0.5), where A is the
      3x3 rotation/zoom matrix (A = R @ diag(scales); scale > 1 shows a larger region, i.e. zooms out) and c is
      "center_location_in_pixels" (voxel-edge convention: c = x_centre + 0.5).

Region balancing
    With ``balance=True`` every (case, t) pair of a region gets probability 1 / (n_regions * n_pairs_in_region),
    so cervical, thoracic and lumbar targets are equally likely (each 1/3 when all three occur; regions absent
    from the training cases are left out). This is the paper's "oversample each level by max_count / count"
    in expectation. Without balancing every pair is equally likely (one sample per vertebra per epoch, in
    expectation). Empirical frequencies over n draws deviate from the expectation by about
    sqrt(p (1 - p) / n) (0.0047 for p = 1/3, n = 10000); the tests allow 0.02.

Memory cleaning
    With probability ``memory_cleaning_probability`` (paper: about 1/3) a sample gets an empty memory and the
    patch is placed so that the target's most superior voxel lies exactly in the top row of the (rotated,
    zoomed) output patch: no vertebra cranial to it is in view, as for the first vertebra of a scan.
    Otherwise the patch centre is the target's centroid plus a uniform random translation of at most
    ``max_translation_voxels`` per axis (paper: +-64 voxels for 128^3 patches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_vertkd.labels import REGIONS, region_of_nnunet_label

#: highest consecutive vertebra label (L6)
MAX_VERTEBRA_LABEL = 26
#: probability that a training sample gets an empty memory (paper: about 1/3)
MEMORY_CLEANING_PROBABILITY = 1.0 / 3.0


# ----------------------------------------------------------------------------------------------------------------
# labels, memory and target
# ----------------------------------------------------------------------------------------------------------------
def vertebra_labels_in_seg(seg: np.ndarray) -> List[int]:
    """Sorted vertebra labels (1..26) present in a segmentation array (any shape; -1 and 0 ignored)."""
    values = np.unique(np.asarray(seg))
    return [int(v) for v in values if 1 <= v <= MAX_VERTEBRA_LABEL]


def vertebra_labels_from_properties(properties: Mapping) -> List[int]:
    """Sorted vertebra labels present in a preprocessed case, read from nnU-Net's ``class_locations`` (stored in
    the case's .pkl by preprocessing, so the segmentation need not be decompressed)."""
    locations = properties.get("class_locations") or {}
    return sorted(int(k) for k, v in locations.items()
                  if isinstance(k, (int, np.integer)) and 1 <= int(k) <= MAX_VERTEBRA_LABEL and len(v) > 0)


def memory_and_target(seg: np.ndarray, target_label: int) -> Tuple[np.ndarray, np.ndarray]:
    """(memory, target) boolean arrays of the shape of ``seg``: memory = every vertebra cranial to the target
    ((seg > 0) & (seg < t)), target = (seg == t). Voxels outside the crop (-1) are in neither."""
    seg = np.asarray(seg)
    t = int(target_label)
    return (seg > 0) & (seg < t), seg == t


def target_voxel_coordinates(properties: Mapping, target_label: int, seg: Optional[np.ndarray] = None
                             ) -> np.ndarray:
    """(N, 3) float voxel coordinates of the target vertebra: nnU-Net's ``class_locations`` (a sample of up to
    10000 voxels per class, all voxels of small ones), or the exact voxels of ``seg`` (C, X, Y, Z) / (X, Y, Z)
    when the properties have none."""
    locations = (properties.get("class_locations") or {}).get(int(target_label))
    if locations is not None and len(locations) > 0:
        loc = np.asarray(locations)
        return loc[:, -3:].astype(np.float64)
    if seg is None:
        raise ValueError(f"no voxel of label {target_label} in class_locations and no segmentation given")
    s = np.asarray(seg)
    if s.ndim == 4:
        s = s[0]
    coords = np.argwhere(s == int(target_label))
    if len(coords) == 0:
        raise ValueError(f"label {target_label} does not occur in the segmentation")
    return coords.astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# (case, target) pairs and region balancing
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VertebraSample:
    case: str
    target: int

    @property
    def region(self) -> str:
        return region_of_nnunet_label(self.target)


def all_samples(labels_per_case: Mapping[str, Sequence[int]]) -> List[VertebraSample]:
    """Every (case, target) pair, cases in the given order and targets cranio-caudal."""
    return [VertebraSample(case, int(t)) for case, labels in labels_per_case.items() for t in sorted(labels)]


def sample_probabilities(samples: Sequence[VertebraSample], balance_regions: bool = True) -> np.ndarray:
    """Probability of each pair (see the module docstring)."""
    n = len(samples)
    if n == 0:
        raise ValueError("no vertebra samples: the training cases contain no vertebra label (1..26)")
    if not balance_regions:
        return np.full(n, 1.0 / n)
    regions = [s.region for s in samples]
    counts = {r: regions.count(r) for r in REGIONS if r in regions}
    p = np.array([1.0 / (len(counts) * counts[r]) for r in regions])
    return p / p.sum()


def expected_region_frequencies(samples: Sequence[VertebraSample], balance_regions: bool = True
                                ) -> Dict[str, float]:
    p = sample_probabilities(samples, balance_regions)
    out = {r: 0.0 for r in REGIONS}
    for s, q in zip(samples, p):
        out[s.region] += float(q)
    return out


class RegionBalancedSampler:
    """Draws (case, target) pairs, region balanced or uniform. ``draw(rng)`` returns a ``VertebraSample``."""

    def __init__(self, labels_per_case: Mapping[str, Sequence[int]], balance_regions: bool = True):
        self.samples = all_samples(labels_per_case)
        self.balance_regions = bool(balance_regions)
        self.probabilities = sample_probabilities(self.samples, self.balance_regions)
        self._cdf = np.cumsum(self.probabilities)

    def __len__(self) -> int:
        return len(self.samples)

    def draw(self, rng: np.random.Generator) -> VertebraSample:
        i = int(np.searchsorted(self._cdf, rng.random() * self._cdf[-1], side="right"))
        return self.samples[min(i, len(self.samples) - 1)]

    def region_frequencies(self) -> Dict[str, float]:
        return expected_region_frequencies(self.samples, self.balance_regions)


# ----------------------------------------------------------------------------------------------------------------
# patch placement
# ----------------------------------------------------------------------------------------------------------------
def patch_half_extent(affine: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """Per input axis, the largest |x - centre| (voxels) that the output patch reads, for the matrix A."""
    half = (np.asarray(patch_size, dtype=np.float64) - 1) / 2
    return np.abs(np.asarray(affine, dtype=np.float64)) @ half


def centre_with_target_at_top(target_coords: np.ndarray, affine: np.ndarray, patch_size: Sequence[int],
                              other_centre: Sequence[float], superior_axis: int, superior_at_low_index: bool
                              ) -> np.ndarray:
    """The patch centre c (voxel-edge convention, see module docstring) whose components on the non-SI axes are
    ``other_centre`` and whose SI component puts the target's most superior voxel exactly in the top row of the
    output patch (for the matrix ``affine``)."""
    a = int(superior_axis)
    b = np.linalg.inv(np.asarray(affine, dtype=np.float64))[a]  # p_a = b . (x - c + 0.5)
    if abs(b[a]) < 1e-6:
        raise ValueError("rotation too large: the superior-inferior axis is lost")
    proj = target_coords @ b
    half = (float(patch_size[a]) - 1) / 2
    # p_a of the most superior target voxel must be the top row: -half (superior at low index) or +half
    extreme = proj.min() if superior_at_low_index else proj.max()
    top_row = -half if superior_at_low_index else half
    c = np.asarray(other_centre, dtype=np.float64).copy()
    rest = sum(b[j] * c[j] for j in range(len(c)) if j != a)
    # top_row = extreme - b.c + 0.5 * sum(b)  ->  b_a c_a = extreme + 0.5 sum(b) - top_row - rest
    c[a] = (extreme + 0.5 * b.sum() - top_row - rest) / b[a]
    return c


def align_to_voxel_grid(centre: Sequence[float], patch_size: Sequence[int]) -> np.ndarray:
    """Nearest centre c for which the unrotated patch reads whole voxels (c - P/2 integer)."""
    half = np.asarray(patch_size, dtype=np.float64) / 2
    return np.round(np.asarray(centre, dtype=np.float64) - half) + half


@dataclass
class PlacementParameters:
    """Drawn placement of one sample: patch centre (voxel-edge convention) and whether the memory is cleaned."""
    centre: np.ndarray
    clean_memory: bool


class VertebraPatchPlacement:
    """Draws where the patch of one (case, target) sample goes (``get_parameters``); like batchgeneratorsv2's
    transforms, drawing is separate from applying (``transforms.VertebraSpatialAugmentation`` crops/resamples).
    """

    def __init__(self, patch_size: Sequence[int], superior_axis: int, superior_at_low_index: bool,
                 memory_cleaning_probability: float = MEMORY_CLEANING_PROBABILITY,
                 max_translation_voxels: Sequence[float] = (64, 64, 64)):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.superior_axis = int(superior_axis)
        self.superior_at_low_index = bool(superior_at_low_index)
        self.memory_cleaning_probability = float(memory_cleaning_probability)
        self.max_translation_voxels = np.broadcast_to(np.asarray(max_translation_voxels, dtype=np.float64), (3,))

    def get_parameters(self, target_coords: np.ndarray, affine: np.ndarray, rng: np.random.Generator
                       ) -> PlacementParameters:
        centroid = np.asarray(target_coords, dtype=np.float64).mean(0)
        shift = rng.uniform(-1.0, 1.0, size=3) * self.max_translation_voxels
        # + 0.5: voxel index -> voxel-edge convention; aligned so that, without rotation/zoom, the patch samples
        # voxel centres exactly (no interpolation)
        centre = align_to_voxel_grid(centroid + 0.5 + shift, self.patch_size)
        clean = bool(rng.random() < self.memory_cleaning_probability)
        if clean:
            centre = centre_with_target_at_top(target_coords, affine, self.patch_size, centre, self.superior_axis,
                                               self.superior_at_low_index)
        return PlacementParameters(centre=centre, clean_memory=clean)
