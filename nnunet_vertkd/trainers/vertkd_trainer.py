"""Base trainer of the vertebra step: CT + memory -> topmost vertebra not in memory (Serrador et al. 2024).

Every setting is a class attribute (docs/trainers.md lists them); variants are subclasses that change a few.
nnU-Net's own hyper-parameters that nnUNetTrainer.__init__ sets on the instance (num_epochs, initial_lr, ...)
are declared here as class attributes too and re-applied after nnU-Net's __init__.

Loss: Lessmann et al.'s loss fp_weight * FP + FN with border weights (gamma = 8, sigma = 6 mm); fp_weight
follows ``fp_weight_schedule(current_epoch, num_epochs)`` (0.1 -> 1). With deep supervision every output i gets
its own (nearest-exact downsampled) target and border-weight map and the terms are combined with nnU-Net's
weights (1/2^i, lowest resolution 0, normalised) -- ``losses.lessmann.deep_supervision_loss``. Distillation
(student trainers) adds ``kd_weight * KD`` computed on the full-resolution output only, in float32.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from torch import autocast
from torch import distributed as dist

from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context

from nnunet_vertkd.ct_padding import normalised_air_value
from nnunet_vertkd.model_contract import CHECKPOINT_KEY
from nnunet_vertkd.trainers.common import (
    apply_class_settings, orientation_axes, save_checkpoint_with_vertkd, to_builtin)
from nnunet_vertkd.trainers.data.dataloader import VertKDDataLoader
from nnunet_vertkd.trainers.data.transforms import AugmentationSettings
from nnunet_vertkd.trainers.data.vertebra_sampling import MEMORY_CLEANING_PROBABILITY
from nnunet_vertkd.trainers.losses.distillation import total_kd_loss
from nnunet_vertkd.trainers.losses.lessmann import (
    FP_WEIGHT_END, FP_WEIGHT_START, GAMMA, SIGMA_MM, deep_supervision_loss, fp_weight_schedule,
    lessmann_loss_from_logits, nnunet_deep_supervision_weights)
from nnunet_vertkd.trainers.network import (
    TEACHER_FEATURES, VertKDUNet, build_planned_network_with_memory, deep_supervision_scales)

#: per-epoch values logged next to nnU-Net's (one entry per epoch each)
EXTRA_LOG_KEYS = ("train_seg_losses", "train_kd_losses", "val_seg_losses", "val_kd_losses", "fp_weights")


class ConstantLRScheduler:
    """Keeps the learning rate at its initial value (the paper trains with a constant Adam learning rate);
    same ``step(epoch)`` interface as nnU-Net's PolyLRScheduler."""

    def __init__(self, optimizer, initial_lr: float):
        self.optimizer = optimizer
        self.initial_lr = initial_lr

    def step(self, current_step=None):
        for group in self.optimizer.param_groups:
            group["lr"] = self.initial_lr


class VertKDSegmentationLoss:
    """Lessmann loss over one output or a deep-supervision list. Call: (outputs, targets, weights, fp_weight)."""

    def __init__(self, ds_weights: Optional[np.ndarray] = None):
        self.ds_weights = ds_weights

    def __call__(self, outputs, targets, weights, fp_weight: float) -> torch.Tensor:
        return deep_supervision_loss(lessmann_loss_from_logits, outputs, targets, weights, self.ds_weights,
                                     fp_weight=fp_weight)

    def __repr__(self):
        return f"VertKDSegmentationLoss(lessmann, ds_weights={self.ds_weights})"


def freeze_unused_deep_supervision_heads(network: VertKDUNet) -> None:
    """Without deep supervision the lower-resolution 1x1x1 heads never get a gradient; DDP (no
    find_unused_parameters, as nnU-Net wraps it) fails on parameters that require grad but get none, so they
    are frozen. They stay in the state dict, so checkpoints load with deep supervision on or off."""
    for head in network.decoder.seg_layers[:-1]:
        head.requires_grad_(False)


