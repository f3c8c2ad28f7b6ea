"""Multi-teacher distillation terms (Ben Loussaief et al.): adaptive weights, binary KL, attention transfer, region
contrast, adapters, Eq. 6/7. Hand-computed values, identities and symmetries; tiny tensors only."""
import math

import pytest
import torch

from nnunet_vertkd.trainers.losses.multi_teacher import (
    adaptive_teacher_weights, attention_transfer_loss, binary_kl, ensemble_log_probs, feature_adapter,
    mid_loss_per_sample, multi_teacher_kl_loss, multi_teacher_total_loss, region_contrast, region_contrast_loss,
    resize_mask, soft_dice_loss_per_sample, teacher_weights_from_dice_losses, weighted_teacher_mean)

BIG = 40.0  # sigmoid(+-40) == 1 / 0 in float32


def _target_and_two_teachers():
    """1 x 1 x 4 x 5 x 1 volume (20 voxels), target = first 10 voxels.
    Teacher A: 8 of the 10 + 2 false positives -> Dice 2*8/(10+10) = 0.8.
    Teacher B: 4 of the 10 + 6 false positives -> Dice 2*4/(10+10) = 0.4."""
    y = torch.zeros(20)
    y[:10] = 1
    a = torch.zeros(20)
    a[:8] = 1
    a[10:12] = 1
    b = torch.zeros(20)
    b[:4] = 1
    b[10:16] = 1
    shape = (1, 1, 4, 5, 1)
    logits = [(2 * t - 1).mul(BIG).reshape(shape) for t in (a, b)]
    return y.reshape(shape), logits


def test_soft_dice_loss_hand_values():
    y, (za, zb) = _target_and_two_teachers()
    la = soft_dice_loss_per_sample(torch.sigmoid(za), y, smooth=0.0)
    lb = soft_dice_loss_per_sample(torch.sigmoid(zb), y, smooth=0.0)
    assert la.item() == pytest.approx(0.2, abs=1e-6) and lb.item() == pytest.approx(0.6, abs=1e-6)
    # smooth 1: 1 - (2*8 + 1) / (20 + 1)
    assert soft_dice_loss_per_sample(torch.sigmoid(za), y, 1.0).item() == pytest.approx(1 - 17 / 21, abs=1e-6)
    # empty prediction and empty target: Dice 1 (loss 0), with or without smoothing
    empty = torch.zeros(1, 1, 3, 3, 3)
    assert soft_dice_loss_per_sample(empty, empty, 0.0).item() == 0.0
    assert soft_dice_loss_per_sample(empty, empty, 1.0).item() == 0.0


def test_two_teacher_weights_hand_computed():
    y, logits = _target_and_two_teachers()
    w, losses = adaptive_teacher_weights(logits, y, mode="dice", smooth=0.0)
    assert losses[0].tolist() == pytest.approx([0.2, 0.6], abs=1e-6)
    # better teacher (Dice 0.8) weighs more: 0.8 / (0.8 + 0.4) = 2/3, 0.4 / 1.2 = 1/3
    assert w[0].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-6)
    # the formula as printed by Ben Loussaief et al. (w_j = L_j / sum L): 0.2 / 0.8 and 0.6 / 0.8 -- the worse teacher wins
    w_printed, _ = adaptive_teacher_weights(logits, y, mode="dice_loss_printed", smooth=0.0)
    assert w_printed[0].tolist() == pytest.approx([0.25, 0.75], abs=1e-6)
    w_eq, _ = adaptive_teacher_weights(logits, y, mode="equal", smooth=0.0)
    assert w_eq[0].tolist() == [0.5, 0.5]
    # default smoothing s = 1: Dice (16+1)/21 and (8+1)/21 -> weights 17/26, 9/26
    w_s1, _ = adaptive_teacher_weights(logits, y)
    assert w_s1[0].tolist() == pytest.approx([17 / 26, 9 / 26], abs=1e-6)


def test_weights_are_per_input_and_permutation_equivariant():
    y, (za, zb) = _target_and_two_teachers()
    # two inputs in one batch; on the second the teachers' roles are swapped
    y2 = torch.cat([y, y])
    t1, t2 = torch.cat([za, zb]), torch.cat([zb, za])
    w, _ = adaptive_teacher_weights([t1, t2], y2, smooth=0.0)
    assert torch.allclose(w, torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]]), atol=1e-6)
    assert torch.allclose(w.sum(1), torch.ones(2))
    w_rev, _ = adaptive_teacher_weights([t2, t1], y2, smooth=0.0)
    assert torch.allclose(w_rev, w.flip(1))
    # identical teachers -> equal weights; three teachers sum to one
    w3, _ = adaptive_teacher_weights([za, za, za], y, smooth=0.0)
    assert w3[0].tolist() == pytest.approx([1 / 3] * 3)


