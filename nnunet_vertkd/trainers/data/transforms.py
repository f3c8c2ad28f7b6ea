"""Augmentation of per-vertebra samples, built from batchgeneratorsv2 transforms.

Spatial (``VertebraSpatialAugmentation``): one rotation/zoom matrix and one patch centre per sample, applied
identically to the CT and to the memory and target. Memory and target travel as two binary *segmentation*
channels through batchgeneratorsv2's ``SpatialTransform`` (label-wise interpolation, so they stay exactly 0/1)
and are split off afterwards. Translation is the patch centre drawn by ``vertebra_sampling.VertebraPatchPlacement``.
    rotation: each axis uniform in [-rotation_deg, rotation_deg] (paper: 20 degrees), with probability p_rotation
    zoom: per axis a scale uniform in [1 - z, 1 + z], z = zoom_superior_inferior (paper: 0.3) on the
          superior-inferior axis and zoom_other (paper: 0.2) on the others, with probability p_zoom
Intensity (``intensity_and_mirror_transforms``), CT channel only (the memory and target are not in 'image'):
    multiplicative scale in [0.75, 1.25], additive shift in [-0.25, 0.25] (in nnU-Net-normalised units),
    Gaussian noise (variance in [0, 0.1]), Gaussian blur (sigma in [0.5, 1] voxels), each with its probability.
Mirroring: ONLY along the left-right axis (``nnunet_vertkd.orientation.left_right_axis``), with probability 0.5;
    never superior-inferior, so "topmost" keeps its meaning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgeneratorsv2.helpers.scalar_type import RandomScalar, sample_scalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import (
    SpatialTransform, _convert_my_grid_to_grid_sample_grid, create_affine_matrix_3d)
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from nnunet_vertkd.trainers.data.vertebra_sampling import memory_and_target, patch_half_extent


@dataclass
class AugmentationSettings:
    """All augmentation parameters (trainers fill them from class attributes)."""
    rotation_deg: float = 20.0
    p_rotation: float = 0.5
    zoom_superior_inferior: float = 0.3
    zoom_other: float = 0.2
    p_zoom: float = 0.5
    intensity_scale: Tuple[float, float] = (0.75, 1.25)
    p_intensity_scale: float = 0.5
    intensity_shift: Tuple[float, float] = (-0.25, 0.25)
    p_intensity_shift: float = 0.5
    noise_variance: Tuple[float, float] = (0.0, 0.1)
    p_noise: float = 0.2
    blur_sigma: Tuple[float, float] = (0.5, 1.0)
    p_blur: float = 0.2
    p_mirror_left_right: float = 0.5


# ----------------------------------------------------------------------------------------------------------------
# spatial
# ----------------------------------------------------------------------------------------------------------------
def draw_affine(rng: np.random.Generator, settings: AugmentationSettings, superior_axis: int) -> np.ndarray:
    """3x3 matrix A = R @ diag(scales) (batchgeneratorsv2's ``create_affine_matrix_3d``), identity when neither
    rotation nor zoom is drawn."""
    angles = [0.0, 0.0, 0.0]
    scales = [1.0, 1.0, 1.0]
    if rng.random() < settings.p_rotation:
        r = np.deg2rad(settings.rotation_deg)
        angles = list(rng.uniform(-r, r, size=3))
    if rng.random() < settings.p_zoom:
        for ax in range(3):
            z = settings.zoom_superior_inferior if ax == superior_axis else settings.zoom_other
            scales[ax] = float(rng.uniform(1 - z, 1 + z))
    return np.asarray(create_affine_matrix_3d(angles, scales), dtype=np.float64)


def crop_bbox_for_patch(centre: np.ndarray, affine: np.ndarray, patch_size: Sequence[int]
                        ) -> Tuple[list, np.ndarray]:
    """Integer bounding box [[lb, ub), ...] of the input region the output patch reads (with a 1-voxel margin
    for linear interpolation) and the patch centre relative to that box (voxel-edge convention)."""
    half = patch_half_extent(affine, patch_size)
    centre_idx = np.asarray(centre, dtype=np.float64) - 0.5  # voxel index of the patch centre
    lbs = np.floor(centre_idx - half).astype(int) - 1
    ubs = np.ceil(centre_idx + half).astype(int) + 2
    return [[int(lo), int(hi)] for lo, hi in zip(lbs, ubs)], np.asarray(centre, dtype=np.float64) - lbs


class FixedGridSpatialTransform(SpatialTransform):
    """batchgeneratorsv2's SpatialTransform with externally drawn parameters: ``get_parameters`` takes the
    matrix and the centre (voxel-edge convention, relative to the input) instead of drawing them, so one draw can
    be planned around the target (memory cleaning) and reused for CT, memory and target."""

    def __init__(self, patch_size: Sequence[int]):
        super().__init__(tuple(int(p) for p in patch_size), patch_center_dist_from_border=0, random_crop=False,
                         mode_seg="bilinear", border_mode_seg="constant", padding_value_seg=0,
                         padding_mode_image="zeros")

    def get_parameters(self, affine: np.ndarray = None, centre: Sequence[float] = None, **data_dict) -> dict:
        shape = data_dict["image"].shape[1:]
        affine = np.eye(3) if affine is None else np.asarray(affine, dtype=np.float64)
        grid = self._get_base_grid_clone()
        grid = torch.matmul(grid, torch.from_numpy(affine.T).float())
        grid += torch.tensor([c - s / 2 for c, s in zip(centre, shape)], dtype=torch.float32)
        grid = _convert_my_grid_to_grid_sample_grid(grid, shape)
        return {"center_location_in_pixels": list(centre), "grid": grid, "affine": affine, "elastic_offsets": None}


class VertebraSpatialAugmentation:
    """Cuts one sample out of a case: CT patch (C, *patch) float32 and memory/target patches (*patch) bool, for
    given matrix, centre and target label. ``apply`` only applies; the random draws happen elsewhere."""

    def __init__(self, patch_size: Sequence[int], ct_pad_value: Optional[float] = None):
        """ct_pad_value: CT value outside the volume (``nnunet_vertkd.ct_padding.normalised_air_value``, the
        value inference pads with); None = the minimum of the cropped region."""
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spatial = FixedGridSpatialTransform(self.patch_size)
        self.ct_pad_value = ct_pad_value

    def apply(self, data, seg, target_label: int, centre: np.ndarray, affine: np.ndarray, clean_memory: bool
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """data: (C, X, Y, Z) (numpy or blosc2), seg: (1, X, Y, Z) preprocessed segmentation. Outside the
        volume the CT is ``ct_pad_value`` (air), both where the crop leaves the volume and where the rotated or
        zoomed grid reads beyond the crop."""
        bbox, centre_in_crop = crop_bbox_for_patch(centre, affine, self.patch_size)
        pad = self.ct_pad_value
        if pad is None:
            inside = [[max(lo, 0), min(hi, s)] for (lo, hi), s in zip(bbox, data.shape[1:])]
            region = np.asarray(data[(slice(None),) + tuple(slice(lo, max(hi, lo + 1)) for lo, hi in inside)])
            pad = float(region.min()) if region.size else 0.0
        # the grid sampler pads with zeros: sample (image - pad) and add pad back
        image = torch.from_numpy(np.ascontiguousarray(crop_and_pad_nd(data, bbox, pad))).float() - pad
        seg_crop = np.asarray(crop_and_pad_nd(seg, bbox, -1))[0]
        memory, target = memory_and_target(seg_crop, target_label)
        if clean_memory:
            memory[:] = False
        segmentation = torch.from_numpy(np.stack((memory, target)).astype(np.int16))
        params = self.spatial.get_parameters(affine=affine, centre=centre_in_crop, image=image)
        out = self.spatial.apply({"image": image, "segmentation": segmentation}, **params)
        return out["image"] + pad, out["segmentation"][0] > 0, out["segmentation"][1] > 0


# ----------------------------------------------------------------------------------------------------------------
# intensity + mirroring
# ----------------------------------------------------------------------------------------------------------------
class AdditiveShiftTransform(ImageOnlyTransform):
    """Adds one value drawn from ``shift_range`` to every channel of the image."""

    def __init__(self, shift_range: RandomScalar):
        super().__init__()
        self.shift_range = shift_range

    def get_parameters(self, **data_dict) -> dict:
        return {"shift": float(sample_scalar(self.shift_range, image=data_dict["image"], channel=None))}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return img.add_(params["shift"])


def intensity_and_mirror_transforms(settings: AugmentationSettings, left_right_axis: Optional[int]
                                    ) -> BasicTransform:
    """Intensity transforms (act on 'image' = the CT only) followed by left-right mirroring (acts on 'image'
    and 'segmentation' = memory and target)."""
    transforms = [
        RandomTransform(MultiplicativeBrightnessTransform(settings.intensity_scale, synchronize_channels=True),
                        apply_probability=settings.p_intensity_scale),
        RandomTransform(AdditiveShiftTransform(settings.intensity_shift),
                        apply_probability=settings.p_intensity_shift),
        RandomTransform(GaussianNoiseTransform(noise_variance=settings.noise_variance, p_per_channel=1,
                                               synchronize_channels=True), apply_probability=settings.p_noise),
        RandomTransform(GaussianBlurTransform(blur_sigma=settings.blur_sigma, synchronize_channels=True,
                                              synchronize_axes=True, p_per_channel=1),
                        apply_probability=settings.p_blur),
    ]
    if left_right_axis is not None and settings.p_mirror_left_right > 0:
        transforms.append(RandomTransform(MirrorTransform(allowed_axes=(int(left_right_axis),)),
                                          apply_probability=min(1.0, 2 * settings.p_mirror_left_right)))
    return ComposeTransforms(transforms)
