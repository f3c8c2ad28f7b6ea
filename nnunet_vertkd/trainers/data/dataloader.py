"""nnU-Net-compatible data loader of per-vertebra samples (CT + memory -> target).

``VertKDDataLoader`` subclasses nnU-Net's ``nnUNetDataLoader`` (and so batchgenerators' ``DataLoader``), so the
stock Single/NonDetMultiThreadedAugmenter drive it exactly as for nnU-Net; all work happens in
``generate_train_batch`` (nnU-Net does the same). A batch is

    {"data":    float32 (B, 2, *patch)  channel 0 = CT (nnU-Net-normalised), channel 1 = memory (0/1),
     "target":  float32 (B, 1, *patch)  the target vertebra (0/1)   -- a list over scales with deep supervision,
     "weights": float32 (B, 1, *patch)  Lessmann border weights of the (augmented) target -- list likewise,
     "keys":    case identifiers, "targets": target labels, "clean_memory": bools}

The border weights are computed after all spatial augmentation, from the augmented target, with the
preprocessed spacing. With deep supervision the target and the weights are downsampled like nnU-Net's
DownsampleSegForDSTransform ('nearest-exact').
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

from nnunet_vertkd.trainers.data.transforms import (
    AugmentationSettings, VertebraSpatialAugmentation, draw_affine, intensity_and_mirror_transforms)
from nnunet_vertkd.trainers.data.vertebra_sampling import (
    MEMORY_CLEANING_PROBABILITY, RegionBalancedSampler, VertebraPatchPlacement, target_voxel_coordinates,
    vertebra_labels_from_properties)
from nnunet_vertkd.trainers.losses.lessmann import (
    GAMMA, SIGMA_MM, border_weight_map, downsample_for_deep_supervision)


def labels_per_case(dataset) -> Dict[str, List[int]]:
    """{case: [vertebra labels]} of an nnU-Net dataset object (read from the cases' properties)."""
    out = {}
    for identifier in dataset.identifiers:
        properties = dataset.load_case(identifier)[3]
        labels = vertebra_labels_from_properties(properties)
        if labels:
            out[identifier] = labels
    return out


class VertKDDataLoader(nnUNetDataLoader):
    def __init__(self, data, batch_size: int, patch_size: Sequence[int], label_manager,
                 superior_axis: int, superior_at_low_index: bool, left_right_axis: Optional[int],
                 spacing_mm: Sequence[float], memory_cleaning_probability: float = MEMORY_CLEANING_PROBABILITY,
                 balance_regions: bool = True, max_translation_voxels: Sequence[float] = (64, 64, 64),
                 augment: bool = True, augmentation: Optional[AugmentationSettings] = None,
                 deep_supervision_scales: Optional[Sequence] = None, border_gamma: float = GAMMA,
                 border_sigma_mm: float = SIGMA_MM, ct_pad_value: Optional[float] = None):
        patch_size = tuple(int(p) for p in patch_size)
        super().__init__(data, batch_size, patch_size, patch_size, label_manager,
                         oversample_foreground_percent=0.0, transforms=None)
        self.superior_axis = int(superior_axis)
        self.superior_at_low_index = bool(superior_at_low_index)
        self.left_right_axis = left_right_axis
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.augment = bool(augment)
        self.augmentation = augmentation or AugmentationSettings()
        self.deep_supervision_scales = deep_supervision_scales
        self.border_gamma = float(border_gamma)
        self.border_sigma_mm = float(border_sigma_mm)
        self.sampler = RegionBalancedSampler(labels_per_case(data), balance_regions)
        self.placement = VertebraPatchPlacement(patch_size, self.superior_axis, self.superior_at_low_index,
                                                memory_cleaning_probability, max_translation_voxels)
        self.spatial = VertebraSpatialAugmentation(patch_size, ct_pad_value)
        self.intensity = intensity_and_mirror_transforms(self.augmentation, left_right_axis) if augment else None
        self._rng = None
        self._rng_pid = None

    @property
    def rng(self) -> np.random.Generator:
        # one generator per process: the augmenter forks workers, which must not share a stream. The torch
        # generator (batchgeneratorsv2's transforms draw from it) is reseeded too: forked workers inherit the
        # parent's torch state and would otherwise apply identical intensity/mirror draws.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng()
            self._rng_pid = os.getpid()
            torch.manual_seed(int(self._rng.integers(2 ** 31)))
        return self._rng

    def seed(self, seed: int) -> None:
        """Make the draws of this process reproducible (tests)."""
        self._rng = np.random.default_rng(seed)
        self._rng_pid = os.getpid()
        torch.manual_seed(seed)

    def make_sample(self, case: str, target_label: int) -> dict:
        """One augmented sample of the given case and target (numpy/torch, no batch axis)."""
        rng = self.rng
        data, seg, _, properties = self._data.load_case(case)
        coords = target_voxel_coordinates(properties, target_label, None)
        affine = draw_affine(rng, self.augmentation, self.superior_axis) if self.augment else np.eye(3)
        placement = self.placement.get_parameters(coords, affine, rng)
        image, memory, target = self.spatial.apply(data, seg, target_label, placement.centre, affine,
                                                   placement.clean_memory)
        if self.intensity is not None:
            out = self.intensity(image=image, segmentation=torch.stack((memory, target)).to(torch.int16))
            image, memory, target = out["image"], out["segmentation"][0] > 0, out["segmentation"][1] > 0
        weights = border_weight_map(target.numpy(), self.spacing_mm, self.border_gamma, self.border_sigma_mm)
        return {"image": image[:1], "memory": memory, "target": target, "weights": torch.from_numpy(weights),
                "clean_memory": placement.clean_memory}

    def generate_train_batch(self) -> dict:
        b = self.batch_size
        data = torch.empty((b, 2, *self.patch_size), dtype=torch.float32)
        target = torch.empty((b, 1, *self.patch_size), dtype=torch.float32)
        weights = torch.empty((b, 1, *self.patch_size), dtype=torch.float32)
        keys, labels, cleaned = [], [], []
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for j in range(b):
                sample = self.sampler.draw(self.rng)
                s = self.make_sample(sample.case, sample.target)
                data[j, 0] = s["image"][0]
                data[j, 1] = s["memory"].float()
                target[j, 0] = s["target"].float()
                weights[j, 0] = s["weights"]
                keys.append(sample.case)
                labels.append(sample.target)
                cleaned.append(s["clean_memory"])
        if self.deep_supervision_scales is not None:
            target = downsample_for_deep_supervision(target, self.deep_supervision_scales, mode="nearest-exact")
            weights = downsample_for_deep_supervision(weights, self.deep_supervision_scales, mode="nearest-exact")
        return {"data": data, "target": target, "weights": weights, "keys": keys, "targets": labels,
                "clean_memory": cleaned}
