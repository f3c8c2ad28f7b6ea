"""The benchmarks' oracle loop: the reference labels drive the iterative loop while the real network still runs on
every patch, for the timing.

The loop runs on the reference labels in the network's preprocessed space (``OraclePredictor``, a perfect network);
its start signal is the labelled voxels dilated by ``START_DILATION_VOXELS``; the minimum fragment sizes are
lowered to a quarter of the smallest reference vertebra, so that small (e.g. cervical) vertebrae of the reference
are accepted as a perfect network's output would be.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import numpy as np

START_DILATION_VOXELS = 3
MIN_FRAGMENT_FRACTION = 0.25


def oracle_start(labels: np.ndarray) -> np.ndarray:
    """Start signal of the oracle loop: the reference union dilated by ``START_DILATION_VOXELS`` (float32)."""
    from scipy import ndimage
    return ndimage.binary_dilation(labels > 0, iterations=START_DILATION_VOXELS).astype(np.float32)


def oracle_settings(settings, labels: np.ndarray) -> Tuple[object, int]:
    """``settings`` for the oracle loop on ``labels`` (padding value of the oracle, fragment sizes no larger than
    ``MIN_FRAGMENT_FRACTION`` of the smallest vertebra); returns (settings, that minimum fragment in voxels)."""
    from nnunet_vertkd.inference.oracle import ORACLE_PAD_VALUE
    counts = np.bincount(labels.astype(np.int64).ravel())[1:]
    min_fragment = max(1, int(MIN_FRAGMENT_FRACTION * counts[counts > 0].min())) if np.any(counts) else 1
    adjusted = dataclasses.replace(
        settings, CT_PAD_VALUE=ORACLE_PAD_VALUE,
        MIN_START_FRAGMENT_VOXELS=min(settings.MIN_START_FRAGMENT_VOXELS, min_fragment),
        MIN_CONTINUE_FRAGMENT_VOXELS=min(settings.MIN_CONTINUE_FRAGMENT_VOXELS, min_fragment))
    return adjusted, min_fragment


def network_then_oracle(predict_patch: Callable) -> Callable:
    """A patch predictor that runs the real network (its output unused: the timing) and returns the oracle's."""
    from nnunet_vertkd.inference.oracle import OraclePredictor
    oracle = OraclePredictor()

    def both(patch):
        predict_patch(patch)
        return oracle(patch)
    return both
