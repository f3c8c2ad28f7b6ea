"""Evidence model of the anatomical labels: a per-vertebra classifier trained with the stock ``nnUNetv2_train``.

    nnUNetv2_train 501 3d_fullres 0 -tr VertKDLabelTrainer          # on the plugin's vertebra dataset
    nnUNetv2_train 501 3d_fullres 0 -tr VertKDLabelTrainer_cpu      # short CPU schedule (minutes)

One sample = one (case, vertebra) pair of the vertebra dataset: a cube of ``field_of_view_mm`` around the
vertebra's centre of mass (CT + that vertebra's mask, ``nnunet_vertkd.labelling.evidence.extract_patch``), target
= its consecutive label (1 = C1 ... 26 = L6) - 1; loss cross-entropy; network
``nnunet_vertkd.labelling.evidence.VertebraLabelNet``. Pairs are drawn uniformly (every vertebra of the training
cases equally often); the label frequencies of the pairs are stored in the checkpoint (``vertkd.label_prior``)
so that the decoder can turn the classifier's posteriors into likelihoods. Augmentation: translation, left-right
mirroring, intensity scale/shift, noise, a one-voxel dilation or erosion of the mask channel (inference
gives it predicted masks), and tight crops like VerSe's (outside a random half-width around the vertebra the CT
becomes outside-the-volume).

The final validation (``perform_actual_validation``) labels every vertebra of every validation case: per-vertebra
accuracy of the classifier alone and of the whole-scan decoder, and scans shifted as a whole, written to
``fold_X/validation_labels.json``.

All settings are class attributes (docs/trainers.md); ``__init__`` keeps nnU-Net's five arguments.
``$VERTKD_NUM_THREADS`` limits torch's CPU threads (as for the CPU recipe's trainers).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
import torch
from scipy import ndimage
from torch import autocast, nn

from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context

from nnunet_vertkd.ct_padding import normalised_air_value
from nnunet_vertkd.labelling.decoder import STATES, decode_labels
from nnunet_vertkd.labelling.evidence import (N_CLASSES, VertebraLabelNet, extract_patch, likelihood_prior,
                                              patch_size_for, predict_probabilities, vertebra_centres)
from nnunet_vertkd.model_contract import CHECKPOINT_KEY
from nnunet_vertkd.trainers.common import (apply_class_settings, orientation_axes, save_checkpoint_with_vertkd,
                                           to_builtin, unwrap_network)
from nnunet_vertkd.trainers.seeding import apply_threads_from_env

#: vertebra labels of the consecutive dataset numbering
MAX_LABEL = N_CLASSES


class LabelSampleLoader:
    """Iterator of batches {"data": (B, 2, *patch), "target": (B,) long, "keys", "labels"} from an nnU-Net dataset;
    every case is loaded once and kept in memory (the label datasets are small: 2-4 mm)."""

    def __init__(self, dataset, batch_size: int, patch_size, pad_value: float, spacing_mm, left_right_axis: int,
                 augment: bool, settings: dict, seed: int = 0, superior_axis: int = 0):
        self.batch_size = int(batch_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.pad_value = float(pad_value)
        self.spacing_mm = np.asarray(spacing_mm, dtype=float)
        self.left_right_axis = int(left_right_axis)
        self.anterior_posterior_axis = 3 - int(left_right_axis) - int(superior_axis)
        self.augment = bool(augment)
        self.s = settings
        self.rng = np.random.default_rng(seed)
        self.cases: Dict[str, tuple] = {}
        self.pairs: List[tuple] = []
        for key in dataset.identifiers:
            data, seg, _, _ = dataset.load_case(key)
            ct = np.asarray(data[0], dtype=np.float32)
            s = np.asarray(seg[0]).astype(np.int16)
            labels = [int(v) for v in np.unique(s) if 1 <= v <= MAX_LABEL]
            centres = vertebra_centres(s, labels)
            self.cases[key] = (ct, s, centres)
            self.pairs += [(key, lab) for lab in sorted(centres)]
        if not self.pairs:
            raise RuntimeError("no vertebra in the dataset cases")
        self._cursor = 0

    def label_frequencies(self) -> np.ndarray:
        f = np.zeros(N_CLASSES)
        for _, lab in self.pairs:
            f[lab - 1] += 1
        return f / f.sum()

    def sample(self, key: str, label: int) -> np.ndarray:
        ct, seg, centres = self.cases[key]
        shift = (0, 0, 0)
        if self.augment:
            max_shift = np.floor(self.s["translation_mm"] / self.spacing_mm).astype(int)
            shift = tuple(int(self.rng.integers(-m, m + 1)) for m in max_shift)
        x = extract_patch(ct, seg, label, centres[label], self.patch_size, self.pad_value, shift)
        if not self.augment:
            return x
        rng = self.rng
        if rng.random() < self.s["p_crop"]:
            self._crop_like_verse(x, shift, rng)
        if rng.random() < self.s["p_mirror"]:
            x = np.flip(x, axis=1 + self.left_right_axis).copy()
        if rng.random() < self.s["p_intensity"]:
            x[0] = x[0] * rng.uniform(*self.s["intensity_scale"]) + rng.uniform(*self.s["intensity_shift"])
        if rng.random() < self.s["p_noise"]:
            x[0] += rng.normal(0.0, rng.uniform(0.0, self.s["noise_std"]), x[0].shape).astype(np.float32)
        r = rng.random()
        if r < self.s["p_mask_dilate"]:
            x[1] = ndimage.binary_dilation(x[1] > 0.5)
        elif r < self.s["p_mask_dilate"] + self.s["p_mask_erode"]:
            eroded = ndimage.binary_erosion(x[1] > 0.5)
            if eroded.any():
                x[1] = eroded
        return x

    def _crop_like_verse(self, x: np.ndarray, shift, rng) -> None:
        """Simulate a scan cropped tightly around the spine (many VerSe scans are): everything farther than a random
        half-width from the vertebra along the left-right axis (and, half of the time, the anterior-posterior one)
        becomes outside-the-volume (pad value, no mask), so that a tight crop is no cue for any label."""
        axes = [(self.left_right_axis, self.s["crop_half_width_mm"])]
        if rng.random() < 0.5:
            axes.append((self.anterior_posterior_axis, self.s["crop_half_width_ap_mm"]))
        for ax, (lo_mm, hi_mm) in axes:
            n = x.shape[1 + ax]
            centre = n // 2 - shift[ax]
            half = rng.uniform(lo_mm, hi_mm) / self.spacing_mm[ax]
            a, b = int(round(centre - half)), int(round(centre + half))
            idx = [slice(None)] * 3
            if a > 0:
                idx[ax] = slice(0, a)
                x[(slice(None), *idx)] = 0.0
                x[(0, *idx)] = self.pad_value
            if b < n:
                idx[ax] = slice(max(b, 0), n)
                x[(slice(None), *idx)] = 0.0
                x[(0, *idx)] = self.pad_value

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.augment:
            idx = self.rng.integers(0, len(self.pairs), self.batch_size)
        else:  # validation: cycle deterministically over every pair
            idx = [(self._cursor + i) % len(self.pairs) for i in range(self.batch_size)]
            self._cursor = (self._cursor + self.batch_size) % len(self.pairs)
        chosen = [self.pairs[int(i)] for i in idx]
        data = np.stack([self.sample(k, lab) for k, lab in chosen])
        return {"data": torch.from_numpy(data), "target": torch.tensor([lab - 1 for _, lab in chosen]),
                "keys": [k for k, _ in chosen], "labels": [lab for _, lab in chosen]}


class VertKDLabelTrainer(nnUNetTrainer):
    vertkd_role = "label"
    features = (16, 32, 64, 96)
    dropout = 0.2
    #: edge of the cube around each vertebra, in mm (converted to voxels of the dataset's spacing)
    field_of_view_mm = 144.0
    batch_size = 16
    initial_lr = 1e-3
    weight_decay = 1e-4
    num_epochs = 100
    num_iterations_per_epoch = 100
    num_val_iterations_per_epoch = 10
    save_every = 10
    enable_deep_supervision = False
    oversample_foreground_percent = 0.0
    # augmentation
    translation_mm = 9.0
    p_mirror = 0.5
    p_intensity = 0.5
    intensity_scale = (0.85, 1.15)
    intensity_shift = (-0.15, 0.15)
    p_noise = 0.2
    noise_std = 0.1
    p_mask_dilate = 0.15
    p_mask_erode = 0.15
    #: tight crops like VerSe's (the real training crops are all lumbar: without this a crop reads as "lumbar")
    p_crop = 0.5
    crop_half_width_mm = (40.0, 80.0)
    crop_half_width_ap_mm = (50.0, 90.0)
    label_seed = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_class_settings(self)
        apply_threads_from_env()  # on a shared machine 1 thread is ~10x faster than every core
        self.superior_axis, self.superior_at_low_index, self.left_right_axis = orientation_axes(
            dataset_json, self.plans_manager)
        self.spacing_mm = tuple(float(s) for s in self.configuration_manager.spacing)
        self.patch_size = patch_size_for(self.spacing_mm, self.field_of_view_mm)
        self.label_prior = None

    # ------------------------------------------------------------------ network / loss / optimiser
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True):
        """CT + vertebra mask -> 26 label logits; the dataset's channel and class counts are ignored on purpose."""
        return VertebraLabelNet(2, N_CLASSES, cls.features, cls.dropout)

    def _set_batch_size_and_oversample(self):
        self.batch_size = int(type(self).batch_size)
        self.oversample_foreground_percent = 0.0

    def _get_deep_supervision_scales(self):
        return None

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # no decoder, no deep supervision

    def _build_loss(self):
        return nn.CrossEntropyLoss()

    def configure_optimizers(self):
        from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def plot_network_architecture(self):
        pass

    # ------------------------------------------------------------------ data
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        self.inference_allowed_mirroring_axes = (self.left_right_axis,)
        return (0.0, 0.0), False, self.patch_size, (self.left_right_axis,)

    def _augmentation_settings(self) -> dict:
        names = ("translation_mm", "p_mirror", "p_intensity", "intensity_scale", "intensity_shift", "p_noise",
                 "noise_std", "p_mask_dilate", "p_mask_erode", "p_crop", "crop_half_width_mm",
                 "crop_half_width_ap_mm")
        return {n: getattr(self, n) for n in names}

    def _loader(self, dataset, augment: bool, seed: int) -> LabelSampleLoader:
        return LabelSampleLoader(dataset, self.batch_size, self.patch_size,
                                 normalised_air_value(self.plans_manager, self.configuration_manager),
                                 self.spacing_mm, self.left_right_axis, augment, self._augmentation_settings(), seed,
                                 self.superior_axis)

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        dl_tr = self._loader(dataset_tr, True, self.label_seed)
        dl_val = self._loader(dataset_val, False, self.label_seed + 1)
        self.label_prior = dl_tr.label_frequencies()
        self.print_to_log_file(f"VertKD labels: {len(dl_tr.pairs)} training and {len(dl_val.pairs)} validation "
                               f"vertebrae, patch {self.patch_size} at {self.spacing_mm} mm")
        return dl_tr, dl_val

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        return autocast(self.device.type, enabled=True) if self.device.type == 'cuda' else dummy_context()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.network(data).float(), target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        with self._autocast():
            logits = self.network(data).float()
            loss = self.loss(logits, target)
        correct = (logits.argmax(1) == target).float().sum().cpu().numpy()
        return {"loss": loss.detach().cpu().numpy(), "correct": np.array([correct]),
                "n": np.array([float(len(target))])}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        out = collate_outputs(val_outputs)
        accuracy = float(np.sum(out["correct"]) / max(1.0, np.sum(out["n"])))
        # nnU-Net's logger, progress plot and best-checkpoint logic read 'mean_fg_dice': the accuracy stands in
        self.logger.log('mean_fg_dice', accuracy, self.current_epoch)
        self.logger.log('dice_per_class_or_region', [accuracy], self.current_epoch)
        self.logger.log('val_losses', float(np.mean(out["loss"])), self.current_epoch)

    # ------------------------------------------------------------------ checkpoints / validation
    def vertkd_checkpoint_entry(self) -> dict:
        return to_builtin({
            "role": self.vertkd_role, "patch_size": list(self.patch_size), "features": list(self.features),
            "dropout": float(self.dropout), "field_of_view_mm": float(self.field_of_view_mm),
            "spacing_mm": list(self.spacing_mm), "superior_axis": int(self.superior_axis),
            "superior_at_low_index": bool(self.superior_at_low_index), "left_right_axis": int(self.left_right_axis),
            "num_input_channels": 2, "num_output_channels": N_CLASSES, "classes_verse": list(STATES),
            "label_prior": None if self.label_prior is None else [float(v) for v in self.label_prior],
        })

    def save_checkpoint(self, filename: str) -> None:
        save_checkpoint_with_vertkd(self, filename, self.vertkd_checkpoint_entry())

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        ckpt = filename_or_checkpoint
        if isinstance(ckpt, str):
            ckpt = torch.load(ckpt, map_location=self.device, weights_only=False)
        prior = (ckpt.get(CHECKPOINT_KEY) or {}).get("label_prior")
        if prior is not None:
            self.label_prior = np.asarray(prior)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Label every vertebra of every validation case (no augmentation): classifier accuracy, decoded accuracy,
        scans shifted as a whole -> validation_labels.json."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        _, dataset_val = self.get_tr_and_val_datasets()
        loader = self._loader(dataset_val, False, 0)
        network = unwrap_network(self)
        prior = self.label_prior if self.label_prior is not None else None
        report = validate_label_model(network, loader, self.device, self.left_right_axis, prior)
        with open(os.path.join(self.output_folder, "validation_labels.json"), "w") as f:
            json.dump(report, f, indent=1)
        self.print_to_log_file(f"label validation: classifier accuracy {report['classifier_accuracy']:.4f}, decoded "
                               f"accuracy {report['decoded_accuracy']:.4f}, scans with every label right "
                               f"{report['n_scans_all_right']}/{report['n_scans']}")


