"""Adaptive multi-teacher distillation of Ben Loussaief et al. (§3.2-3.3), as pure functions.

Everything is computed per input (per sample b of the batch) and in float32 (autocast disabled inside); teacher
tensors are detached, so no gradient ever reaches a teacher.

Adaptive teacher weights (§3.3)
    Each teacher j's soft Dice loss against the ground truth y on input b,
        L_bj = 1 - (2 sum(p_j y) + s) / (sum(p_j) + sum(y) + s),   p_j = sigmoid(z_j)   (T = 1, s = smooth),
    gives the weights w_bj (sum_j w_bj = 1 for every b). The paper prints w_j = L_j / sum_k L_k, which gives the
    teacher with the LARGER Dice loss (the worse teacher on this input) the larger weight -- the opposite of what
    the paper says the weights are for ("well-performed teachers"; "a better teacher must weigh more"). The
    default ``mode="dice"`` keeps the paper's per-input normalisation but applies it to the Dice score
    D_bj = 1 - L_bj: w_bj = D_bj / sum_k D_bk, so the better teacher on this input weighs more (hand case: Dice
    0.8 and 0.4 -> weights 2/3 and 1/3). ``mode="dice_loss_printed"`` is the formula exactly as printed (same
    case: 1/4 and 3/4), ``mode="equal"`` gives 1/n. When every score is 0 (every loss 0 for the printed form)
    the weights fall back to 1/n.

KL on temperature-softened outputs (Eq. 1-2, binary form)
    Our networks have one sigmoid output, so the paper's softmax over classes becomes a Bernoulli distribution
    per voxel: p = sigmoid(z_s / T) (student), q = sum_j w_bj sigmoid(z_j / T) (the weighted teacher ensemble,
    paper: p^t = sum_j w_j p^t_j). Per voxel
        KL(q || p) = q log(q / p) + (1 - q) log((1 - q) / (1 - p)),
    the two-class softmax KL exactly (a 1-logit sigmoid is a 2-class softmax with logits (0, z)). The loss is
    the mean over voxels (the paper's 1/N sum_i), then over the batch. Default direction KL(teacher || student)
    (Hinton's soft-target loss, which the paper says it follows); Eq. 2 is printed as KL(p^s || p^t), available
    as ``direction="student_teacher"``. No T^2 factor (as in the single-teacher students). KL is not
    symmetric; it is 0 iff the two distributions agree.

Intermediate (feature) distillation (Eq. 3, 4, 7)
    Layers: the last feature map of each network's encoder (bottleneck) and decoder (before the 1x1x1 head).
    Attention transfer ([34], Zagoruyko & Komodakis): attention map a = sum_c |f_c| (absolute values summed
        over the channels, as the paper states). The printed Eq. 3, ||(a_s - a_t) / ||a_s - a_t||_2||_1, equals
        ||d||_1 / ||d||_2: undefined at d = 0 and unchanged when d is scaled, so it does not pull the student
        towards the teacher. We use [34]'s form with the paper's norms: each map L2-normalised per sample,
        then the L1 distance, divided by sqrt(N) so the value does not grow with the patch size:
            AT = || a_s/||a_s||_2 - a_t/||a_t||_2 ||_1 / sqrt(N)  = mean |a_s/rms(a_s) - a_t/rms(a_t)|,
        in [0, 2]; 0 when the maps are proportional. If the spatial sizes differ, the student map is resized
        (trilinear) to the teacher's.
    Region contrast ([7], Qin et al., EMKD): with the ground-truth mask m resized to the feature map (area
        average when smaller, nearest otherwise), the foreground and background region centres
        c_fg = sum(f m) / sum(m), c_bg = sum(f (1 - m)) / sum(1 - m) and rc = cos(c_fg, c_bg) (one value per
        sample for our binary task); the term is ||rc_s - rc_t||_2 = |rc_s - rc_t| (paper Eq. 4), 0 for a
        sample whose mask has no foreground or no background.
    Mid(t_j, s) = sum over the layer pairs of (AT + RC) (Eq. 4); over the teachers Mid = sum_j w_bj Mid(t_j, s)
    (Eq. 7), averaged over the batch.
    Adapters: AT (a channel sum) and RC (a cosine within one network) do not need equal channel counts as
    formulas, but the paper follows [5], where the student's feature map is first projected into the
    teacher's feature space; ``feature_adapter`` is that trainable 1x1x1 convolution (C_s -> C_t), used when
    the counts differ (None when they are equal), applied to the student's map before AT and RC. Adapters are
    training-only: they are not part of the student network or its inference checkpoint weights.

Total (Eq. 6)
    L = Seg + alpha * Mid + beta * KL, alpha = beta = 0.1 (``multi_teacher_total_loss``); Seg is the project's
    segmentation loss (Lessmann), as for every other student.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_vertkd.trainers.losses.distillation import _fp32_context

WEIGHTING_MODES = ("dice", "dice_loss_printed", "equal")
KL_DIRECTIONS = ("teacher_student", "student_teacher")


def _per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1)


def soft_dice_loss_per_sample(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """(B,) soft Dice loss 1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s) of every sample (sums over channels and
    voxels). With ``smooth = 0`` and an empty prediction and target the Dice is defined as 1 (loss 0)."""
    with _fp32_context(probs):
        p = probs.detach().float()
        y = target.detach().float()
        inter = _per_sample_sum(p * y)
        denom = _per_sample_sum(p) + _per_sample_sum(y)
        num = 2.0 * inter + smooth
        den = denom + smooth
        dice = torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den))
        return 1.0 - dice


def teacher_weights_from_dice_losses(dice_losses: torch.Tensor, mode: str = "dice") -> torch.Tensor:
    """(B, n) adaptive weights from the (B, n) Dice losses of n teachers (module docstring); rows sum to 1."""
    if mode not in WEIGHTING_MODES:
        raise ValueError(f"unknown weighting mode {mode!r}; one of {WEIGHTING_MODES}")
    losses = dice_losses.detach().float()
    if losses.ndim != 2:
        raise ValueError(f"dice_losses must be (B, n_teachers), got {tuple(losses.shape)}")
    n = losses.shape[1]
    uniform = torch.full_like(losses, 1.0 / n)
    if mode == "equal":
        return uniform
    scores = (1.0 - losses) if mode == "dice" else losses
    scores = scores.clamp_min(0.0)
    total = scores.sum(1, keepdim=True)
    return torch.where(total > 1e-12, scores / total.clamp_min(1e-12), uniform)


def adaptive_teacher_weights(teacher_logits: Sequence[torch.Tensor], target: torch.Tensor, mode: str = "dice",
                             smooth: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weights (B, n), dice_losses (B, n)) of the teachers on each input: Dice loss of sigmoid(z_j) (T = 1)
    against ``target``, turned into weights by ``teacher_weights_from_dice_losses``."""
    with _fp32_context(target):
        losses = torch.stack([soft_dice_loss_per_sample(torch.sigmoid(z.detach().float()), target, smooth)
                              for z in teacher_logits], dim=1)
    return teacher_weights_from_dice_losses(losses, mode), losses