def test_weights_fallbacks_and_errors():
    # every teacher Dice 0 -> uniform (dice mode); every teacher perfect -> uniform (printed mode)
    assert teacher_weights_from_dice_losses(torch.ones(1, 2)).tolist() == [[0.5, 0.5]]
    assert teacher_weights_from_dice_losses(torch.zeros(1, 2), "dice_loss_printed").tolist() == [[0.5, 0.5]]
    assert teacher_weights_from_dice_losses(torch.tensor([[0.0, 1.0]])).tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError):
        teacher_weights_from_dice_losses(torch.zeros(1, 2), "softmax")
    with pytest.raises(ValueError):
        teacher_weights_from_dice_losses(torch.zeros(2))


def _kl_hand(q, p):
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def test_binary_kl_hand_value_and_direction():
    # teacher logit ln 4 -> q = 0.8, student logit 0 -> p = 0.5, T = 1
    zt = torch.full((1, 1, 2, 2, 2), math.log(4.0))
    zs = torch.zeros(1, 1, 2, 2, 2)
    w1 = torch.ones(1, 1)
    kl = multi_teacher_kl_loss(zs, [zt], w1, temperature=1.0)
    assert kl.item() == pytest.approx(_kl_hand(0.8, 0.5), abs=1e-6)  # 0.19274
    assert kl.item() == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4), abs=1e-6)
    rev = multi_teacher_kl_loss(zs, [zt], w1, temperature=1.0, direction="student_teacher")
    assert rev.item() == pytest.approx(_kl_hand(0.5, 0.8), abs=1e-6)  # 0.22314: KL is not symmetric
    assert abs(rev.item() - kl.item()) > 0.02
    # temperature: (z_s, z_t) at T equals (z_s / T, z_t / T) at T = 1
    zs2 = torch.randn(2, 1, 3, 3, 3)
    zt2 = [torch.randn(2, 1, 3, 3, 3) * 5]
    w2 = torch.ones(2, 1)
    assert multi_teacher_kl_loss(zs2, zt2, w2, 4.0).item() == pytest.approx(
        multi_teacher_kl_loss(zs2 / 4, [zt2[0] / 4], w2, 1.0).item(), rel=1e-5)
    with pytest.raises(ValueError):
        multi_teacher_kl_loss(zs, [zt], w1, direction="sideways")
    with pytest.raises(ValueError):
        multi_teacher_kl_loss(zs, [zt[..., :1]], w1)


def test_kl_identities_and_ensemble():
    torch.manual_seed(0)
    zs = torch.randn(2, 1, 4, 4, 4)
    za, zb = torch.randn(2, 1, 4, 4, 4) * 3, torch.randn(2, 1, 4, 4, 4) * 3
    # zero when the student equals the (single) teacher; >= 0 otherwise
    assert multi_teacher_kl_loss(za, [za], torch.ones(2, 1)).item() == pytest.approx(0.0, abs=1e-6)
    assert multi_teacher_kl_loss(zs, [za, zb], torch.full((2, 2), 0.5)).item() > 0
    # weights (1, 0) = the first teacher alone; per-sample weights select per sample
    one_hot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert multi_teacher_kl_loss(zs, [za, zb], one_hot).item() == pytest.approx(
        multi_teacher_kl_loss(zs, [za], torch.ones(2, 1)).item(), rel=1e-6)
    # the ensemble is the weighted mean of the softened teacher probabilities
    w = torch.tensor([[0.25, 0.75], [0.6, 0.4]])
    log_q, log_1mq = ensemble_log_probs([za, zb], w, temperature=2.0)
    q = w[:, 0].view(2, 1, 1, 1, 1) * torch.sigmoid(za / 2) + w[:, 1].view(2, 1, 1, 1, 1) * torch.sigmoid(zb / 2)
    assert torch.allclose(log_q.exp(), q, atol=1e-6) and torch.allclose(log_1mq.exp(), 1 - q, atol=1e-6)
    # KL(q || p) equals the two-class softmax KL with logits (0, z)
    ps = torch.softmax(torch.stack([torch.zeros_like(zs), zs]), 0)
    pt = torch.softmax(torch.stack([torch.zeros_like(za), za]), 0)
    ref = (pt * (pt.log() - ps.log())).sum(0).reshape(2, -1).mean(1).mean()
    assert multi_teacher_kl_loss(zs, [za], torch.ones(2, 1), 1.0).item() == pytest.approx(ref.item(), rel=1e-5)
    # binary_kl of a distribution with itself is 0
    lp = torch.log(torch.tensor([0.3]))
    assert binary_kl(lp, torch.log1p(-lp.exp()), lp, torch.log1p(-lp.exp())).item() == pytest.approx(0.0)


