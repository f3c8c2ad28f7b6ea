"""Lessmann segmentation loss, border weight map, false-positive weight schedule, deep-supervision combination."""
import math

import numpy as np
import pytest
import torch

from nnunet_vertkd.trainers.losses.lessmann import (
    border_weight_map, border_weight_maps_torch, deep_supervision_loss, downsample_for_deep_supervision, fp_weight_schedule, lessmann_loss,
    lessmann_loss_from_logits, nnunet_deep_supervision_weights, target_surface)


def _hand_case():
    p = torch.tensor([[[[0.8, 0.2], [0.6, 0.1]]]])
    y = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    w = torch.tensor([[[[2.0, 1.0], [1.0, 3.0]]]])
    return p, y, w


def test_hand_computed_single_sample():
    p, y, w = _hand_case()
    # paper's form: sums of weighted soft errors, divided by the 4 voxels
    # FP = (1*0.2 + 3*0.1) / 4 = 0.125 ; FN = (2*0.2 + 1*0.4) / 4 = 0.2
    assert lessmann_loss(p, y, w, fp_weight=1.0).item() == pytest.approx(0.125 + 0.2, abs=1e-7)
    assert lessmann_loss(p, y, w, fp_weight=0.5).item() == pytest.approx(0.0625 + 0.2, abs=1e-7)
    # unweighted: FP = 0.3 / 4, FN = 0.6 / 4
    assert lessmann_loss(p, y, None, fp_weight=1.0).item() == pytest.approx(0.075 + 0.15, abs=1e-7)


def test_hand_computed_batch_mean_and_empty_target():
    p, y, w = _hand_case()
    p2 = torch.full_like(p, 0.5)
    y2 = torch.zeros_like(y)  # empty target: FN = 0, FP = 4 * 0.5 / 4 = 0.5
    loss = lessmann_loss(torch.cat([p, p2]), torch.cat([y, y2]), torch.cat([w, torch.ones_like(w)]), fp_weight=0.5)
    assert loss.item() == pytest.approx(((0.0625 + 0.2) + 0.25) / 2, abs=1e-7)


def test_soft_target_hand_computed():
    p = torch.tensor([[[0.5, 0.25]]])
    y = torch.tensor([[[0.8, 0.4]]])
    # FP = (0.2*0.5 + 0.6*0.25) / 2 = 0.125 ; FN = (0.8*0.5 + 0.4*0.75) / 2 = 0.35
    assert lessmann_loss(p, y, None, 1.0).item() == pytest.approx(0.125 + 0.35, abs=1e-7)


@pytest.mark.parametrize("n_target", [1, 27, 200])
@pytest.mark.parametrize("fp_weight", [0.1, 1.0])
def test_one_false_positive_voxel_costs_fp_weight_false_negatives(n_target, fp_weight):
    """Paper's form: an FP voxel costs fp_weight x an FN voxel of the same weight, whatever the target size
    (the normalised form made an FP voxel cost 0.09-0.17 of an FN voxel at fp_weight = 1 on 128^3 patches)."""
    y = torch.zeros(1, 1, 10, 10, 10)
    y.view(-1)[:n_target] = 1
    perfect = y.clone()
    one_fp = perfect.clone()
    one_fp.view(-1)[-1] = 1.0
    one_fn = perfect.clone()
    one_fn.view(-1)[0] = 0.0
    fp_cost = lessmann_loss(one_fp, y, None, fp_weight).item()
    fn_cost = lessmann_loss(one_fn, y, None, fp_weight).item()
    assert fp_cost == pytest.approx(fp_weight * fn_cost, rel=1e-6)
    assert fn_cost == pytest.approx(1 / 1000, rel=1e-6)


