"""Segmentation loss of Lessmann et al. (2019) as used by Serrador et al. (2024), as pure functions.

Border weights
    omega_i = gamma * exp(-d_i^2 / sigma^2) + 1, gamma = 8, sigma = 6 mm.
    d_i is the Euclidean distance in mm (the `edt` package, or scipy's ``distance_transform_edt`` as fallback)
    from the centre of voxel i to the centre of the nearest *surface voxel* of the target. Surface voxels are
    the target voxels that have at least one 6-connected neighbour outside the target (the inner boundary of
    the mask). Thus d = 0 (omega = gamma + 1) on the surface voxels, d = k * spacing for a voxel k voxels away
    from the surface along an axis, both inside and outside the target. The edge of the array is NOT a surface:
    a target cut by the patch border continues beyond it (``binary_erosion(..., border_value=1)``). An empty
    target, or one without surface voxels (fills the array), gives all ones.

Loss (per sample b, sums over all voxels and channels of that sample; p = probability, y = target in [0, 1],
which may be soft, omega = weights, N = number of voxels and channels of the sample)
    FP_b = sum(omega * (1 - y) * p) / N
    FN_b = sum(omega * y * (1 - p)) / N
    loss = mean_b(fp_weight * FP_b + FN_b)
    This is the paper's (and the authors' code's) sum of omega-weighted soft errors, divided by the constant N
    so that the value does not grow with the patch size (a constant factor changes nothing else: Adam is
    invariant to it, and gradient clipping sees the same directions). One false-positive voxel costs exactly
    ``fp_weight`` times one false-negative voxel of the same border weight. (An earlier version divided FP by
    the weighted background and FN by the weighted target; at 128^3 that made a false-positive voxel cost
    0.09-0.17 of a false negative at fp_weight = 1, which trains over-segmentation that poisons the memory.)
    An empty target gives FN_b = 0, a target filling the sample gives FP_b = 0; ``eps`` is kept in the
    signature for compatibility and not used.
    fp_weight follows ``fp_weight_schedule``: false positives are penalised less at the start of training
    (0.1) and equally (1.0) at the end (the authors' method description; the paper's prose states the roles
    the other way round, the authors' code and Lessmann's paper down-weight the false positives).

Deep supervision: see ``deep_supervision_loss``.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

GAMMA = 8.0
SIGMA_MM = 6.0
FP_WEIGHT_START = 0.1
FP_WEIGHT_END = 1.0
FP_SCHEDULE_STEEPNESS = 10.0
EPS = 1e-6


def target_surface(target: np.ndarray) -> np.ndarray:
    """Surface voxels of a binary mask: target voxels with a 6-connected neighbour outside the target. The edge
    of the array does not count as outside."""
    target = np.asarray(target).astype(bool)
    if not target.any():
        return np.zeros_like(target)
    structure = generate_binary_structure(target.ndim, 1)
    return target & ~binary_erosion(target, structure=structure, border_value=1)


#: weights below 1 + BORDER_WEIGHT_TOLERANCE are written as exactly 1 (the Gaussian tail far from the surface)
BORDER_WEIGHT_TOLERANCE = 1e-6


def _distance_transform(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to the nearest zero voxel of ``mask``; the array edge is not a
    zero. Uses the ``edt`` package (several times faster than scipy) when installed, else scipy."""
    try:
        import edt as _edt
    except ImportError:  # pragma: no cover - edt is an install requirement, scipy is the fallback
        return distance_transform_edt(mask, sampling=spacing)
    return _edt.edt(np.ascontiguousarray(mask, dtype=np.uint8), anisotropy=tuple(float(s) for s in spacing),
                    black_border=False, parallel=1)


def border_weight_map_reference(target: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                                gamma: float = GAMMA, sigma_mm: float = SIGMA_MM) -> np.ndarray:
    """The definition, computed on the whole array with scipy (slow: ~0.5 s per 128^3 map); for tests."""
    target = np.asarray(target).astype(bool)
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (target.ndim,))
    surface = target_surface(target)
    if not surface.any():
        return np.ones(target.shape, dtype=np.float32)
    d = distance_transform_edt(~surface, sampling=spacing)
    w = gamma * np.exp(-(d * d) / (float(sigma_mm) ** 2)) + 1.0
    return w.astype(np.float32)


