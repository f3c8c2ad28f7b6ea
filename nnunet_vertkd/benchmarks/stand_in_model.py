"""Stand-in nnU-Net model folders: a vertebra "model" without weights and a tiny untrained spine model.

Used by the memory benchmark (``nnunet_vertkd.benchmarks.memory``) and the inference tests
(``tests/helpers/stand_in_model.py``). The vertebra model is a real nnU-Net results folder (dataset.json,
plans.json, fold_X/checkpoint_final.pth) whose trainer (written into an ``nnUNet_extTrainer`` folder of the
caller's) builds a deterministic network: it returns the topmost slab of bone (> 400 HU) that is not in memory,
i.e. what a perfect vertebra model returns on a phantom of separated bone blocks, with negligible activations.
The spine model is a stock ``nnUNetTrainer`` folder with an untrained tiny ``PlainConvUNet`` (its "spine" logit
biased up), which exercises the ``nnUNetPredictor`` route.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from nnunet_vertkd.benchmarks.dataset_json import write_dataset_json
from nnunet_vertkd.model_contract import CHECKPOINT_KEY

STANDIN_TRAINER = "VertKDStandInTrainer"
STANDIN_TRAINER_FILE = "vertkd_standin_trainer.py"
VERTEBRA_DATASET_NAME = "Dataset990_Tiny"
SPINE_DATASET_NAME = "Dataset991_TinySpine"
#: CTNormalization of the plans below: clip to [-1024, 3071] HU, then divide by 1000 (0.4 = 400 HU)
BONE_THRESHOLD_NORMALISED = 0.4

STANDIN_SOURCE = '''
import torch
from torch import nn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class TopmostBoneNet(nn.Module):
    """(B, 2, X, Y, Z) -> (B, 1, X, Y, Z) logits: topmost bone slab along axis 0 (index 0 = superior)."""

    def __init__(self, threshold=%(threshold)r):
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
            start = end = int(idx[0])
            while end < rows.numel() and bool(rows[end]):
                end += 1
            keep[b, start:end] = mask[b, start:end]
        return (torch.where(keep, 10.0, -10.0) * self.scale)[:, None]


class %(trainer)s(nnUNetTrainer):
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision=True):
        return TopmostBoneNet()
''' % {"threshold": BONE_THRESHOLD_NORMALISED, "trainer": STANDIN_TRAINER}

TINY_UNET_ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {"n_stages": 2, "features_per_stage": [2, 4], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]],
                    "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                    "nonlin_kwargs": {"inplace": True}},
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def plans_dict(spacing: Sequence[float], patch_size: Sequence[int], name: str = VERTEBRA_DATASET_NAME,
               arch: Optional[dict] = None) -> dict:
    """nnU-Net plans (3d_fullres only) of a stand-in model: ``spacing`` mm, ``patch_size`` voxels, ``arch``
    (default: the tiny PlainConvUNet), CT normalisation that maps 1000 HU to 1."""
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
            "architecture": arch or TINY_UNET_ARCHITECTURE, "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3071.0, "mean": 0.0, "median": 0.0, "min": -1024.0, "percentile_00_5": -1024.0,
            "percentile_99_5": 3071.0, "std": 1000.0}},
    }


def write_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=1))


def write_standin_trainer(ext_dir) -> Path:
    """The stand-in trainer as a module in ``ext_dir`` (to be put on ``nnUNet_extTrainer``)."""
    Path(ext_dir).mkdir(parents=True, exist_ok=True)
    path = Path(ext_dir) / STANDIN_TRAINER_FILE
    path.write_text(STANDIN_SOURCE)
    return path


def make_standin_vertebra_model(root, ext_dir, spacing=(2.0, 2.0, 2.0), patch_size=(32, 32, 32), fold="all",
                                dataset_name: str = VERTEBRA_DATASET_NAME) -> str:
    """nnU-Net model folder of the stand-in vertebra model under ``root``; returns its path. ``ext_dir`` gets the
    trainer."""
    import torch
    write_standin_trainer(ext_dir)
    folder = Path(root) / dataset_name / f"{STANDIN_TRAINER}__nnUNetPlans__3d_fullres"
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    write_json(folder / "plans.json", plans_dict(spacing, patch_size, dataset_name))
    write_dataset_json(folder, {"background": 0, "vertebra": 1}, "vertebrae", spacing_mm=spacing[0])
    torch.save({"network_weights": {"scale": torch.ones(1)}, "trainer_name": STANDIN_TRAINER,
                "init_args": {"configuration": "3d_fullres", "fold": fold},
                "inference_allowed_mirroring_axes": (0, 1, 2),
                CHECKPOINT_KEY: {"role": "vertebra", "patch_size": list(patch_size)}},
               folder / f"fold_{fold}" / "checkpoint_final.pth")
    return str(folder)


def make_untrained_spine_model(root, spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16),
                               dataset_name: str = SPINE_DATASET_NAME) -> str:
    """Stock nnUNetTrainer + tiny untrained PlainConvUNet, 2 classes, its "spine" logit biased up so that the
    untrained model finds a spine; returns the model folder."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    folder = Path(root) / dataset_name / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    write_json(folder / "plans.json", plans_dict(spacing, patch_size, dataset_name))
    write_dataset_json(folder, {"background": 0, "spine": 1}, "spine", spacing_mm=spacing[0])
    torch.manual_seed(0)
    net = PlainConvUNet(1, 2, [2, 4], torch.nn.Conv3d, 3, [1, 2], [1, 1], 2, [1], True,
                        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                        {"inplace": True})
    with torch.no_grad():
        net.decoder.seg_layers[-1].bias[:] = torch.tensor([-1.0, 1.0])
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres", "fold": "all"},
                "inference_allowed_mirroring_axes": (0, 1, 2)},
               folder / "fold_all" / "checkpoint_final.pth")
    return str(folder)