def test_kl_gradient_goes_to_student_only():
    zs = torch.zeros(1, 1, 2, 2, 2, requires_grad=True)
    zt = torch.full((1, 1, 2, 2, 2), math.log(4.0), requires_grad=True)
    T = 2.0
    kl = multi_teacher_kl_loss(zs, [zt], torch.ones(1, 1), temperature=T)
    kl.backward()
    assert zt.grad is None
    # d KL(q || sigmoid(z/T)) / dz = (p - q) / T per voxel, / N for the mean
    p, q = 0.5, 1 / (1 + math.exp(-math.log(4.0) / T))
    assert zs.grad.flatten().tolist() == pytest.approx([(p - q) / T / 8] * 8, abs=1e-6)


def test_float32_under_half_inputs():
    zs = torch.randn(1, 1, 4, 4, 4).to(torch.bfloat16)
    zt = torch.randn(1, 1, 4, 4, 4).to(torch.bfloat16)
    assert multi_teacher_kl_loss(zs, [zt], torch.ones(1, 1)).dtype == torch.float32
    f = torch.rand(1, 3, 4, 4, 4).to(torch.bfloat16)
    assert attention_transfer_loss(f, f).dtype == torch.float32


# ----------------------------------------------------------------------------------- attention transfer
def test_attention_transfer_hand_value():
    # 1 channel, 4 voxels: a_s = (1, 0, 0, 0) -> normalised (1, 0, 0, 0); a_t = (1, 1, 1, 1) -> (.5, .5, .5, .5)
    fs = torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 4, 1, 1)
    ft = torch.ones(1, 1, 4, 1, 1)
    # L1 = 0.5 + 3 * 0.5 = 2, / sqrt(4) = 1
    assert attention_transfer_loss(fs, ft).item() == pytest.approx(1.0, abs=1e-6)
    # signs and channels: a = sum_c |f_c|; a student with 2 channels (-1, 0) and (0, 0) has the same map
    fs2 = torch.zeros(1, 2, 4, 1, 1)
    fs2[0, 0, 0] = -1.0
    assert attention_transfer_loss(fs2, ft).item() == pytest.approx(1.0, abs=1e-6)


def test_attention_transfer_identities():
    torch.manual_seed(1)
    ft = torch.rand(2, 16, 4, 4, 4)
    fs = torch.rand(2, 8, 4, 4, 4)
    assert torch.allclose(attention_transfer_loss(ft, ft), torch.zeros(2), atol=1e-6)
    # invariant to a positive scale and to the channel order / count as long as the map is the same
    assert torch.allclose(attention_transfer_loss(3 * ft, ft), torch.zeros(2), atol=1e-6)
    assert torch.allclose(attention_transfer_loss(ft[:, torch.randperm(16)], ft), torch.zeros(2), atol=1e-6)
    assert torch.allclose(attention_transfer_loss(ft.sum(1, keepdim=True), ft), torch.zeros(2), atol=1e-5)
    # symmetric, in [0, 2], per sample
    ab, ba = attention_transfer_loss(fs, ft), attention_transfer_loss(ft, fs)
    assert ab.shape == (2,) and torch.allclose(ab, ba, atol=1e-6)
    assert ((ab > 0) & (ab <= 2)).all()
    # disjoint supports reach the bound 2 / sqrt(N) * ... : (1,0) vs (0,1) -> L1 2, / sqrt(2)
    a = torch.tensor([1.0, 0]).reshape(1, 1, 2, 1, 1)
    assert attention_transfer_loss(a, a.flip(2)).item() == pytest.approx(2 / math.sqrt(2), abs=1e-6)
    # different spatial sizes: the student map is resized to the teacher's
    assert attention_transfer_loss(torch.ones(1, 4, 2, 2, 2), torch.ones(1, 8, 4, 4, 4)).item() == pytest.approx(
        0.0, abs=1e-6)


# ----------------------------------------------------------------------------------- region contrast
def _two_region_features(fg_vec, bg_vec):
    """(1, C, 4, 1, 1) features: voxels 0-1 foreground with fg_vec, voxels 2-3 background with bg_vec."""
    f = torch.zeros(1, len(fg_vec), 4, 1, 1)
    f[0, :, :2, 0, 0] = torch.tensor(fg_vec).view(-1, 1)
    f[0, :, 2:, 0, 0] = torch.tensor(bg_vec).view(-1, 1)
    mask = torch.tensor([1.0, 1, 0, 0]).reshape(1, 1, 4, 1, 1)
    return f, mask