class VertKDTrainerBase(nnUNetTrainer):
    # ---------------- model ----------------
    vertkd_role = "vertebra"
    #: "vertkd" = the paper's U-Net (network.VertKDUNet) with ``features``; "nnunet_planned" = the topology
    #: nnU-Net planned for the dataset with 2 inputs and 1 output
    network_topology = "vertkd"
    features = TEACHER_FEATURES
    #: input patch (voxels, preprocessed axis order); None = the planned patch size
    patch_size_voxels = (128, 128, 128)
    #: global batch size (split over GPUs under DDP); None = the planned batch size
    batch_size = 1
    # ---------------- data processing (paper: "problem-specific data processing") ----------------
    use_data_processing = True
    region_balancing = True
    memory_cleaning_probability = MEMORY_CLEANING_PROBABILITY
    #: maximum random translation of the patch centre from the target centroid, as a fraction of the patch
    max_translation_fraction = 0.5  # paper: +-64 voxels for 128^3
    # ---------------- augmentation (values defined once: data.transforms.AugmentationSettings) ----------------
    rotation_deg = AugmentationSettings.rotation_deg
    p_rotation = AugmentationSettings.p_rotation
    zoom_superior_inferior = AugmentationSettings.zoom_superior_inferior
    zoom_other = AugmentationSettings.zoom_other
    p_zoom = AugmentationSettings.p_zoom
    intensity_scale = AugmentationSettings.intensity_scale
    p_intensity_scale = AugmentationSettings.p_intensity_scale
    intensity_shift = AugmentationSettings.intensity_shift
    p_intensity_shift = AugmentationSettings.p_intensity_shift
    noise_variance = AugmentationSettings.noise_variance
    p_noise = AugmentationSettings.p_noise
    blur_sigma = AugmentationSettings.blur_sigma
    p_blur = AugmentationSettings.p_blur
    p_mirror_left_right = AugmentationSettings.p_mirror_left_right
    # ---------------- loss (the values are defined once, in losses.lessmann) ----------------
    border_gamma = GAMMA
    border_sigma_mm = SIGMA_MM
    fp_weight_start = FP_WEIGHT_START
    fp_weight_end = FP_WEIGHT_END
    # ---------------- optimisation (nnU-Net names) ----------------
    optimizer_name = "adam"
    adam_betas = (0.9, 0.999)
    lr_schedule = "constant"  # or "poly" (nnU-Net's PolyLRScheduler)
    grad_clip_norm = 12.0
    initial_lr = 1e-3
    weight_decay = 0.0
    num_epochs = 45
    num_iterations_per_epoch = 2814  # paper: 2814 samples per epoch after resampling, batch 1
    num_val_iterations_per_epoch = 50
    enable_deep_supervision = False
    save_every = 5
    oversample_foreground_percent = 0.0
    # ---------------- distillation (students override) ----------------
    distillation = None  # None | "soft_outputs" | "logits" | "logits_distmap"
    kd_temperature = 4.0
    kd_weight = 1.0
    #: add L_seg(y, y^) to the loss (False: distillation terms only, the paper's S_L / S_LW)
    use_ground_truth = True
    # ---------------- validation after training ----------------
    run_final_validation = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_class_settings(self)
        self.superior_axis, self.superior_at_low_index, self.left_right_axis = orientation_axes(
            dataset_json, self.plans_manager)
        planned = tuple(int(p) for p in self.configuration_manager.patch_size)
        self.patch_size = tuple(int(p) for p in (self.patch_size_voxels or planned))
        self.spacing_mm = tuple(float(s) for s in self.configuration_manager.spacing)
        self.teacher = None
        self.teacher_info = None
        self._ensure_log_keys()

    # ------------------------------------------------------------------ network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True):
        """2 inputs (CT, memory) -> 1 logit; ``num_input_channels``/``num_output_channels`` (the dataset's)
        are ignored on purpose (the model contract, docs/design.md)."""
        if cls.network_topology == "nnunet_planned":
            return build_planned_network_with_memory(plans_manager, configuration_manager, 2, 1,
                                                     enable_deep_supervision)
        network = VertKDUNet(2, 1, cls.features, deep_supervision=enable_deep_supervision)
        if not enable_deep_supervision:
            freeze_unused_deep_supervision_heads(network)
        return network

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        if self.network_topology == "vertkd":
            return deep_supervision_scales(len(self.features))
        return super()._get_deep_supervision_scales()

    def _set_batch_size_and_oversample(self):
        global_bs = int(type(self).batch_size or self.configuration_manager.batch_size)
        if self.is_ddp:
            world = dist.get_world_size()
            rank = dist.get_rank()
            per = [global_bs // world + (1 if r < global_bs % world else 0) for r in range(world)]
            self.batch_size = max(1, per[rank])
            if global_bs < world:
                self.print_to_log_file(f"batch_size {global_bs} < {world} GPUs: using 1 sample per GPU")
        else:
            self.batch_size = global_bs
        self.oversample_foreground_percent = 0.0

    # ------------------------------------------------------------------ loss / optimiser
    def _build_loss(self):
        ds_weights = None
        if self.enable_deep_supervision:
            n = len(self._get_deep_supervision_scales())
            ds_weights = nnunet_deep_supervision_weights(n, ddp_without_compile=self.is_ddp and not self._do_i_compile())
        return VertKDSegmentationLoss(ds_weights)

    def configure_optimizers(self):
        if self.optimizer_name == "adam":
            optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, betas=tuple(self.adam_betas),
                                         weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                        momentum=0.99, nesterov=True)
        if self.lr_schedule == "poly":
            from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
            scheduler = PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        else:
            scheduler = ConstantLRScheduler(optimizer, self.initial_lr)
        return optimizer, scheduler

    def current_fp_weight(self) -> float:
        return fp_weight_schedule(self.current_epoch, self.num_epochs, self.fp_weight_start, self.fp_weight_end)

    # ------------------------------------------------------------------ data
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """Only the left-right axis may be mirrored (training and test-time mirroring)."""
        mirror_axes = (self.left_right_axis,)
        self.inference_allowed_mirroring_axes = mirror_axes
        rotation = (-np.deg2rad(self.rotation_deg), np.deg2rad(self.rotation_deg))
        return rotation, False, self.patch_size, mirror_axes

    def augmentation_settings(self) -> AugmentationSettings:
        names = AugmentationSettings.__dataclass_fields__.keys()
        return AugmentationSettings(**{n: getattr(self, n) for n in names})

    def _make_loader(self, dataset, augment: bool) -> VertKDDataLoader:
        processing = bool(self.use_data_processing)
        return VertKDDataLoader(
            dataset, self.batch_size, self.patch_size, self.label_manager, self.superior_axis,
            self.superior_at_low_index, self.left_right_axis, self.spacing_mm,
            memory_cleaning_probability=self.memory_cleaning_probability if processing else 0.0,
            balance_regions=bool(self.region_balancing and processing and augment),
            max_translation_voxels=[self.max_translation_fraction * p for p in self.patch_size],
            augment=augment, augmentation=self.augmentation_settings(),
            deep_supervision_scales=self._get_deep_supervision_scales(), border_gamma=self.border_gamma,
            border_sigma_mm=self.border_sigma_mm,
            ct_pad_value=normalised_air_value(self.plans_manager, self.configuration_manager))

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        dl_tr = self._make_loader(dataset_tr, augment=True)
        dl_val = self._make_loader(dataset_val, augment=False)
        self.print_to_log_file(
            f"VertKD sampling: {len(dl_tr.sampler)} training (case, vertebra) pairs, expected region frequencies "
            f"{ {k: round(v, 3) for k, v in dl_tr.sampler.region_frequencies().items()} }, memory cleaning "
            f"p={dl_tr.placement.memory_cleaning_probability:.3f}, patch {self.patch_size}, superior axis "
            f"{self.superior_axis} (superior at low index: {self.superior_at_low_index}), left-right axis "
            f"{self.left_right_axis}")
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            mt_train, mt_val = SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
        else:
            pin = self.device.type == 'cuda'
            mt_train = NonDetMultiThreadedAugmenter(dl_tr, None, n_proc, max(6, n_proc // 2), None, pin, 0.002)
            mt_val = NonDetMultiThreadedAugmenter(dl_val, None, max(1, n_proc // 2), max(3, n_proc // 4), None, pin,
                                                  0.002)
        _ = next(mt_train)
        _ = next(mt_val)
        return mt_train, mt_val

    # ------------------------------------------------------------------ steps
    def _to_device(self, x):
        if isinstance(x, list):
            return [i.to(self.device, non_blocking=True) for i in x]
        return x.to(self.device, non_blocking=True)

    def _autocast(self):
        return autocast(self.device.type, enabled=True) if self.device.type == 'cuda' else dummy_context()

    def compute_distillation_loss(self, data, output, weights, fp_weight) -> Optional[torch.Tensor]:
        """KD term of the batch (students); None without a teacher. Called inside the autocast context."""
        return None

    def _losses(self, batch: dict):
        data = self._to_device(batch["data"])
        target = self._to_device(batch["target"])
        weights = self._to_device(batch["weights"])
        fp_weight = self.current_fp_weight()
        with self._autocast():
            output = self.network(data)
            seg = self.loss(output, target, weights, fp_weight)
            kd = self.compute_distillation_loss(data, output, weights, fp_weight)
        total = total_kd_loss(seg, kd, self.kd_weight, self.use_ground_truth)
        return output, target, total, seg, kd

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        _, _, total, seg, kd = self._losses(batch)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            self.optimizer.step()
        return {"loss": total.detach().cpu().numpy(), "seg_loss": seg.detach().cpu().numpy(),
                "kd_loss": np.array(0.0 if kd is None else kd.detach().cpu().item())}

    def validation_step(self, batch: dict) -> dict:
        output, target, total, seg, kd = self._losses(batch)
        if isinstance(output, (list, tuple)):
            output, target = output[0], target[0]
        pred = (output.float() > 0).float()  # sigmoid > 0.5
        tgt = (target > 0.5).float()
        tp = (pred * tgt).sum().detach().cpu().numpy()[None]
        fp = (pred * (1 - tgt)).sum().detach().cpu().numpy()[None]
        fn = ((1 - pred) * tgt).sum().detach().cpu().numpy()[None]
        return {"loss": total.detach().cpu().numpy(), "tp_hard": tp, "fp_hard": fp, "fn_hard": fn,
                "seg_loss": seg.detach().cpu().numpy(),
                "kd_loss": np.array(0.0 if kd is None else kd.detach().cpu().item())}

    # ------------------------------------------------------------------ logging
    def _ensure_log_keys(self):
        logs = self.logger.local_logger.my_fantastic_logging
        n = len(logs.get("train_losses", []))
        for key in EXTRA_LOG_KEYS:
            if key not in logs:
                logs[key] = [float("nan")] * n

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self._ensure_log_keys()

    def _mean_over_workers(self, values) -> float:
        if self.is_ddp:
            gathered = [None for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, values)
            return float(np.mean(np.concatenate([np.atleast_1d(g) for g in gathered])))
        return float(np.mean(values))

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        self.logger.log("train_seg_losses", self._mean_over_workers(outputs["seg_loss"]), self.current_epoch)
        self.logger.log("train_kd_losses", self._mean_over_workers(outputs["kd_loss"]), self.current_epoch)
        self.logger.log("fp_weights", self.current_fp_weight(), self.current_epoch)

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        outputs = collate_outputs(val_outputs)
        self.logger.log("val_seg_losses", self._mean_over_workers(outputs["seg_loss"]), self.current_epoch)
        self.logger.log("val_kd_losses", self._mean_over_workers(outputs["kd_loss"]), self.current_epoch)

    def on_epoch_end(self):
        get = self.logger.get_value
        self.print_to_log_file(
            f"train_seg_loss {get('train_seg_losses', step=-1):.4f} train_kd_loss {get('train_kd_losses', step=-1):.4f} "
            f"val_seg_loss {get('val_seg_losses', step=-1):.4f} val_kd_loss {get('val_kd_losses', step=-1):.4f} "
            f"fp_weight {get('fp_weights', step=-1):.4f}")
        super().on_epoch_end()

    # ------------------------------------------------------------------ checkpoints / validation
    def vertkd_checkpoint_entry(self) -> dict:
        entry = {
            "role": self.vertkd_role,
            "patch_size": [int(p) for p in self.patch_size],
            "features": list(self.features) if self.network_topology == "vertkd" else None,
            "network_topology": self.network_topology,
            "superior_axis": int(self.superior_axis),
            "superior_at_low_index": bool(self.superior_at_low_index),
            "left_right_axis": int(self.left_right_axis),
            "num_input_channels": 2,
            "num_output_channels": 1,
            "spacing_mm": list(self.spacing_mm),
            "distillation": self.distillation,
        }
        if self.teacher_info is not None:
            entry["teacher"] = {k: v for k, v in self.teacher_info.items() if k != CHECKPOINT_KEY}
        return to_builtin(entry)

    def save_checkpoint(self, filename: str) -> None:
        save_checkpoint_with_vertkd(self, filename, self.vertkd_checkpoint_entry())

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Iterative top-down segmentation of every validation case (``validation.run_iterative_validation``);
        replaces nnU-Net's sliding-window validation, which cannot feed the memory channel."""
        if not self.run_final_validation:
            self.print_to_log_file("Final validation disabled (run_final_validation = False)")
            return
        from nnunet_vertkd.trainers.validation import run_iterative_validation
        run_iterative_validation(self)