def test_perfect_prediction_is_zero_and_all_wrong_is_known():
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.random((2, 1, 6, 6, 6)) > 0.6).float()
    w = torch.from_numpy(rng.random((2, 1, 6, 6, 6)) * 8 + 1).float()
    assert lessmann_loss(y, y, w, fp_weight=0.3).item() == 0.0
    # all wrong: FP = sum(w (1 - y)) / N, FN = sum(w y) / N per sample
    dims = (1, 2, 3, 4)
    for fpw in (0.3, 1.0):
        expected = ((fpw * (w * (1 - y)).sum(dims) + (w * y).sum(dims)) / 216).mean().item()
        assert lessmann_loss(1 - y, y, w, fp_weight=fpw).item() == pytest.approx(expected, rel=1e-6)
    # symmetry: swapping prediction and target swaps the FP and FN terms (equal at fp_weight = 1)
    p = torch.from_numpy(rng.random((2, 1, 6, 6, 6))).float()
    assert lessmann_loss(p, y, w, 1.0).item() == pytest.approx(lessmann_loss(y, p, w, 1.0).item(), rel=1e-6)


def test_from_logits_matches_sigmoid():
    z = torch.tensor([[[-2.0, 0.0, 3.0]]])
    y = torch.tensor([[[0.0, 1.0, 1.0]]])
    expected = lessmann_loss(torch.sigmoid(z), y, None, 0.7)
    assert lessmann_loss_from_logits(z, y, None, 0.7).item() == pytest.approx(expected.item(), abs=1e-7)
    assert lessmann_loss_from_logits(z.half(), y, None, 0.7).dtype == torch.float32


def test_loss_is_differentiable():
    z = torch.zeros(1, 1, 3, 3, 3, requires_grad=True)
    y = torch.zeros(1, 1, 3, 3, 3)
    y[0, 0, 1, 1, 1] = 1
    lessmann_loss_from_logits(z, y, None, 1.0).backward()
    assert z.grad[0, 0, 1, 1, 1] < 0 < z.grad[0, 0, 0, 0, 0]


# ----------------------------------------------------------------------------------------------- weight map
def _slab(n_in, length=60):
    t = np.zeros((3, 3, length), bool)
    t[:, :, :n_in] = True
    return t


def test_weight_map_surface_far_and_exact_distance():
    t = _slab(20)  # surface voxels: k = 19 (the array edges are not a surface)
    w = border_weight_map(t, (1, 1, 1), gamma=8.0, sigma_mm=6.0)
    assert w.dtype == np.float32 and w.shape == t.shape
    assert np.all(w[:, :, 19] == np.float32(9.0))  # gamma + 1 on the surface
    assert np.allclose(w[:, :, 25], 8 * math.exp(-1) + 1, atol=1e-6)  # 6 mm outside
    assert np.allclose(w[:, :, 13], 8 * math.exp(-1) + 1, atol=1e-6)  # 6 mm inside
    assert np.allclose(w[:, :, 22], 8 * math.exp(-9 / 36) + 1, atol=1e-6)
    assert np.all(np.abs(w[:, :, 55:] - 1.0) < 1e-6)  # -> 1 far away (36 mm: 8 e^-36 ~ 2e-15)
    assert np.all(np.diff(w[1, 1, 19:]) <= 0)  # decreasing away from the surface


def test_weight_map_anisotropic_spacing():
    w = border_weight_map(_slab(20), (1.0, 1.0, 2.0))
    assert np.allclose(w[:, :, 22], 8 * math.exp(-36 / 36) + 1, atol=1e-6)  # 3 voxels * 2 mm
    # single voxel: distance along a diagonal is sqrt(sum((offset * spacing)^2))
    t = np.zeros((7, 7, 7), bool)
    t[3, 3, 3] = True
    w = border_weight_map(t, (1.0, 2.0, 3.0), gamma=8.0, sigma_mm=6.0)
    assert w[3, 3, 3] == np.float32(9.0)
    assert w[4, 4, 4] == pytest.approx(8 * math.exp(-14 / 36) + 1, abs=1e-6)
    assert w[3, 3, 5] == pytest.approx(8 * math.exp(-36 / 36) + 1, abs=1e-6)
    assert w[3, 5, 3] == pytest.approx(8 * math.exp(-16 / 36) + 1, abs=1e-6)


def test_weight_map_empty_and_full_target_all_ones():
    assert np.all(border_weight_map(np.zeros((4, 5, 6), bool)) == 1.0)
    assert np.all(border_weight_map(np.ones((4, 5, 6), bool)) == 1.0)