def validate_label_model(network, loader: LabelSampleLoader, device, left_right_axis, label_prior) -> dict:
    """Per-case labelling of a loader's cases with the classifier alone and with the decoder."""
    per_case = {}
    n = n_cls = n_dec = 0
    for key, (ct, seg, centres) in loader.cases.items():
        labels = sorted(centres)  # consecutive labels: sorted = top-down
        if not labels:
            continue
        patches = np.stack([extract_patch(ct, seg, lab, centres[lab], loader.patch_size, loader.pad_value)
                            for lab in labels])
        probs = predict_probabilities(network, patches, device, left_right_axis)
        truth = [STATES[lab - 1] for lab in labels]
        cls = [STATES[int(i)] for i in probs.argmax(1)]
        dec = decode_labels(probs, label_prior=None if label_prior is None else likelihood_prior(label_prior))
        right_cls = sum(a == b for a, b in zip(cls, truth))
        right_dec = sum(a == b for a, b in zip(dec.labels, truth))
        n += len(labels)
        n_cls += right_cls
        n_dec += right_dec
        per_case[key] = {"truth": truth, "classifier": cls, "decoded": dec.labels,
                         "probabilities": [round(v.probability, 4) for v in dec.vertebrae],
                         "sequence_probability": round(dec.sequence_probability, 4), "flags": dec.flags}
    return {"n_vertebrae": n, "n_scans": len(per_case),
            "classifier_accuracy": n_cls / max(1, n), "decoded_accuracy": n_dec / max(1, n),
            "n_scans_all_right": sum(c["truth"] == c["decoded"] for c in per_case.values()), "cases": per_case}


class VertKDLabelTrainer_cpu(VertKDLabelTrainer):
    """Short CPU schedule for a shared 2-core machine: a narrower network (8-16-32-64, 0.22 M parameters)
    and 45 epochs x 20 batches of 16 (14400 vertebra samples; about 25 min with 1 thread on a busy 2-core machine)."""
    features = (8, 16, 32, 64)
    num_epochs = 45
    num_iterations_per_epoch = 20
    num_val_iterations_per_epoch = 2
    save_every = 4
    initial_lr = 3e-3


class VertKDLabelTrainer_debug(VertKDLabelTrainer):
    """Smoke-test schedule (tests): 2 epochs x 2 batches of 4."""
    features = (8, 16, 16, 16)
    batch_size = 4
    num_epochs = 2
    num_iterations_per_epoch = 2
    num_val_iterations_per_epoch = 1
    save_every = 1
