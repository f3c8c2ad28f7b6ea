"""Step 1: where is the spine? A spine probability map in the vertebra model's preprocessed space.

Two sources:

* ``SpineModel`` (the normal case): the spine model (VertKDSpineTrainer on the spine dataset, a plain 2-class
  nnU-Net model) run by a stock ``nnUNetPredictor`` on the (reoriented) input image; nnU-Net does its own
  preprocessing (4 mm spacing of the spine plans), sliding window and export, returning the probability of
  class 1 ("spine") in the input image's raw array geometry. ``to_preprocessed_space`` then applies the
  vertebra model's transpose, crop bbox and (linear) resampling so the map lines up voxel for voxel with the
  vertebra model's preprocessed CT.
* ``heuristic_spine_mask`` (when no spine model is given): a documented fallback. Voxels >=
  ``BONE_THRESHOLD_HU`` inside a band of ``MIDLINE_BAND_FRACTION`` of the body's left-right width around the
  body's left-right centre (body: > ``BODY_THRESHOLD_HU``), dilated by ``DILATION_MM`` in-plane and by
  ``DISC_BRIDGE_MM`` along the superior-inferior axis (to bridge the discs), largest 26-connected component. It knows
  nothing about anatomy (it may start at the skull or stop at the pelvis); the record says
  ``"spine_source": "heuristic"``.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import cc3d
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env

BONE_THRESHOLD_HU = 150.0
BODY_THRESHOLD_HU = -500.0
MIDLINE_BAND_FRACTION = 0.3
DILATION_MM = 3.0
#: half-length (mm) of the dilation along the superior-inferior axis that joins vertebrae across the discs
DISC_BRIDGE_MM = 8.0


class SpineModel:
    """A spine model folder behind a stock nnUNetPredictor."""

    def __init__(self, model_folder: str, use_folds=None, checkpoint_name: str = "checkpoint_final.pth",
                 device: torch.device = torch.device("cpu"), use_mirroring: bool = True, verbose: bool = False):
        ensure_ext_trainer_env()
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        for name in ("dataset.json", "plans.json"):
            if not os.path.isfile(os.path.join(model_folder, name)):
                raise FileNotFoundError(f"spine model folder {model_folder}: {name} is missing")
        self.folder = model_folder
        self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                         perform_everything_on_device=device.type == "cuda", device=device,
                                         verbose=verbose, verbose_preprocessing=False, allow_tqdm=False)
        if not use_folds:  # nnU-Net's auto-detection ignores fold_all; ours does not
            from nnunet_vertkd.inference.model_loading import available_folds
            use_folds = available_folds(model_folder, checkpoint_name)
            if not use_folds:
                raise FileNotFoundError(f"spine model folder {model_folder}: no fold_*/{checkpoint_name}")
        folds = tuple(f if f == "all" else int(f) for f in use_folds)
        self.folds = folds  # the fold folders hold the backends' cached exports (inference/backends.py)
        try:
            self.predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint_name)
        except Exception as e:  # corrupt/truncated checkpoint (UnpicklingError, EOFError, ...), missing fold
            raise _spine_load_error(model_folder, folds, checkpoint_name, e) from e

    def probability_raw(self, data: np.ndarray, properties: dict) -> np.ndarray:
        """Spine probability (float32, shape ``data.shape[1:]``) for a (1, z, y, x) image read like SimpleITKIO."""
        props = {"spacing": list(properties["spacing"])}  # the predictor only needs the spacing
        if "sitk_stuff" in properties:
            props["sitk_stuff"] = properties["sitk_stuff"]
        _, probs = self.predictor.predict_single_npy_array(np.asarray(data, dtype=np.float32), props, None, None, True)
        probs = np.asarray(probs)
        return probs[1].astype(np.float32, copy=False) if probs.shape[0] > 1 else probs[0].astype(np.float32)


def _spine_load_error(model_folder: str, folds, checkpoint_name: str, error: Exception) -> Exception:
    """A ModelFolderError naming the spine checkpoint that cannot be loaded (found by loading each alone)."""
    from nnunet_vertkd.inference.model_loading import ModelFolderError, load_checkpoint
    for f in folds:
        path = os.path.join(model_folder, f"fold_{f}", checkpoint_name)
        if not os.path.isfile(path):
            return ModelFolderError(f"spine model: {path} does not exist")
        try:
            load_checkpoint(path)
        except ModelFolderError as e:
            return ModelFolderError(f"spine model: {e}")
    return ModelFolderError(f"cannot load the spine model {model_folder} (folds {list(folds)}, {checkpoint_name}): "
                            f"{type(error).__name__}: {error}")


def heuristic_spine_mask(hu_zyx: np.ndarray, spacing_zyx: Sequence[float], lr_axis: int = 2,
                         si_axis: int = 0) -> np.ndarray:
    """Crude spine mask (uint8, same shape) from HU thresholds; see the module docstring."""
    hu = np.asarray(hu_zyx)
    body = hu > BODY_THRESHOLD_HU
    if not body.any():
        return np.zeros(hu.shape, np.uint8)
    other = tuple(a for a in range(3) if a != lr_axis)
    lr_profile = np.flatnonzero(body.any(axis=other))
    centre = 0.5 * (lr_profile[0] + lr_profile[-1])
    half = max(1.0, 0.5 * MIDLINE_BAND_FRACTION * (lr_profile[-1] - lr_profile[0] + 1))
    band = np.zeros(hu.shape[lr_axis], bool)
    band[max(0, int(centre - half)):int(np.ceil(centre + half)) + 1] = True
    shape = [1, 1, 1]
    shape[lr_axis] = -1
    bone = (hu >= BONE_THRESHOLD_HU) & band.reshape(shape)
    if not bone.any():
        return np.zeros(hu.shape, np.uint8)
    # vertebrae are separated by discs (< 100 HU): bridge them by a dilation that is long along the spine
    radius = [max(1, int(round(DILATION_MM / s))) for s in spacing_zyx]
    radius[si_axis] = max(1, int(round(DISC_BRIDGE_MM / spacing_zyx[si_axis])))
    for axis, r in enumerate(radius):  # a box is the sum of three segments: separable, same result, much faster
        segment = [1, 1, 1]
        segment[axis] = 2 * r + 1
        bone = ndimage.binary_dilation(bone, structure=np.ones(segment, bool))
    bone = bone.view(np.uint8)  # bool -> 0/1 without a copy
    try:  # 16-bit labels when cc3d's estimate of the component count allows (a quarter of 64-bit memory)
        labels = cc3d.connected_components(bone, connectivity=26, out_dtype=np.uint16)
    except ValueError:
        labels = cc3d.connected_components(bone, connectivity=26)
    del bone
    flat = labels.reshape(-1)
    counts = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    for start in range(0, flat.size, 1 << 24):  # chunks: bincount casts its input to int64 (1.3 GB for 512^2x600)
        counts += np.bincount(flat[start:start + (1 << 24)], minlength=counts.size)
    counts[0] = 0
    return np.equal(labels, int(np.argmax(counts))).view(np.uint8)


#: output slices per chunk of ``resample_linear`` (bounds its temporaries)
RESAMPLE_CHUNK_SLICES = 32


def resample_linear(arr: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of a 3D map (any numeric dtype) to ``new_shape`` as float32, voxel centres aligned like
    ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` (nnU-Net's resize convention).

    Computed in chunks of output slices: trilinear interpolation is separable, so each chunk is the bilinear
    in-plane resize (torch) of the input slices it needs, blended linearly along axis 0 with torch's source
    coordinates ((o + 0.5) * in / out - 0.5, clamped at 0). The input is never copied whole to float32 (a
    512x512x600 uint8 mask would take 630 MB); the result equals the one-call trilinear to float32 rounding."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(arr.shape) == new_shape:
        return arr.astype(np.float32, copy=False)
    n_in, n_out = arr.shape[0], new_shape[0]
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    z0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    z1 = np.minimum(z0 + 1, n_in - 1)
    w1 = (src - z0).astype(np.float32)
    out = np.empty(new_shape, dtype=np.float32)
    same_plane = tuple(arr.shape[1:]) == new_shape[1:]
    for o0 in range(0, n_out, RESAMPLE_CHUNK_SLICES):
        o1 = min(n_out, o0 + RESAMPLE_CHUNK_SLICES)
        a, b = int(z0[o0]), int(z1[o1 - 1]) + 1
        planes = torch.from_numpy(np.ascontiguousarray(arr[a:b], dtype=np.float32))
        if not same_plane:
            planes = F.interpolate(planes[:, None], size=new_shape[1:], mode="bilinear", align_corners=False)[:, 0]
        planes = planes.numpy()
        lo, hi = planes[z0[o0:o1] - a], planes[z1[o0:o1] - a]
        w = w1[o0:o1, None, None]
        out[o0:o1] = lo + w * (hi - lo)
    return out


def to_preprocessed_space(arr_raw: np.ndarray, properties: dict, transpose_forward: Sequence[int],
                          target_shape: Sequence[int]) -> np.ndarray:
    """Map a raw-geometry (z, y, x) map into the vertebra model's preprocessed space.

    ``properties`` are those returned by the vertebra preprocessor's ``run_case_npy`` (they hold
    ``bbox_used_for_cropping`` in transposed axes).
    """
    arr = np.transpose(arr_raw, transpose_forward)
    bbox = properties["bbox_used_for_cropping"]
    arr = arr[tuple(slice(int(b[0]), int(b[1])) for b in bbox)]
    out = resample_linear(arr, target_shape)
    if np.shares_memory(out, arr_raw):  # same shape: resample_linear returned the input itself
        return np.clip(out, 0.0, 1.0)
    return np.clip(out, 0.0, 1.0, out=out)  # in place: one volume less at the peak


def spine_probability(data_raw: np.ndarray, raw_properties: dict, pp_properties: dict, transpose_forward,
                      target_shape, spine_model: Optional[SpineModel], orientation: str = "LPI"
                      ) -> Tuple[np.ndarray, np.ndarray, str]:
    """(probability in preprocessed space, probability on the raw (reoriented) grid, source) for one image.

    ``data_raw``: (1, z, y, x) HU array of the image in ``orientation`` (the model's), ``raw_properties`` as from
    SimpleITKIO, ``pp_properties`` from the vertebra preprocessor. source: "model" or "heuristic".
    """
    if spine_model is not None:
        raw = spine_model.probability_raw(data_raw, raw_properties)
        source = "model"
    else:
        from nnunet_vertkd.orientation import _array_axis_of
        lr_axis, _ = _array_axis_of(orientation, "LR")
        si_axis, _ = _array_axis_of(orientation, "IS")
        raw = heuristic_spine_mask(data_raw[0], raw_properties["spacing"], lr_axis, si_axis)  # uint8 0/1
        source = "heuristic"
    return to_preprocessed_space(raw, pp_properties, transpose_forward, target_shape), raw, source
