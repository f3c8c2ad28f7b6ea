"""Tiny stand-in nnU-Net model folders and synthetic CTs for the inference tests.

The vertebra "model" is a real nnU-Net results folder (dataset.json, plans.json, fold_all/checkpoint_final.pth)
whose trainer (written into a temporary nnUNet_extTrainer folder) builds a deterministic network: it returns the
topmost slab of bone (> 400 HU) that is not in memory, i.e. what a perfect vertebra model returns on a phantom
of separated bone blocks. The spine "model" is a stock nnUNetTrainer with an untrained tiny PlainConvUNet.
"""
import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

STANDIN_TRAINER = "VertKDTestStandInTrainer"

STANDIN_SOURCE = '''
import torch
from torch import nn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class TopmostBoneNet(nn.Module):
    """(B, 2, X, Y, Z) -> (B, 1, X, Y, Z) logits: topmost bone slab along axis 0 (index 0 = superior)."""

    def __init__(self, threshold=0.4):
        super().__init__()
        self.threshold = threshold
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        mask = (x[:, 0] > self.threshold) & (x[:, 1] < 0.5)
        keep = torch.zeros_like(mask)
        for b in range(x.shape[0]):
            rows = mask[b].flatten(1).any(1)
            idx = torch.nonzero(rows).flatten()
            if idx.numel() == 0:
                continue
            start = int(idx[0])
            end = start
            while end < rows.numel() and bool(rows[end]):
                end += 1
            keep[b, start:end] = mask[b, start:end]
        return (torch.where(keep, 10.0, -10.0) * self.scale)[:, None]


class VertKDTestStandInTrainer(nnUNetTrainer):
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision=True):
        return TopmostBoneNet()
'''


def plans_dict(spacing, patch_size, name="Dataset990_Tiny", arch=None):
    arch = arch or {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 2, "features_per_stage": [2, 4], "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]],
                        "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    resampling = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch_size), "median_image_size_in_voxels": [64, 64, 64],
            "spacing": list(spacing), "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": resampling,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg": resampling,
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": resampling,
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": arch, "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        # CTNormalization: clip to [-1024, 3071] and divide by 1000, so 0.2 = 200 HU
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3071.0, "mean": 0.0, "median": 0.0, "min": -1024.0, "percentile_00_5": -1024.0,
            "percentile_99_5": 3071.0, "std": 1000.0}},
    }


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=1))


def make_standin_vertebra_model(root, ext_dir, spacing=(2.0, 2.0, 2.0), patch_size=(32, 32, 32), fold="all"):
    """nnU-Net model folder of the stand-in vertebra model; returns its path. ``ext_dir`` gets the trainer."""
    Path(ext_dir).mkdir(parents=True, exist_ok=True)
    (Path(ext_dir) / "vertkd_test_standin.py").write_text(STANDIN_SOURCE)
    folder = Path(root) / "Dataset990_Tiny" / f"{STANDIN_TRAINER}__nnUNetPlans__3d_fullres"
    (folder / f"fold_{fold}").mkdir(parents=True)
    write_json(folder / "plans.json", plans_dict(spacing, patch_size))
    write_json(folder / "dataset.json", {
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "vertebra": 1}, "numTraining": 1,
        "file_ending": ".nii.gz", "vertkd": {"kind": "vertebrae", "orientation": "LPI", "spacing_mm": spacing[0]}})
    torch.save({"network_weights": {"scale": torch.ones(1)}, "trainer_name": STANDIN_TRAINER,
                "init_args": {"configuration": "3d_fullres", "fold": fold},
                "inference_allowed_mirroring_axes": (0, 1, 2),
                "vertkd": {"role": "vertebra", "patch_size": list(patch_size)}},
               folder / f"fold_{fold}" / "checkpoint_final.pth")
    return str(folder)


def make_untrained_spine_model(root, spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16)):
    """Stock nnUNetTrainer + tiny untrained PlainConvUNet, 2 classes: exercises the nnUNetPredictor path."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    folder = Path(root) / "Dataset991_TinySpine" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True)
    plans = plans_dict(spacing, patch_size, name="Dataset991_TinySpine")
    write_json(folder / "plans.json", plans)
    write_json(folder / "dataset.json", {
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "spine": 1}, "numTraining": 1,
        "file_ending": ".nii.gz", "vertkd": {"kind": "spine", "orientation": "LPI", "spacing_mm": spacing[0]}})
    torch.manual_seed(0)
    net = PlainConvUNet(1, 2, [2, 4], torch.nn.Conv3d, 3, [1, 2], [1, 1], 2, [1], True,
                        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                        {"inplace": True})
    with torch.no_grad():  # bias the "spine" logit up so that the untrained model finds a spine
        net.decoder.seg_layers[-1].bias[:] = torch.tensor([-1.0, 1.0])
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres", "fold": "all"},
                "inference_allowed_mirroring_axes": (0, 1, 2)},
               folder / "fold_all" / "checkpoint_final.pth")
    return str(folder)


def phantom(n_blocks=4, block_mm=10.0, gap_mm=6.0):
    """LPI phantom at 1 mm: body cylinder (40 HU) in air (-1000), ``n_blocks`` bone blocks (700 HU) stacked
    along the superior-inferior axis. Returns (ct image, label image with 1..n from the top)."""
    top_margin = 6
    nz = int(top_margin * 2 + n_blocks * block_mm + (n_blocks - 1) * gap_mm)
    ny, nx = 40, 44
    ct = np.full((nz, ny, nx), -1000, np.int16)
    yy, xx = np.mgrid[:ny, :nx]
    ct[:, ((yy - ny / 2) ** 2 / 18 ** 2 + (xx - nx / 2) ** 2 / 20 ** 2) <= 1] = 40
    lab = np.zeros(ct.shape, np.uint8)
    for b in range(n_blocks):  # LPI: k grows towards inferior, so index 0 is the top
        z0 = int(top_margin + b * (block_mm + gap_mm))
        lab[z0:z0 + int(block_mm), 20:32, 16:28] = b + 1
    ct[lab > 0] = 700
    img = sitk.GetImageFromArray(ct)
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # i -> L, j -> P, k -> I ("LPI")
    img.SetOrigin((-22.0, -20.0, 30.0))
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(img)
    return img, lab_img


def resample_onto(image, reference_size, spacing, direction, origin, default, nearest):
    ref = sitk.Image([int(s) for s in reference_size], image.GetPixelID())
    ref.SetSpacing(spacing)
    ref.SetDirection(direction)
    ref.SetOrigin(origin)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, ref, sitk.Transform(), interp, default, image.GetPixelID())


def grid_like(image, spacing, direction):
    """Size/origin for a grid of ``spacing`` and ``direction`` covering ``image``'s physical extent."""
    corners = []
    size = image.GetSize()
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k in (0, size[2] - 1):
                corners.append(image.TransformIndexToPhysicalPoint((i, j, k)))
    d = np.array(direction).reshape(3, 3)
    local = np.array(corners) @ d  # coordinates along the new axes
    lo, hi = local.min(0), local.max(0)
    new_size = np.ceil((hi - lo) / np.array(spacing)).astype(int) + 1
    origin = d @ lo
    return new_size, tuple(origin)


def set_env(monkeypatch, ext_dir):
    from nnunet_vertkd.ext_trainers_path import EXT_TRAINER_DIR
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(ext_dir), EXT_TRAINER_DIR]))
    monkeypatch.setenv("nnUNet_compile", "false")
    torch.set_num_threads(1)