def test_region_contrast_hand_values():
    f, m = _two_region_features([1.0, 0.0], [1.0, 1.0])
    rc, valid = region_contrast(f, m)
    assert valid.item() and rc.item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)  # cos 45 deg
    g, _ = _two_region_features([0.0, 1.0, 0.0], [1.0, 0.0, 0.0])  # orthogonal centres, 3 channels
    assert region_contrast(g, m)[0].item() == pytest.approx(0.0, abs=1e-6)
    # |rc_s - rc_t| with different channel counts
    assert region_contrast_loss(f, g, m).item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert region_contrast_loss(g, f, m).item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_region_contrast_identities():
    torch.manual_seed(2)
    f = torch.rand(2, 6, 4, 4, 4)
    m = (torch.rand(2, 1, 8, 8, 8) > 0.6).float()  # mask at twice the resolution: area-averaged
    assert torch.allclose(region_contrast_loss(f, f, m), torch.zeros(2), atol=1e-6)
    assert torch.allclose(region_contrast_loss(2.5 * f, f, m), torch.zeros(2), atol=1e-6)  # scale invariant
    g = torch.rand(2, 3, 4, 4, 4)
    assert torch.allclose(region_contrast_loss(f, g, m), region_contrast_loss(g, f, m), atol=1e-6)  # symmetric
    # no foreground in sample 1 -> invalid, term 0
    m2 = m.clone()
    m2[1] = 0
    rc, valid = region_contrast(f, m2)
    assert valid.tolist() == [True, False] and rc[1].item() == 0.0
    assert region_contrast_loss(f, g, m2)[1].item() == 0.0
    # area resizing gives foreground fractions
    mm = torch.zeros(1, 1, 2, 2, 2)
    mm[0, 0, 0, 0, 0] = 1
    assert resize_mask(mm, (1, 1, 1)).item() == pytest.approx(1 / 8)
    assert resize_mask(mm, (4, 4, 4)).sum().item() == 8  # nearest when growing


# ----------------------------------------------------------------------------------- adapters, Mid, total
def test_feature_adapter():
    assert feature_adapter(16, 16) is None
    a = feature_adapter(8, 16)
    assert isinstance(a, torch.nn.Conv3d) and a.kernel_size == (1, 1, 1)
    assert sum(p.numel() for p in a.parameters()) == 8 * 16 + 16
    assert a(torch.zeros(2, 8, 3, 5, 7)).shape == (2, 16, 3, 5, 7)
    assert isinstance(feature_adapter(4, 2, ndim=2), torch.nn.Conv2d)


def test_mid_loss_hand_value_and_gradients():
    # layer 1: AT hand case (1.0) and RC: student 1 channel, no contrast info -> rc_s = 1, teacher rc_t = 1/sqrt2
    f, m = _two_region_features([1.0, 0.0], [1.0, 1.0])
    fs = torch.tensor([1.0, 1.0, 1.0, 1.0]).reshape(1, 1, 4, 1, 1)  # fg = bg = 1 -> rc = 1, attention uniform
    at = attention_transfer_loss(fs, f).item()
    a_t = torch.tensor([1.0, 1.0, 2.0, 2.0])  # |1|+|0|, |1|+|1|
    a_t = a_t / a_t.norm()
    assert at == pytest.approx((a_t - 0.5).abs().sum().item() / 2, abs=1e-6)
    mid = mid_loss_per_sample([fs], [f], m)
    assert mid.item() == pytest.approx(at + (1 - 1 / math.sqrt(2)), abs=1e-6)
    assert mid_loss_per_sample([fs], [f], m, use_region_contrast=False).item() == pytest.approx(at, abs=1e-6)
    # two layers add up
    assert mid_loss_per_sample([fs, fs], [f, f], m).item() == pytest.approx(2 * mid.item(), abs=1e-6)
    # with an adapter the gradient reaches the adapter and the student, never the teacher
    torch.manual_seed(3)
    fs = torch.rand(2, 8, 4, 4, 4, requires_grad=True)
    ft = torch.rand(2, 16, 4, 4, 4, requires_grad=True)
    mask = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    adapter = feature_adapter(8, 16)
    mid = mid_loss_per_sample([fs], [ft], mask, [adapter])
    mid.sum().backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    assert ft.grad is None


def test_weighted_teacher_mean_and_total():
    mids = torch.tensor([[1.0, 3.0], [2.0, 4.0]])
    w = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    # sample 0: 0.75 + 0.75 = 1.5; sample 1: 3.0 -> mean 2.25
    assert weighted_teacher_mean(mids, w).item() == pytest.approx(2.25)
    with pytest.raises(ValueError):
        weighted_teacher_mean(mids, w[:, :1])
    seg, mid, kl = torch.tensor(0.5), torch.tensor(2.0), torch.tensor(0.3)
    assert multi_teacher_total_loss(seg, mid, kl).item() == pytest.approx(0.5 + 0.2 + 0.03)
    assert multi_teacher_total_loss(seg, mid, kl, alpha=1.0, beta=0.0).item() == pytest.approx(2.5)
    assert multi_teacher_total_loss(seg, None, None).item() == pytest.approx(0.5)
