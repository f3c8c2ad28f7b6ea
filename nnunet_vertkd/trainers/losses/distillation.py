"""Knowledge-distillation terms of Serrador et al. (2024), as pure functions.

All terms are computed in float32 (inputs are cast, autocast is disabled inside), and the teacher logits are
detached: no gradient ever reaches the teacher.

Soft outputs (S_T3 / S_T4 / S_T5)
    kd = lessmann_loss(sigmoid(z_s / T), sigmoid(z_t / T), weights, fp_weight)
    i.e. the segmentation loss L_seg(y_s, y^_s) with the softened teacher output as a (soft) target. No T^2
    factor (as in the authors' code). Note that this term is not 0 when student and teacher agree: with a soft
    target y and p = y, FP = sum(w (1-y) y) / N and FN = sum(w y (1-y)) / N, both > 0. Total loss:
    total_kd_loss(L_seg(y, y^), kd, kd_weight=lambda) = L_seg + lambda * kd (lambda = 1 in the paper).

Matching logits (S_L, S_LW)
    ED = mean over voxels of (z_s - z_t)^2 (the squared Euclidean distance divided by the number of voxels,
    per sample, then averaged over the batch). With a distance map (S_LW) every voxel's squared difference is
    multiplied by its border weight omega before averaging: mean(omega * (z_s - z_t)^2) ("ED x DistMap").
    Symmetric in student and teacher (for the value; the gradient flows into the student only).
    Paper Table 2: S_L and S_LW use no ground truth (GT = No): their total loss is kd_weight * ED alone
    (``total_kd_loss(..., use_ground_truth=False)``).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from nnunet_vertkd.trainers.losses.lessmann import lessmann_loss


def _fp32_context(t: torch.Tensor):
    """Disable autocast for the device type of ``t`` so every op below stays float32."""
    try:
        return torch.autocast(device_type=t.device.type, enabled=False)
    except (RuntimeError, ValueError):  # device types without autocast support
        return contextlib.nullcontext()


def soft_output_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        weights: Optional[torch.Tensor] = None, fp_weight: float = 1.0,
                        temperature: float = 4.0) -> torch.Tensor:
    """Lessmann loss of sigmoid(student / T) against the soft target sigmoid(teacher / T). Shapes (B, C, ...),
    equal for student and teacher; ``weights`` broadcastable or None. float32 scalar."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         f"logits must have the same shape")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with _fp32_context(student_logits):
        zs = student_logits.float()
        zt = teacher_logits.detach().float()
        p = torch.sigmoid(zs / float(temperature))
        y = torch.sigmoid(zt / float(temperature))
        w = None if weights is None else weights.detach().float()
        return lessmann_loss(p, y, w, fp_weight)


def logit_matching_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """mean_b mean_voxels(omega * (z_s - z_t)^2), omega = 1 without ``weights``. float32 scalar."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         f"logits must have the same shape")
    with _fp32_context(student_logits):
        diff2 = (student_logits.float() - teacher_logits.detach().float()) ** 2
        if weights is not None:
            diff2 = diff2 * torch.broadcast_to(weights.detach().float(), diff2.shape)
        dims = tuple(range(1, diff2.ndim))
        return diff2.mean(dims).mean()


def total_kd_loss(seg_loss: torch.Tensor, kd_loss: Optional[torch.Tensor], kd_weight: float = 1.0,
                  use_ground_truth: bool = True) -> torch.Tensor:
    """L_total = L_seg(y, y^) + kd_weight * L_kd (the paper's lambda = kd_weight = 1); without a KD term, L_seg.
    ``use_ground_truth=False`` (S_L, S_LW: paper Table 2, GT = No) drops L_seg: L_total = kd_weight * L_kd."""
    if kd_loss is None:
        if not use_ground_truth:
            raise ValueError("a loss without ground truth needs a distillation term")
        return seg_loss
    kd = float(kd_weight) * kd_loss
    return seg_loss + kd if use_ground_truth else kd
