"""Geometry between the input image, its reoriented copy and nnU-Net's preprocessed space (and back).

Forward (input -> preprocessed): ``sitk.DICOMOrient`` to the model's orientation (a lossless permutation/flip),
then nnU-Net's own preprocessor (transpose, crop to nonzero, CTNormalization, resampling to the plans' spacing).
Backward (preprocessed -> input), for label maps: nearest-neighbour resampling to the cropped shape, insertion
into the bbox, nnU-Net's ``transpose_backward``, reorientation back to the input's orientation letters, and
finally the input image's own spacing/origin/direction copied onto the result, so the output grid equals the
input grid voxel for voxel.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.orientation import orientation_of


def reorient(image: sitk.Image, orientation: str) -> sitk.Image:
    return image if orientation_of(image) == orientation else sitk.DICOMOrient(image, orientation)


def nnunet_input(image: sitk.Image) -> Tuple[np.ndarray, dict]:
    """(1, z, y, x) float32 array and properties exactly like nnU-Net's SimpleITKIO.read_images."""
    data = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    props = {"sitk_stuff": {"spacing": image.GetSpacing(), "origin": image.GetOrigin(),
                            "direction": image.GetDirection()},
             "spacing": [abs(s) for s in image.GetSpacing()[::-1]]}
    return data, props


def resample_nearest(arr: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling (voxel centres aligned, no new label values)."""
    if tuple(arr.shape) == tuple(new_shape):
        return arr
    idx = []
    for old, new in zip(arr.shape, new_shape):
        i = np.floor((np.arange(new) + 0.5) * old / new).astype(np.int64)
        idx.append(np.clip(i, 0, old - 1))
    return arr[np.ix_(*idx)]


def preprocessed_to_raw(labels_pp: np.ndarray, pp_properties: dict, transpose_backward: Sequence[int]) -> np.ndarray:
    """Label map in preprocessed space -> (z, y, x) array of the (reoriented) image fed to nnU-Net.

    Nearest-neighbour resampling (``resample_nearest``'s indices) written straight into the uncropped array,
    in chunks of slices, in the smallest label dtype: no full-size intermediate (peak memory)."""
    cropped_shape = [int(s) for s in pp_properties["shape_after_cropping_and_before_resampling"]]
    max_label = int(labels_pp.max()) if labels_pp.size else 0
    dtype = label_dtype(max_label) if labels_pp.size and int(labels_pp.min()) >= 0 else labels_pp.dtype
    full = np.zeros(pp_properties["shape_before_cropping"], dtype=dtype)
    bbox = pp_properties["bbox_used_for_cropping"]
    target = full[tuple(slice(int(b[0]), int(b[1])) for b in bbox)]
    idx = []
    for old, new in zip(labels_pp.shape, cropped_shape):
        i = np.floor((np.arange(new) + 0.5) * old / new).astype(np.int64)
        idx.append(np.clip(i, 0, old - 1))
    for r0 in range(0, cropped_shape[0], 64):
        r1 = min(cropped_shape[0], r0 + 64)
        target[r0:r1] = labels_pp[np.ix_(idx[0][r0:r1], idx[1], idx[2])]
    return np.ascontiguousarray(np.transpose(full, transpose_backward))


def raw_to_input_grid(arr_zyx: np.ndarray, reoriented: sitk.Image, original: sitk.Image) -> np.ndarray:
    """Array on the reoriented image's grid -> array on the original image's grid (permutation/flip only)."""
    img = sitk.GetImageFromArray(arr_zyx)
    img.CopyInformation(reoriented)
    back = reorient(img, orientation_of(original))
    out = sitk.GetArrayFromImage(back)
    expected = original.GetSize()[::-1]
    if out.shape != tuple(expected):  # cannot happen for a permutation; guard against silent misalignment
        raise RuntimeError(f"internal error: exported shape {out.shape} != input shape {expected}")
    return out


def array_to_image_like(arr_zyx: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """SimpleITK image of ``arr_zyx`` with the reference's exact size, spacing, origin and direction."""
    img = sitk.GetImageFromArray(arr_zyx)
    img.CopyInformation(reference)
    return img


def label_dtype(max_label: int):
    return np.uint8 if max_label < 256 else np.uint16
