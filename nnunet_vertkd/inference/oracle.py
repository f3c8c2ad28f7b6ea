"""An oracle for the iterative loop: a perfect network, to test the loop (not the networks) on real anatomy.

``OraclePredictor`` is a ``predict_patch`` that returns the true topmost vertebra not yet in memory. It reads the
truth through the CT channel: the loop is run on ``oracle_ct(labels)`` (the consecutive cranio-caudal label map
as float, padded with ``ORACLE_PAD_VALUE`` outside the volume), so the oracle sees exactly the patch the network
would see, at the position the loop chose. Whatever the loop does wrong with it (stopping early, skipping a
vertebra, accepting one twice) is the loop's fault.

Start signals (``start_signal``): ``"gt"`` is the ground-truth union (what the trainers' final validation uses);
``"coarse"`` is that union seen through a 4 mm grid (block-averaged, then linearly upsampled): what a perfect
spine model at the spine step's spacing would give.

``run_oracle`` / ``oracle_mask_from_file`` drive the loop on a VerSe mask resampled to the loop's spacing in the
converter's orientation (LPI), and report vertebrae found, their order and the network calls per vertebra.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import zoom

from nnunet_vertkd.inference.iterative import IterativeResult, IterativeSettings, segment_vertebrae_iteratively
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, superior_axis, to_canonical

#: "CT" value outside the volume for the oracle (no vertebra there)
ORACLE_PAD_VALUE = -1.0
#: spacing of the spine step (the method's spine network sees the CT at about 4 mm)
COARSE_SPINE_SPACING_MM = 4.0


class OraclePredictor:
    """predict_patch((2, *patch) [labels as CT, memory]) -> 1.0 on the topmost (lowest consecutive label)
    vertebra of the patch that is not in memory, 0 elsewhere (and 0 on memory voxels).

    A vertebra counts as "in memory" when at least half of its voxels in the patch are in memory: a few voxels
    of an accepted vertebra that lay outside the patch when it was accepted are a remnant, not a vertebra a
    network would segment next."""

    def __init__(self):
        self.n_calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.n_calls += 1
        labels = np.rint(x[0]).astype(np.int32)
        in_memory = x[1] >= 0.5
        out = np.zeros(labels.shape, dtype=np.float32)
        present = labels > 0
        if not present.any():
            return out
        n_total = np.bincount(labels[present])
        n_mem = np.bincount(labels[present & in_memory], minlength=n_total.size)
        free = [lab for lab in np.flatnonzero(n_total) if n_mem[lab] * 2 < n_total[lab]]
        if free:
            out[(labels == int(min(free))) & ~in_memory] = 1.0
        return out


def oracle_ct(labels: np.ndarray) -> np.ndarray:
    """The label map as the oracle's CT channel (float32)."""
    return np.asarray(labels, dtype=np.float32)


def start_signal(labels: np.ndarray, kind: str, spacing_mm: float = 1.0) -> np.ndarray:
    """Spine start signal of a label map: ``"gt"`` (union) or ``"coarse"`` (union through a 4 mm grid)."""
    union = (np.asarray(labels) > 0).astype(np.float32)
    if kind == "gt":
        return union
    if kind != "coarse":
        raise ValueError(f"start signal must be 'gt' or 'coarse', got {kind!r}")
    f = max(1, int(round(COARSE_SPINE_SPACING_MM / float(spacing_mm))))
    shape = union.shape
    padded = np.pad(union, [(0, (-s) % f) for s in shape])
    coarse = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f, padded.shape[2] // f, f).mean((1, 3, 5))
    fine = zoom(coarse, [p / c for p, c in zip(padded.shape, coarse.shape)], order=1, grid_mode=True,
                mode="nearest")
    return np.clip(fine[:shape[0], :shape[1], :shape[2]], 0.0, 1.0).astype(np.float32)


def labels_from_verse_mask(mask: sitk.Image, spacing_mm: float = 1.0) -> np.ndarray:
    """A VerSe vertebra mask as consecutive cranio-caudal labels on an isotropic ``spacing_mm`` grid in the
    converter's orientation (LPI; array axis 0 = superior-inferior, superior at index 0), like the converter."""
    from nnunet_vertkd.dataset_conversion.case_conversion import mask_to_nnunet_labels, resample, target_grid
    canon = to_canonical(mask, CANONICAL_ORIENTATION)
    ref = target_grid(canon, spacing_mm)
    arr = np.rint(sitk.GetArrayFromImage(canon)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(canon)
    res = resample(img, ref, sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    return mask_to_nnunet_labels(sitk.GetArrayFromImage(res), "mask", []).astype(np.int16)


@dataclass
class OracleRun:
    labels_true: List[int]
    labels_found: List[int]  # the true label under each accepted vertebra, in acceptance order
    result: IterativeResult

    @property
    def found_all_in_order(self) -> bool:
        return self.labels_found == self.labels_true

    @property
    def calls_per_vertebra(self) -> float:
        return self.result.n_network_calls / max(1, len(self.labels_true))

    def mean_dice(self, labels: np.ndarray) -> float:
        """Mean Dice of the accepted instances with the vertebrae under them (``labels``: the map the loop ran on);
        below 1 only where the loop changes a perfect prediction (patch borders, ``FILL_HOLES``)."""
        dice = []
        for v, true_label in zip(self.result.vertebrae, self.labels_found):
            pred, ref = self.result.instances == v.label, labels == true_label
            dice.append(2.0 * np.sum(pred & ref) / max(1, int(pred.sum()) + int(ref.sum())))
        return float(np.mean(dice)) if dice else 0.0


def run_oracle(labels: np.ndarray, start: str = "gt", spacing_mm: float = 1.0,
               patch_size_mm: float = 128.0, settings: Optional[IterativeSettings] = None) -> OracleRun:
    """Drive the loop with the oracle on an LPI label map at ``spacing_mm`` (the 1 mm defaults scaled)."""
    sup_axis, sup_low = superior_axis(CANONICAL_ORIENTATION)
    patch = (int(round(patch_size_mm / spacing_mm)),) * 3
    s = settings or IterativeSettings().scaled_to_spacing((spacing_mm,) * 3)
    s = dataclasses.replace(s, CT_PAD_VALUE=ORACLE_PAD_VALUE)
    res = segment_vertebrae_iteratively(OraclePredictor(), oracle_ct(labels), start_signal(labels, start, spacing_mm),
                                        sup_axis, sup_low, patch, s)
    found = []
    for v in res.vertebrae:
        under = labels[res.instances == v.label]
        under = under[under > 0]
        found.append(int(np.bincount(under).argmax()) if under.size else 0)
    true = [int(v) for v in np.unique(labels) if v > 0]
    return OracleRun(true, found, res)