def test_batched_torch_weight_maps():
    t = np.stack([_slab(20), _slab(5)])[:, None]
    w = border_weight_maps_torch(torch.from_numpy(t).float(), (1, 1, 1))
    assert w.dtype == torch.float32 and tuple(w.shape) == t.shape
    assert np.array_equal(w[1, 0].numpy(), border_weight_map(t[1, 0]))
    assert np.array_equal(w[0, 0].numpy(), border_weight_map(t[0, 0]))


def test_surface_definition():
    t = np.zeros((5, 5, 5), bool)
    t[1:4, 1:4, 1:4] = True
    s = target_surface(t)
    assert s.sum() == 26 and not s[2, 2, 2]  # every voxel of the 3x3x3 cube but the centre
    assert np.all(border_weight_map(t)[s] == np.float32(9.0))
    assert border_weight_map(t)[2, 2, 2] == pytest.approx(8 * math.exp(-1 / 36) + 1, abs=1e-6)


# ------------------------------------------------------------------------------------------------ schedule
def test_fp_schedule_endpoints_monotonic_midpoint():
    n = 40
    vals = [fp_weight_schedule(e, n) for e in range(n)]
    assert vals[0] == pytest.approx(0.1, abs=1e-12)
    assert vals[-1] == pytest.approx(1.0, abs=1e-12)
    assert all(b > a for a, b in zip(vals, vals[1:]))
    assert fp_weight_schedule((n - 1) / 2, n) == pytest.approx(0.55, abs=1e-12)
    # sigmoid shape: slow at the ends, fast in the middle
    assert vals[1] - vals[0] < vals[20] - vals[19]
    assert fp_weight_schedule(0, 10, start=0.2, end=0.8) == pytest.approx(0.2)
    assert fp_weight_schedule(9, 10, start=0.2, end=0.8) == pytest.approx(0.8)
    assert fp_weight_schedule(100, 10) == pytest.approx(1.0)  # clipped
    assert fp_weight_schedule(0, 1) == 1.0


# -------------------------------------------------------------------------------------- deep supervision
def test_nnunet_deep_supervision_weights():
    w = nnunet_deep_supervision_weights(3)
    assert np.allclose(w, [1 / 1.5, 0.5 / 1.5, 0.0])
    assert nnunet_deep_supervision_weights(4)[-1] == 0 and nnunet_deep_supervision_weights(4).sum() == pytest.approx(1)
    assert nnunet_deep_supervision_weights(3, ddp_without_compile=True)[-1] > 0
    assert np.allclose(nnunet_deep_supervision_weights(1), [1.0])


def test_deep_supervision_combination():
    torch.manual_seed(0)
    y = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    ys = downsample_for_deep_supervision(y, [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    assert [tuple(t.shape) for t in ys] == [(2, 1, 8, 8, 8), (2, 1, 4, 4, 4), (2, 1, 2, 2, 2)]
    outs = [torch.randn_like(t) for t in ys]
    ws = [torch.rand_like(t) + 1 for t in ys]
    got = deep_supervision_loss(lessmann_loss_from_logits, outs, ys, ws, fp_weight=0.4)
    l0 = lessmann_loss_from_logits(outs[0], ys[0], ws[0], 0.4)
    l1 = lessmann_loss_from_logits(outs[1], ys[1], ws[1], 0.4)
    assert got.item() == pytest.approx((l0.item() * 1 + l1.item() * 0.5) / 1.5, abs=1e-6)
    # explicit weights, and a plain tensor output (deep supervision off) uses the full-resolution target
    got2 = deep_supervision_loss(lessmann_loss_from_logits, outs, ys, None, ds_weights=[0, 0, 1], fp_weight=0.4)
    assert got2.item() == pytest.approx(lessmann_loss_from_logits(outs[2], ys[2], None, 0.4).item(), abs=1e-7)
    got3 = deep_supervision_loss(lessmann_loss_from_logits, outs[0], ys, ws, fp_weight=0.4)
    assert got3.item() == pytest.approx(l0.item(), abs=1e-7)
    with pytest.raises(ValueError):
        deep_supervision_loss(lessmann_loss_from_logits, outs, ys[:2], None)