def _bbox(mask: np.ndarray):
    """(lo, hi) voxel bounds (hi exclusive) of the non-zero voxels, or None."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]) + 1)
    return lo, hi


def border_weight_map(target: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), gamma: float = GAMMA,
                      sigma_mm: float = SIGMA_MM, tolerance: float = BORDER_WEIGHT_TOLERANCE) -> np.ndarray:
    """omega = gamma * exp(-d^2 / sigma^2) + 1 with d the distance in mm to the nearest surface voxel (see the
    module docstring), as float32 with the shape of ``target``. ``spacing_mm`` has one entry per axis of
    ``target`` (a scalar is broadcast).

    Cheap on the training hot path: the surface is found inside the target's bounding box (plus one voxel),
    and distances are computed only inside the surface's bounding box grown by the distance beyond which
    gamma * exp(-d^2 / sigma^2) < ``tolerance``; every voxel outside it gets exactly 1 (it differs from the
    definition by less than ``tolerance``). Inside, the result equals ``border_weight_map_reference`` (every
    surface voxel lies in the box). About 20 ms for a vertebra in a 64^3 patch at 2 mm, 0.1 s at 128^3 / 1 mm,
    with the ``edt`` package (scipy fallback)."""
    target = np.asarray(target).astype(bool)
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (target.ndim,))
    out = np.ones(target.shape, dtype=np.float32)
    box = _bbox(target)
    if box is None:
        return out
    # surface inside the target's box + 1 voxel (clipped: the array edge is no surface, border_value=1)
    lo = [max(0, a - 1) for a in box[0]]
    hi = [min(n, b + 1) for n, b in zip(target.shape, box[1])]
    inner = tuple(slice(a, b) for a, b in zip(lo, hi))
    surface = np.zeros(target.shape, dtype=bool)
    surface[inner] = target_surface(target[inner])
    sbox = _bbox(surface[inner])
    if sbox is None:
        return out
    reach_mm = float(sigma_mm) * math.sqrt(max(math.log(max(gamma, 1e-12) / tolerance), 0.0))
    margin = [int(math.ceil(reach_mm / s)) + 1 for s in spacing]
    lo2 = [max(0, l0 + a - m) for l0, a, m in zip(lo, sbox[0], margin)]
    hi2 = [min(n, l0 + b + m) for n, l0, b, m in zip(target.shape, lo, sbox[1], margin)]
    region = tuple(slice(a, b) for a, b in zip(lo2, hi2))
    d = _distance_transform(~surface[region], spacing)
    out[region] = (gamma * np.exp(-(d * d) / (float(sigma_mm) ** 2)) + 1.0).astype(np.float32)
    return out


def border_weight_maps_torch(target: torch.Tensor, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                             gamma: float = GAMMA, sigma_mm: float = SIGMA_MM) -> torch.Tensor:
    """``border_weight_map`` for every sample and channel of a (B, C, *S) target tensor (> 0.5 = target),
    computed on the CPU (``border_weight_map``); returns float32 on the target's device. For a deep-supervision
    scale s (e.g. 0.5) pass ``spacing_mm / s`` so that distances stay in mm."""
    t = (target.detach() > 0.5).cpu().numpy()
    out = np.empty(t.shape, dtype=np.float32)
    for b in range(t.shape[0]):
        for c in range(t.shape[1]):
            out[b, c] = border_weight_map(t[b, c], spacing_mm, gamma, sigma_mm)
    return torch.from_numpy(out).to(target.device)


def fp_weight_schedule(epoch: float, num_epochs: int, start: float = FP_WEIGHT_START, end: float = FP_WEIGHT_END,
                       steepness: float = FP_SCHEDULE_STEEPNESS) -> float:
    """False-positive weight at ``epoch`` (0-based) of a training of ``num_epochs`` epochs.

    x = epoch / (num_epochs - 1) in [0, 1] (clipped); s(x) = 1 / (1 + exp(-steepness * (x - 0.5)));
    the sigmoid is rescaled so that it is exactly ``start`` at epoch 0 and exactly ``end`` at the last epoch
    (num_epochs - 1): w = start + (end - start) * (s(x) - s(0)) / (s(1) - s(0)). Monotonic; the midpoint
    of training gives (start + end) / 2. ``num_epochs <= 1`` gives ``end``; ``steepness -> 0`` tends to a
    linear ramp.
    """
    if num_epochs <= 1:
        return float(end)
    x = min(max(float(epoch) / float(num_epochs - 1), 0.0), 1.0)
    if steepness <= 0:
        r = x
    else:
        def s(v):
            return 1.0 / (1.0 + math.exp(-steepness * (v - 0.5)))
        r = (s(x) - s(0.0)) / (s(1.0) - s(0.0))
    return float(start + (end - start) * r)


def lessmann_loss(probs: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None,
                  fp_weight: float = 1.0, eps: float = EPS) -> torch.Tensor:
    """fp_weight * FP + FN, see the module docstring. probs, target, weights: (B, C, ...) (weights may be
    broadcastable or None = all ones); target may be soft. Computed in float32; returns a scalar tensor."""
    p = probs.float()
    y = target.float()
    if weights is None:
        w = torch.ones_like(p)
    else:
        w = torch.broadcast_to(weights.float(), p.shape)
    y = torch.broadcast_to(y, p.shape)
    dims = tuple(range(1, p.ndim))
    n_voxels = float(np.prod(p.shape[1:]))
    fp = (w * (1.0 - y) * p).sum(dims) / n_voxels
    fn = (w * y * (1.0 - p)).sum(dims) / n_voxels
    return (fp_weight * fp + fn).mean()


def lessmann_loss_from_logits(logits: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None,
                              fp_weight: float = 1.0, eps: float = EPS) -> torch.Tensor:
    """``lessmann_loss(sigmoid(logits), ...)``, computed in float32."""
    return lessmann_loss(torch.sigmoid(logits.float()), target, weights, fp_weight, eps)


def nnunet_deep_supervision_weights(num_outputs: int, ddp_without_compile: bool = False) -> np.ndarray:
    """nnU-Net's deep-supervision weights: w_i = 1 / 2**i for output i (i = 0 full resolution), the lowest
    resolution output dropped (w = 0; 1e-6 under DDP without torch.compile, as nnU-Net does to keep every
    parameter used), then normalised to sum 1. A single output gets weight 1."""
    if num_outputs <= 1:
        return np.ones(max(num_outputs, 1))
    w = np.array([1.0 / (2 ** i) for i in range(num_outputs)])
    w[-1] = 1e-6 if ddp_without_compile else 0.0
    return w / w.sum()


def deep_supervision_loss(loss_fn: Callable[..., torch.Tensor],
                          outputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                          targets: Union[torch.Tensor, Sequence[torch.Tensor]],
                          weights: Optional[Union[torch.Tensor, Sequence[Optional[torch.Tensor]]]] = None,
                          ds_weights: Optional[Sequence[float]] = None,
                          **loss_kwargs) -> torch.Tensor:
    """Combine a loss over deep-supervision outputs the way nnU-Net's DeepSupervisionWrapper does:

        L = sum_i ds_weights[i] * loss_fn(outputs[i], targets[i], weights[i], **loss_kwargs)

    outputs / targets / weights are lists ordered highest resolution first (nnU-Net's order); each scale has
    its own target and border-weight map (compute the weight map from the downsampled target with the spacing
    of that scale, or downsample the full-resolution map with ``downsample_for_deep_supervision``). Terms with
    weight 0 are skipped. ``ds_weights=None`` uses ``nnunet_deep_supervision_weights(len(outputs))``
    (1/2**i, lowest resolution dropped, normalised). A plain tensor ``outputs`` (deep supervision off) gives
    ``loss_fn(outputs, targets, weights)`` with list inputs reduced to their first (full resolution) element.
    Extra keyword arguments (e.g. ``fp_weight``) go to every ``loss_fn`` call.
    """
    if isinstance(outputs, torch.Tensor):
        t = targets[0] if isinstance(targets, (list, tuple)) else targets
        w = weights[0] if isinstance(weights, (list, tuple)) else weights
        return loss_fn(outputs, t, w, **loss_kwargs)
    n = len(outputs)
    if not isinstance(targets, (list, tuple)) or len(targets) != n:
        raise ValueError(f"deep supervision needs one target per output ({n} outputs)")
    if weights is None:
        weights = [None] * n
    elif isinstance(weights, torch.Tensor) or len(weights) != n:
        raise ValueError(f"deep supervision needs one weight map (or None) per output ({n} outputs)")
    if ds_weights is None:
        ds_weights = nnunet_deep_supervision_weights(n)
    if len(ds_weights) != n:
        raise ValueError(f"{len(ds_weights)} deep-supervision weights for {n} outputs")
    total = None
    for o, t, w, k in zip(outputs, targets, weights, ds_weights):
        if float(k) == 0.0:
            continue
        term = float(k) * loss_fn(o, t, w, **loss_kwargs)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("all deep-supervision weights are 0")
    return total


def downsample_for_deep_supervision(x: torch.Tensor, scales: Sequence[Union[float, Sequence[float]]],
                                    mode: str = "nearest-exact") -> List[torch.Tensor]:
    """Downsample a (B, C, *S) tensor to each scale (nnU-Net's format, e.g. [[1,1,1],[.5,.5,.5],...]); new size
    round(S * scale) per axis, like nnU-Net's DownsampleSegForDSTransform ('nearest-exact' for targets; use
    'area'-like averaging by passing mode='area' for weight maps if preferred). Scale 1 returns ``x``."""
    out = []
    for s in scales:
        if not isinstance(s, (list, tuple)):
            s = [s] * (x.ndim - 2)
        if all(float(v) == 1.0 for v in s):
            out.append(x)
            continue
        size = [int(round(n * float(v))) for n, v in zip(x.shape[2:], s)]
        out.append(F.interpolate(x.float(), size=size, mode=mode).to(x.dtype))
    return out
