"""nnU-Net's preprocessing of one case with the memory of its resampling step bounded (the memory target: a peak
resident set of at most 4 GB for a 512×512×600 scan, docs/inference.md).

``run_case_npy(preprocessor, data, properties, plans_manager, configuration_manager, dataset_json)`` is the
preprocessor's own ``run_case_npy`` (transpose, crop, normalisation, resampling), with two changes that only
concern memory:

* **Image resampling slab by slab.** nnU-Net's ``resample_data_or_seg_to_shape`` (the default of the plans)
  resizes the whole volume at once with ``skimage.transform.resize`` (order 3, mode "edge", no anti-aliasing),
  which holds a float64 copy of the input, its spline coefficients and a float64 output: about 3.5 GB for a
  512×512×600 scan. ``resample_slabwise`` computes the same resize in slabs along the first axis: each output slab
  is interpolated from the input slab it needs plus ``MARGIN`` voxels on both sides, with the same edge padding,
  spline prefilter, grid-mode coordinates and clipping to the input's range as ``scipy.ndimage.zoom`` /
  ``skimage.transform.resize``. The cubic B-spline prefilter's influence decays as 0.268^distance, so with
  ``MARGIN`` = 20 the result equals nnU-Net's to float32 precision (tested: ``tests/test_lean_preprocessing.py``).
  Anisotropic cases that nnU-Net resamples "separate z" and non-default resampling functions use nnU-Net's
  function unchanged.
* **No resampled crop mask.** ``run_case_npy`` also resamples the nonzero mask it creates while cropping (another
  2 GB of float64 temporaries); the predictor never uses it, so it is replaced by a zero-size-in-memory view.
  (The preprocessed data and the properties are unchanged.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

#: voxels of input added on both sides of each slab (spline prefilter support; 0.268^20 ~ 1e-12)
MARGIN = 20
#: padding that scipy.ndimage.zoom adds for modes "nearest"/"edge" before the spline prefilter
_ZOOM_PAD = 12
#: bytes of float64 input per slab (bounds the temporaries: the padded slab, filtered in place, and the output slab)
SLAB_BYTES = 64 * 2 ** 20
#: at least this many input slices per slab (the margins are overhead)
MIN_SLAB_SLICES = 32


def resample_slabwise(volume: np.ndarray, new_shape: Sequence[int], order: int = 3,
                      out_dtype=np.float32) -> np.ndarray:
    """``skimage.transform.resize(volume.astype(float), new_shape, order, mode='edge', anti_aliasing=False)``
    (clip=True) computed slab by slab along axis 0; returns ``out_dtype``."""
    shape = np.array(volume.shape)
    new_shape = np.array([int(s) for s in new_shape])
    out = np.empty(tuple(new_shape), dtype=out_dtype)
    if np.all(shape == new_shape):
        out[...] = volume
        return out
    zoom = shape / new_shape  # input voxels per output voxel (grid mode)
    lo, hi = float(np.min(volume)), float(np.max(volume))
    slice_bytes = 8 * int(np.prod(shape[1:]))
    in_per_slab = max(MIN_SLAB_SLICES, SLAB_BYTES // slice_bytes)
    out_per_slab = max(1, int(in_per_slab / zoom[0]))
    pad = _ZOOM_PAD if order > 1 else 0
    for o0 in range(0, int(new_shape[0]), out_per_slab):
        o1 = min(int(new_shape[0]), o0 + out_per_slab)
        c0 = (o0 + 0.5) * zoom[0] - 0.5
        c1 = (o1 - 1 + 0.5) * zoom[0] - 0.5
        a = max(0, int(np.floor(c0)) - 2 - MARGIN)
        b = min(int(shape[0]), int(np.floor(c1)) + 3 + MARGIN)
        slab = np.asarray(volume[a:b], dtype=np.float64)
        if order > 1:
            padded = np.pad(slab, pad, mode="edge")
            del slab
            coeffs = ndimage.spline_filter(padded, order, output=padded, mode="nearest")  # in place
            del padded
        else:
            coeffs = slab
        offset = [(o0 + 0.5) * zoom[0] - 0.5 - a + pad] + [0.5 * z - 0.5 + pad for z in zoom[1:]]
        res = ndimage.affine_transform(coeffs, zoom, offset=offset, output_shape=(o1 - o0, *new_shape[1:]),
                                       output=np.float64, order=order, mode="nearest", prefilter=False)
        del coeffs
        np.clip(res, lo, hi, out=res)
        out[o0:o1] = res
    return out


class _LeanConfiguration:
    """The configuration manager with the memory-lean resampling functions (everything else delegated)."""

    def __init__(self, configuration_manager):
        self._cm = configuration_manager

    def __getattr__(self, name):
        return getattr(self._cm, name)

    @property
    def resampling_fn_data(self):
        cm = self._cm
        kwargs = dict(cm.configuration.get("resampling_fn_data_kwargs") or {})
        original = cm.resampling_fn_data

        def resample(data, new_shape, current_spacing, new_spacing):
            from nnunetv2.preprocessing.resampling.default_resampling import (ANISO_THRESHOLD,
                                                                              determine_do_sep_z_and_axis)
            separate_z, _ = determine_do_sep_z_and_axis(kwargs.get("force_separate_z", False), current_spacing,
                                                        new_spacing, kwargs.get("separate_z_anisotropy_threshold",
                                                                                ANISO_THRESHOLD))
            if separate_z or kwargs.get("is_seg", False) or np.asarray(data).ndim != 4:
                return original(data, new_shape, current_spacing, new_spacing)
            data = np.asarray(data)
            out = np.empty((data.shape[0], *[int(s) for s in new_shape]), dtype=data.dtype)
            for c in range(data.shape[0]):
                out[c] = resample_slabwise(data[c], new_shape, int(kwargs.get("order", 3)), data.dtype)
            return out

        return resample

    @property
    def resampling_fn_seg(self):
        def no_mask(seg, new_shape, current_spacing, new_spacing):  # the predictor discards the crop mask
            return np.broadcast_to(np.zeros((), dtype=np.int8), (1, *[int(s) for s in new_shape]))
        return no_mask


def lean_resampling_applies(configuration_manager) -> bool:
    """True for plans that use nnU-Net's default resampling of images (what ``resample_slabwise`` reproduces)."""
    conf = getattr(configuration_manager, "configuration", {}) or {}
    return conf.get("resampling_fn_data") == "resample_data_or_seg_to_shape"


def run_case_npy(preprocessor, data: np.ndarray, properties: dict, plans_manager, configuration_manager,
                 dataset_json):
    """``preprocessor.run_case_npy(data, None, properties, ...)`` with the memory-lean resampling (see above)."""
    cm = _LeanConfiguration(configuration_manager) if lean_resampling_applies(configuration_manager) \
        else configuration_manager
    return preprocessor.run_case_npy(data, None, properties, plans_manager, cm, dataset_json)
