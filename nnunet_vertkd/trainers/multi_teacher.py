"""Multi-teacher adaptive distillation (Ben Loussaief et al.) as nnU-Net student trainers.

Teachers: the models of several folds of the same dataset, plans and configuration, trained with the stock
``nnUNetv2_train D 3d_fullres F -tr VertKDTeacherTrainer`` (``teacher_trainer_name``; folds ``teacher_folds``), or
the explicit list ``$VERTKD_TEACHERS`` (found by ``teacher_ensemble``). A missing teacher stops the student before
any data loading with a message that lists the teachers found, the ones missing and the commands that train them
(``require_all_teachers``).

Every training step runs each teacher (frozen, eval mode, torch.no_grad, same batch, device and autocast), then
    L = Seg + mt_alpha * Mid + mt_beta * KL             (Eq. 6 of Ben Loussaief et al., alpha = beta = 0.1)
with the per-input adaptive teacher weights, the binary KL on temperature-softened outputs and the intermediate
terms (attention transfer + region contrast on the last encoder and decoder feature maps, through 1x1x1 adapters
where the channel counts differ) of ``losses.multi_teacher`` (formulas and the choices made there). The adapters
are training-only modules with their own optimiser (same kind and learning rate as the network's); they are
saved in the training checkpoints under ``ADAPTER_CHECKPOINT_KEY`` (restored by ``--c``) but are not part of the
network's weights, so the student checkpoint is an ordinary student for ``vertkd_predict``.

Logged per epoch (training log): per-step time (mean / max), the teachers' forward time per step, peak memory
(CUDA: max allocated per step; CPU: peak resident memory of the process), the mean adaptive weight of each
teacher, Mid and KL. nnU-Net's ``train_kd_losses`` holds alpha * Mid + beta * KL.

Note on folds: the teacher of fold k != F was trained on the validation cases of fold F, so the student's fold-F
validation is optimistic; evaluate multi-teacher students on held-out scans (as ``vertkd_benchmark study`` does).
"""
from __future__ import annotations

import os
import resource
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from nnunet_vertkd.model_contract import CHECKPOINT_KEY
from nnunet_vertkd.trainers.common import save_checkpoint_with_vertkd, unwrap_network
from nnunet_vertkd.trainers.cpu_recipe import VertKDStudentTrainer_cpu2mm
from nnunet_vertkd.trainers.feature_recording import (  # noqa: F401  (re-exported)
    FEATURE_LAYERS, FeatureRecorder, feature_layer_modules)
from nnunet_vertkd.trainers.losses.multi_teacher import (
    adaptive_teacher_weights, feature_adapter, mid_loss_per_sample, multi_teacher_kl_loss, weighted_teacher_mean)
from nnunet_vertkd.trainers.student import VertKDStudentTrainer
from nnunet_vertkd.trainers.teacher_discovery import TEACHER_ENV, TeacherNotFoundError, load_teacher_network
from nnunet_vertkd.trainers.teacher_ensemble import (  # noqa: F401  (re-exported)
    TEACHERS_ENV, describe_teachers, find_fold_teacher_checkpoints)
from nnunet_vertkd.trainers.variants import VertKDStudentTrainer_debug

ADAPTER_CHECKPOINT_KEY = "vertkd_multi_teacher_adapters"


def _memory_mb(device: torch.device) -> Tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20, "CUDA max allocated in the step"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "peak RSS of the process"