def _check_weights(weights: torch.Tensor, batch: int, n: int) -> torch.Tensor:
    w = weights.detach().float()
    if tuple(w.shape) != (batch, n):
        raise ValueError(f"weights must be (B={batch}, n_teachers={n}), got {tuple(w.shape)}")
    return w


def ensemble_log_probs(teacher_logits: Sequence[torch.Tensor], weights: torch.Tensor, temperature: float = 1.0
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log q, log(1 - q)) of the weighted ensemble q = sum_j w_bj sigmoid(z_j / T), computed stably with
    logsumexp. ``teacher_logits``: n tensors (B, C, ...); ``weights`` (B, n)."""
    z = torch.stack([t.detach().float() for t in teacher_logits], dim=0) / float(temperature)  # (n, B, ...)
    w = _check_weights(weights, z.shape[1], z.shape[0]).t()  # (n, B)
    log_w = torch.log(w).reshape(w.shape + (1,) * (z.ndim - 2))
    log_q = torch.logsumexp(log_w + F.logsigmoid(z), dim=0)
    log_1mq = torch.logsumexp(log_w + F.logsigmoid(-z), dim=0)
    return log_q, log_1mq


def binary_kl(log_a: torch.Tensor, log_1ma: torch.Tensor, log_b: torch.Tensor, log_1mb: torch.Tensor
              ) -> torch.Tensor:
    """Per-element KL(Bernoulli(a) || Bernoulli(b)) from log-probabilities."""
    return torch.exp(log_a) * (log_a - log_b) + torch.exp(log_1ma) * (log_1ma - log_1mb)


def multi_teacher_kl_loss(student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor],
                          weights: torch.Tensor, temperature: float = 4.0,
                          direction: str = "teacher_student") -> torch.Tensor:
    """mean_b mean_voxels KL between the softened weighted teacher ensemble and the softened student (module
    docstring). float32 scalar; gradient only into ``student_logits``."""
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; one of {KL_DIRECTIONS}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    for t in teacher_logits:
        if t.shape != student_logits.shape:
            raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(t.shape)} logits must "
                             f"have the same shape")
    with _fp32_context(student_logits):
        zs = student_logits.float() / float(temperature)
        log_p, log_1mp = F.logsigmoid(zs), F.logsigmoid(-zs)
        log_q, log_1mq = ensemble_log_probs(teacher_logits, weights, temperature)
        if direction == "teacher_student":
            kl = binary_kl(log_q, log_1mq, log_p, log_1mp)
        else:
            kl = binary_kl(log_p, log_1mp, log_q, log_1mq)
        return kl.reshape(kl.shape[0], -1).mean(1).mean()


# ---------------------------------------------------------------------------------------- feature terms
def attention_map(features: torch.Tensor) -> torch.Tensor:
    """(B, *S) attention map sum_c |f_c| of a (B, C, *S) feature map."""
    return features.float().abs().sum(1)


def attention_transfer_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                            eps: float = 1e-8) -> torch.Tensor:
    """(B,) || a_s/||a_s||_2 - a_t/||a_t||_2 ||_1 / sqrt(N) per sample (module docstring), in [0, 2]. The
    channel counts may differ; the student map is resized (trilinear) if the spatial sizes differ."""
    with _fp32_context(student_features):
        a_s = attention_map(student_features)
        a_t = attention_map(teacher_features.detach())
        if a_s.shape[1:] != a_t.shape[1:]:
            a_s = F.interpolate(a_s[:, None], size=a_t.shape[1:], mode="trilinear" if a_s.ndim == 4 else "bilinear",
                                align_corners=False)[:, 0]
        a_s = a_s.reshape(a_s.shape[0], -1)
        a_t = a_t.reshape(a_t.shape[0], -1)
        n = a_s.shape[1]
        a_s = a_s / (a_s.norm(dim=1, keepdim=True) + eps)
        a_t = a_t / (a_t.norm(dim=1, keepdim=True) + eps)
        return (a_s - a_t).abs().sum(1) / math.sqrt(n)


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``mask`` (B, 1, *S) resized to ``size``: area average (foreground fraction) when every axis shrinks,
    nearest otherwise."""
    mask = mask.float()
    size = tuple(int(s) for s in size)
    if tuple(mask.shape[2:]) == size:
        return mask
    if all(s <= m for s, m in zip(size, mask.shape[2:])):
        return F.interpolate(mask, size=size, mode="area")
    return F.interpolate(mask, size=size, mode="nearest")


