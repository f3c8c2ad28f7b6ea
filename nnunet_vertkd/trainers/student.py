"""Student trainers (paper: S_T3/S_T4/S_T5 soft outputs, S_S from scratch, S_L logits, S_LW logits x distance map).

The student (8-16-32-64, ~0.37 M parameters) is trained on the same per-vertebra samples as the teacher. The
teacher (``teacher_discovery``) runs frozen, in eval mode, on the same device and batch, under the same
autocast; the KD term is computed in float32 on the full-resolution output and added with ``kd_weight``:
    soft_outputs:    L = L_seg(y, y^) + kd_weight * L_seg(sigmoid(z_s / T), sigmoid(z_t / T))
    logits:          L = kd_weight * mean((z_s - z_t)^2)                (no ground truth: paper Table 2)
    logits_distmap:  L = kd_weight * mean(omega * (z_s - z_t)^2)        (omega = border weights; no ground truth)
L_seg(y, y^) is still computed and logged (train_seg_loss) for the logit students; it takes no part in the
gradient (``use_ground_truth = False``).
"""
import os

import torch

from nnunet_vertkd.model_contract import CHECKPOINT_KEY, PLANS_KEY
from nnunet_vertkd.trainers.losses.distillation import logit_matching_loss, soft_output_kd_loss
from nnunet_vertkd.trainers.network import STUDENT_FEATURES
from nnunet_vertkd.trainers.teacher_discovery import (
    DEFAULT_TEACHER_TRAINER, find_teacher_checkpoint, load_teacher_network)
from nnunet_vertkd.trainers.vertkd_trainer import VertKDTrainerBase


class VertKDStudentTrainer(VertKDTrainerBase):
    """S_T4: soft-output distillation, T = 4, lambda = 1."""
    features = STUDENT_FEATURES
    distillation = "soft_outputs"
    kd_temperature = 4.0
    kd_weight = 1.0
    #: trainer whose model (same dataset/plans/configuration/fold) is the default teacher; $VERTKD_TEACHER wins
    teacher_trainer_name = DEFAULT_TEACHER_TRAINER

    def on_train_start(self):
        if self.distillation is not None and self.teacher is None:
            self.load_teacher()  # fails at once (before any data loading) when the teacher is missing
        super().on_train_start()

    def load_teacher(self):
        path = find_teacher_checkpoint(os.environ.get("nnUNet_results"), self.plans_manager.dataset_name,
                                       self.plans_manager.plans_name, self.configuration_name, self.fold,
                                       self.teacher_trainer_name,
                                       plans_teacher=self.plans_manager.plans.get(PLANS_KEY))
        self.teacher, self.teacher_info = load_teacher_network(path, self.device)
        t_patch = (self.teacher_info.get(CHECKPOINT_KEY) or {}).get("patch_size")
        self.print_to_log_file(f"Teacher: {path} (trainer {self.teacher_info['trainer_name']}, epoch "
                               f"{self.teacher_info['epoch']}, patch {t_patch}); distillation "
                               f"{self.distillation}, T={self.kd_temperature}, kd_weight={self.kd_weight}")

    def compute_distillation_loss(self, data, output, weights, fp_weight):
        if self.distillation is None:
            return None
        if self.teacher is None:
            self.load_teacher()
        with torch.no_grad():
            teacher_logits = self.teacher(data)
        if isinstance(teacher_logits, (list, tuple)):
            teacher_logits = teacher_logits[0]
        student_logits = output[0] if isinstance(output, (list, tuple)) else output
        w = weights[0] if isinstance(weights, (list, tuple)) else weights
        if self.distillation == "soft_outputs":
            return soft_output_kd_loss(student_logits, teacher_logits, w, fp_weight, self.kd_temperature)
        if self.distillation == "logits":
            return logit_matching_loss(student_logits, teacher_logits, None)
        if self.distillation == "logits_distmap":
            return logit_matching_loss(student_logits, teacher_logits, w)
        raise ValueError(f"unknown distillation {self.distillation!r}")


class VertKDStudentTrainer_T3(VertKDStudentTrainer):
    """S_T3: soft outputs, T = 3."""
    kd_temperature = 3.0


class VertKDStudentTrainer_T5(VertKDStudentTrainer):
    """S_T5: soft outputs, T = 5."""
    kd_temperature = 5.0


class VertKDStudentTrainer_scratch(VertKDStudentTrainer):
    """S_S: the student trained without a teacher."""
    distillation = None


class VertKDStudentTrainer_logits(VertKDStudentTrainer):
    """S_L: matching logits (mean squared Euclidean distance), no ground truth."""
    distillation = "logits"
    use_ground_truth = False


class VertKDStudentTrainer_logitsDistMap(VertKDStudentTrainer):
    """S_LW: matching logits weighted by the border distance map, no ground truth."""
    distillation = "logits_distmap"
    use_ground_truth = False