# ------------------------------------------------------------------------------------------- trainer
class MultiTeacherDistillationMixin:
    """The multi-teacher logic; put it before a student trainer class in the bases (module docstring)."""
    distillation = "multi_teacher"
    #: folds whose ``teacher_trainer_name`` models are the teachers (nnU-Net's 5 folds)
    teacher_folds = (0, 1, 2, 3, 4)
    #: stop when a listed teacher is missing; False: go on with the ones found (at least ``min_teachers``)
    require_all_teachers = True
    min_teachers = 2
    #: "dice" (w = Dice / sum Dice: the better teacher on the input weighs more), "dice_loss_printed" (Ben
    #: Loussaief et al.'s formula as printed: w = Dice loss / sum), "equal"
    mt_weighting = "dice"
    mt_dice_smooth = 1.0
    mt_alpha = 0.1  # Mid
    mt_beta = 0.1  # KL
    mt_kl_direction = "teacher_student"  # KL(teachers || student); "student_teacher" = Eq. 2 as printed
    mt_attention_transfer = True
    mt_region_contrast = True
    #: 1x1x1 adapters on the student's feature maps where the channel counts differ
    mt_adapters = True
    # kd_temperature (T of the KL) and kd_weight (1: the KD term is already mt_alpha * Mid + mt_beta * KL) are
    # VertKDTrainerBase's

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.teachers: List[nn.Module] = []
        self.teacher_infos: List[dict] = []
        self._teacher_recorders: List[FeatureRecorder] = []
        self._student_recorder: Optional[FeatureRecorder] = None
        self.feature_adapters = nn.ModuleDict()
        self._adapter_channels: Dict[str, List[int]] = {}
        self.adapter_optimizer: Optional[torch.optim.Optimizer] = None
        self._pending_adapter_state: Optional[dict] = None
        self._mt_target = None
        self._mt_in_train_step = False
        self._mt_step: dict = {}
        self._mt_epoch_stats: List[dict] = []

    # ------------------------------------------------------------------ teachers
    def _do_i_compile(self):
        return False  # forward hooks on the student's feature layers

    def on_train_start(self):
        if not self.teachers:
            self.load_teacher()
        super().on_train_start()
        self._student_recorder = FeatureRecorder(unwrap_network(self))
        if self._pending_adapter_state is not None:
            self._restore_adapters(self._pending_adapter_state)
            self._pending_adapter_state = None

    def load_teacher(self):
        if os.environ.get(TEACHER_ENV, "").strip() and not os.environ.get(TEACHERS_ENV, "").strip():
            self.print_to_log_file(f"Note: {TEACHER_ENV} is ignored by the multi-teacher student; use {TEACHERS_ENV}")
        pm = self.plans_manager
        found, missing = find_fold_teacher_checkpoints(
            os.environ.get("nnUNet_results"), pm.dataset_name, pm.plans_name, self.configuration_name,
            self.teacher_folds, self.teacher_trainer_name)
        report = describe_teachers(found, missing, pm.dataset_name, pm.plans_name, self.configuration_name,
                                   self.teacher_trainer_name, self.teacher_folds)
        if (missing and self.require_all_teachers) or len(found) < max(1, int(self.min_teachers)):
            raise TeacherNotFoundError(
                report + f"\n({type(self).__name__}: require_all_teachers={self.require_all_teachers}, "
                         f"min_teachers={self.min_teachers})")
        self.print_to_log_file(report)
        self.teachers, self.teacher_infos, self._teacher_recorders = [], [], []
        for label, path in found:
            network, info = load_teacher_network(path, self.device)
            info["label"] = label
            self.teachers.append(network)
            self.teacher_infos.append(info)
            self._teacher_recorders.append(FeatureRecorder(network))
        self.teacher = self.teachers  # non-None: VertKDStudentTrainer does not load a single teacher
        self.print_to_log_file(
            f"Multi-teacher: {len(self.teachers)} teachers, weighting {self.mt_weighting!r}, alpha (Mid) "
            f"{self.mt_alpha}, beta (KL) {self.mt_beta}, T={self.kd_temperature}, KL {self.mt_kl_direction}, "
            f"attention transfer {self.mt_attention_transfer}, region contrast {self.mt_region_contrast}, "
            f"adapters {self.mt_adapters}; teachers in eval mode under torch.no_grad")

    # ------------------------------------------------------------------ adapters
    def _make_adapter_optimizer(self, params):
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.initial_lr, betas=tuple(self.adam_betas),
                                    weight_decay=self.weight_decay)
        return torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                               nesterov=True)

    def _add_adapter(self, key: str, c_in: int, c_out: int) -> Optional[nn.Module]:
        self._adapter_channels[key] = [int(c_in), int(c_out)]
        adapter = feature_adapter(c_in, c_out) if self.mt_adapters else None
        if adapter is None:
            return None
        adapter = adapter.to(self.device)
        if self.is_ddp:  # same initial weights on every rank
            for p in adapter.parameters():
                dist.broadcast(p.data, 0)
        self.feature_adapters[key] = adapter
        if self.adapter_optimizer is None:
            self.adapter_optimizer = self._make_adapter_optimizer(list(adapter.parameters()))
        else:
            self.adapter_optimizer.add_param_group({"params": list(adapter.parameters())})
        return adapter

    def _adapter(self, key: str, fs: torch.Tensor, ft: torch.Tensor) -> Optional[nn.Module]:
        if key in self._adapter_channels:
            return self.feature_adapters[key] if key in self.feature_adapters else None
        return self._add_adapter(key, fs.shape[1], ft.shape[1])

    def _restore_adapters(self, state: dict):
        for key, (c_in, c_out) in state["channels"].items():
            if key not in self._adapter_channels:
                self._add_adapter(key, c_in, c_out)
        self.feature_adapters.load_state_dict(state["state_dict"])
        if self.adapter_optimizer is not None and state.get("optimizer") is not None:
            self.adapter_optimizer.load_state_dict(state["optimizer"])
        self.print_to_log_file(f"Restored {len(self.feature_adapters)} feature adapter(s) from the checkpoint")

    def adapter_checkpoint_state(self) -> Optional[dict]:
        if not self._adapter_channels:
            return None
        return {"channels": dict(self._adapter_channels),
                "state_dict": {k: v.detach().cpu() for k, v in self.feature_adapters.state_dict().items()},
                "optimizer": self.adapter_optimizer.state_dict() if self.adapter_optimizer is not None else None}

    # ------------------------------------------------------------------ loss
    def _losses(self, batch: dict):
        target = batch["target"]
        target = target[0] if isinstance(target, (list, tuple)) else target
        self._mt_target = target.to(self.device, non_blocking=True)
        try:
            return super()._losses(batch)
        finally:
            self._mt_target = None
            if self._student_recorder is not None:
                self._student_recorder.clear()

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def compute_distillation_loss(self, data, output, weights, fp_weight):
        if not self.teachers:
            self.load_teacher()
        student_logits = output[0] if isinstance(output, (list, tuple)) else output
        target = self._mt_target
        use_mid = self.mt_alpha != 0 and (self.mt_attention_transfer or self.mt_region_contrast)
        student_feats = self._student_recorder.take() if (use_mid and self._student_recorder is not None) else None
        self._sync()
        t0 = time.perf_counter()
        teacher_logits, mids, teacher_seconds = [], [], 0.0
        for j, (teacher, recorder) in enumerate(zip(self.teachers, self._teacher_recorders)):
            t_start = time.perf_counter()
            with torch.no_grad():
                z = teacher(data)
            z = z[0] if isinstance(z, (list, tuple)) else z
            self._sync()
            teacher_seconds += time.perf_counter() - t_start
            teacher_feats = recorder.take()
            teacher_logits.append(z)
            if student_feats is not None:
                adapters = [self._adapter(f"t{j}_{name}", fs, ft)
                            for name, fs, ft in zip(FEATURE_LAYERS, student_feats, teacher_feats)]
                mids.append(mid_loss_per_sample(student_feats, teacher_feats, target, adapters,
                                                self.mt_attention_transfer, self.mt_region_contrast))
            del teacher_feats
        w, dice_losses = adaptive_teacher_weights(teacher_logits, target, self.mt_weighting, self.mt_dice_smooth)
        kl = multi_teacher_kl_loss(student_logits, teacher_logits, w, self.kd_temperature, self.mt_kl_direction)
        mid = weighted_teacher_mean(torch.stack(mids, 1), w) if mids else torch.zeros((), device=kl.device)
        if self._mt_in_train_step:
            self._mt_step.update(teacher_s=teacher_seconds, distill_s=time.perf_counter() - t0,
                                 weights=w.mean(0).cpu().numpy(), weights_min=w.min(0).values.cpu().numpy(),
                                 weights_max=w.max(0).values.cpu().numpy(),
                                 teacher_dice=(1 - dice_losses).mean(0).cpu().numpy(),
                                 mid=float(mid.detach()), kl=float(kl.detach()))
        return self.mt_alpha * mid + self.mt_beta * kl

    # ------------------------------------------------------------------ step (network + adapters)
    def train_step(self, batch: dict) -> dict:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sync()
        t0 = time.perf_counter()
        self._mt_step = {}
        self.optimizer.zero_grad(set_to_none=True)
        if self.adapter_optimizer is not None:
            self.adapter_optimizer.zero_grad(set_to_none=True)
        self._mt_in_train_step = True
        try:
            _, _, total, seg, kd = self._losses(batch)
        finally:
            self._mt_in_train_step = False
        adapter_params = [p for p in self.feature_adapters.parameters()]
        if self.adapter_optimizer is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            for group in self.adapter_optimizer.param_groups:
                group["lr"] = lr
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self._all_reduce_adapter_grads(adapter_params)
            self.grad_scaler.unscale_(self.optimizer)
            if self.adapter_optimizer is not None:
                self.grad_scaler.unscale_(self.adapter_optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            if adapter_params:
                torch.nn.utils.clip_grad_norm_(adapter_params, self.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            if self.adapter_optimizer is not None:
                self.grad_scaler.step(self.adapter_optimizer)
            self.grad_scaler.update()
        else:
            total.backward()
            self._all_reduce_adapter_grads(adapter_params)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            if adapter_params:
                torch.nn.utils.clip_grad_norm_(adapter_params, self.grad_clip_norm)
            self.optimizer.step()
            if self.adapter_optimizer is not None:
                self.adapter_optimizer.step()
        self._sync()
        mem, mem_kind = _memory_mb(self.device)
        self._mt_step.update(step_s=time.perf_counter() - t0, memory_mb=mem, memory_kind=mem_kind)
        self._mt_epoch_stats.append(self._mt_step)
        return {"loss": total.detach().cpu().numpy(), "seg_loss": seg.detach().cpu().numpy(),
                "kd_loss": np.array(0.0 if kd is None else kd.detach().cpu().item())}

    def _all_reduce_adapter_grads(self, params):
        if not self.is_ddp:
            return
        world = dist.get_world_size()
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world

    # ------------------------------------------------------------------ logging / checkpoints
    def on_train_epoch_start(self):
        self._mt_epoch_stats = []
        super().on_train_epoch_start()  # puts the student in train mode; the teachers stay in eval mode
        for teacher in self.teachers:
            teacher.eval()

    def multi_teacher_epoch_summary(self) -> str:
        s = self._mt_epoch_stats
        if not s:
            return "multi-teacher: no training step this epoch"
        step = np.array([x["step_s"] for x in s])
        teach = np.array([x.get("teacher_s", 0.0) for x in s])
        mem = max(x["memory_mb"] for x in s)
        w = np.mean([x["weights"] for x in s if "weights" in x], axis=0)
        w_min = np.min([x["weights_min"] for x in s if "weights_min" in x], axis=0)
        w_max = np.max([x["weights_max"] for x in s if "weights_max" in x], axis=0)
        dice = np.mean([x["teacher_dice"] for x in s if "teacher_dice" in x], axis=0)
        fmt = lambda a: "[" + ", ".join(f"{v:.3f}" for v in a) + "]"  # noqa: E731
        return (f"multi-teacher: {len(s)} steps, time per step {step.mean():.3f} s (max {step.max():.3f} s), of "
                f"which the {len(self.teachers)} teachers' forward {teach.mean():.3f} s; peak memory {mem:.0f} MB "
                f"({s[-1]['memory_kind']}); teacher weights mean {fmt(w)} (min {fmt(w_min)}, max {fmt(w_max)}); "
                f"teacher soft Dice {fmt(dice)}; Mid {np.mean([x['mid'] for x in s]):.4f} "
                f"KL {np.mean([x['kl'] for x in s]):.4f}")

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        self.print_to_log_file(self.multi_teacher_epoch_summary())

    def on_train_end(self):
        super().on_train_end()  # writes checkpoint_final.pth (with the adapters)
        if self._student_recorder is not None:
            self._student_recorder.remove()
            self._student_recorder = None
        for r in self._teacher_recorders:
            r.remove()
        self._teacher_recorders = []
        self.teachers = []  # free the teachers before the final validation
        self.teacher = None

    def vertkd_checkpoint_entry(self) -> dict:
        entry = super().vertkd_checkpoint_entry()
        entry["teachers"] = [{k: v for k, v in info.items() if k != CHECKPOINT_KEY} for info in self.teacher_infos]
        entry["multi_teacher"] = {
            "weighting": self.mt_weighting, "alpha": self.mt_alpha, "beta": self.mt_beta,
            "temperature": self.kd_temperature, "kl_direction": self.mt_kl_direction,
            "layers": list(FEATURE_LAYERS), "attention_transfer": self.mt_attention_transfer,
            "region_contrast": self.mt_region_contrast, "adapters": self.mt_adapters,
            "teacher_trainer_name": self.teacher_trainer_name, "teacher_folds": list(self.teacher_folds)}
        return entry

    def save_checkpoint(self, filename: str) -> None:
        state = self.adapter_checkpoint_state()
        save_checkpoint_with_vertkd(self, filename, self.vertkd_checkpoint_entry(),
                                    extra={ADAPTER_CHECKPOINT_KEY: state} if state is not None else None)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if isinstance(filename_or_checkpoint, dict):
            checkpoint = filename_or_checkpoint
        else:
            checkpoint = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
        self._pending_adapter_state = checkpoint.get(ADAPTER_CHECKPOINT_KEY)
        super().load_checkpoint(filename_or_checkpoint)


class VertKDStudentTrainer_multiTeacher(MultiTeacherDistillationMixin, VertKDStudentTrainer):
    """Student (8-16-32-64) distilled from the VertKDTeacherTrainer models of folds 0-4: adaptive Dice weights,
    KL (T = 4) and attention transfer + region contrast, L = Seg + 0.1 Mid + 0.1 KL."""


class VertKDStudentTrainer_multiTeacher_equalWeights(VertKDStudentTrainer_multiTeacher):
    """Ablation: every teacher weighs 1/n (no adaptive weighting)."""
    mt_weighting = "equal"


class VertKDStudentTrainer_multiTeacher_printedWeights(VertKDStudentTrainer_multiTeacher):
    """Ben Loussaief et al.'s weight formula exactly as printed: w_j = Dice loss_j / sum (the worse teacher weighs more)."""
    mt_weighting = "dice_loss_printed"


class VertKDStudentTrainer_multiTeacher_klOnly(VertKDStudentTrainer_multiTeacher):
    """Ablation: no intermediate (feature) distillation, L = Seg + 0.1 KL."""
    mt_alpha = 0.0


class VertKDStudentTrainer_multiTeacher_debug(MultiTeacherDistillationMixin, VertKDStudentTrainer_debug):
    """Short schedule (32^3, 2 epochs x 3 iterations) for tests: teachers = VertKDTeacherTrainer_debug folds 0, 1."""
    teacher_folds = (0, 1)


class VertKDStudentTrainer_multiTeacher_cpu2mm(MultiTeacherDistillationMixin, VertKDStudentTrainer_cpu2mm):
    """CPU recipe (64^3 at 2 mm, seeded): teachers = VertKDTeacherTrainer_cpu2mm folds 0-4."""