def region_contrast(features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rc (B,), valid (B,) bool): cosine similarity of the foreground and background region centres of a
    (B, C, *S) feature map, ``mask`` (B, 1, *S') the ground truth (resized to *S). ``valid`` is False where the
    mask has no foreground or no background (rc is then 0)."""
    with _fp32_context(features):
        f = features.float()
        m = resize_mask(mask.detach(), f.shape[2:])
        fg_mass = _per_sample_sum(m)
        bg_mass = _per_sample_sum(1.0 - m)
        dims = tuple(range(2, f.ndim))
        c_fg = (f * m).sum(dims) / fg_mass.clamp_min(eps)[:, None]
        c_bg = (f * (1.0 - m)).sum(dims) / bg_mass.clamp_min(eps)[:, None]
        rc = F.cosine_similarity(c_fg, c_bg, dim=1, eps=1e-8)
        valid = (fg_mass > eps) & (bg_mass > eps)
        return torch.where(valid, rc, torch.zeros_like(rc)), valid


def region_contrast_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, mask: torch.Tensor
                         ) -> torch.Tensor:
    """(B,) |rc_s - rc_t| per sample (0 where the mask has no foreground or no background)."""
    rc_s, valid = region_contrast(student_features, mask)
    rc_t, _ = region_contrast(teacher_features.detach(), mask)
    return torch.where(valid, (rc_s - rc_t).abs(), torch.zeros_like(rc_s))


def feature_adapter(student_channels: int, teacher_channels: int, ndim: int = 3) -> Optional[nn.Module]:
    """Trainable 1x1x1 convolution from the student's to the teacher's channel count; None when they are equal
    (the student's map is then used as it is)."""
    if int(student_channels) == int(teacher_channels):
        return None
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
    return conv(int(student_channels), int(teacher_channels), kernel_size=1, bias=True)


def mid_loss_per_sample(student_features: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor],
                        mask: torch.Tensor, adapters: Optional[Sequence[Optional[nn.Module]]] = None,
                        use_attention: bool = True, use_region_contrast: bool = True) -> torch.Tensor:
    """(B,) Mid(t, s) = sum over the layer pairs of AT + RC (paper Eq. 4), the student's maps first passed
    through their adapter (if any)."""
    if len(student_features) != len(teacher_features):
        raise ValueError("need one teacher feature map per student feature map")
    adapters = list(adapters) if adapters is not None else [None] * len(student_features)
    total = None
    for fs, ft, adapter in zip(student_features, teacher_features, adapters):
        if adapter is not None:
            with _fp32_context(fs):
                fs = adapter.float()(fs.float())
        term = torch.zeros(fs.shape[0], device=fs.device, dtype=torch.float32)
        if use_attention:
            term = term + attention_transfer_loss(fs, ft)
        if use_region_contrast:
            term = term + region_contrast_loss(fs, ft, mask)
        total = term if total is None else total + term
    return total


def weighted_teacher_mean(per_teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_b sum_j w_bj x_bj for (B, n) values and (B, n) weights (paper Eq. 7, averaged over the batch)."""
    w = _check_weights(weights, per_teacher.shape[0], per_teacher.shape[1])
    return (per_teacher.float() * w).sum(1).mean()


def multi_teacher_total_loss(seg_loss: torch.Tensor, mid_loss: Optional[torch.Tensor],
                             kl_loss: Optional[torch.Tensor], alpha: float = 0.1, beta: float = 0.1) -> torch.Tensor:
    """L = Seg + alpha * Mid + beta * KL (Ben Loussaief et al., Eq. 6); a missing term counts 0."""
    total = seg_loss
    if mid_loss is not None:
        total = total + float(alpha) * mid_loss
    if kl_loss is not None:
        total = total + float(beta) * kl_loss
    return total
