"""Knowledge-distillation terms: soft outputs with temperature, logit matching (ED, ED x distance map)."""
import pytest
import torch

from nnunet_vertkd.trainers.losses.distillation import logit_matching_loss, soft_output_kd_loss, total_kd_loss
from nnunet_vertkd.trainers.losses.lessmann import lessmann_loss


def _logits(seed, shape=(2, 1, 4, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 3


def test_logit_matching_identical_is_zero_and_hand_value():
    z = _logits(0)
    assert logit_matching_loss(z, z.clone()).item() == 0.0
    assert logit_matching_loss(z, z.clone(), torch.rand_like(z) + 1).item() == 0.0
    s = torch.tensor([[[1.0, 2.0]]])
    t = torch.tensor([[[0.0, 0.0]]])
    assert logit_matching_loss(s, t).item() == pytest.approx(2.5)  # (1 + 4) / 2
    assert logit_matching_loss(s, t, torch.tensor([[[2.0, 1.0]]])).item() == pytest.approx(3.0)  # (2 + 4) / 2
    # per-sample mean, then batch mean
    s2 = torch.cat([s, torch.tensor([[[3.0, 3.0]]])])
    t2 = torch.zeros_like(s2)
    assert logit_matching_loss(s2, t2).item() == pytest.approx((2.5 + 9.0) / 2)


def test_logit_matching_symmetric():
    a, b = _logits(1), _logits(2)
    w = torch.rand_like(a) * 8 + 1
    assert logit_matching_loss(a, b).item() == pytest.approx(logit_matching_loss(b, a).item(), rel=1e-7)
    assert logit_matching_loss(a, b, w).item() == pytest.approx(logit_matching_loss(b, a, w).item(), rel=1e-7)


def test_soft_kd_equals_lessmann_with_hand_softened_targets():
    zs, zt = _logits(3), _logits(4)
    w = torch.rand_like(zs) * 8 + 1
    for T in (3.0, 4.0, 5.0):
        expected = lessmann_loss(torch.sigmoid(zs / T), torch.sigmoid(zt / T), w, 0.25)
        assert soft_output_kd_loss(zs, zt, w, 0.25, T).item() == pytest.approx(expected.item(), abs=1e-7)


def test_soft_kd_tiny_hand_value():
    zs = torch.tensor([[[0.0, 4.0]]])
    zt = torch.tensor([[[4.0, -4.0]]])
    # T = 4: p = [0.5, s(1)], y = [s(1), s(-1)] with s(1) = 0.7310586
    s1 = 1 / (1 + torch.exp(torch.tensor(-1.0)).item())
    p = [0.5, s1]
    y = [s1, 1 - s1]
    fp = ((1 - y[0]) * p[0] + (1 - y[1]) * p[1]) / 2
    fn = (y[0] * (1 - p[0]) + y[1] * (1 - p[1])) / 2
    assert soft_output_kd_loss(zs, zt, None, 1.0, 4.0).item() == pytest.approx(fp + fn, abs=1e-6)


def test_soft_kd_temperature_to_infinity():
    zs, zt = _logits(5), _logits(6)
    w = torch.rand_like(zs) * 8 + 1
    # p = y = 0.5 everywhere: FP = FN = mean(w * 0.25) per sample
    per_sample = (0.25 * w).mean(dim=tuple(range(1, w.ndim)))
    for fpw in (0.1, 1.0):
        expected = ((fpw + 1.0) * per_sample).mean().item()
        assert soft_output_kd_loss(zs, zt, w, fpw, 1e7).item() == pytest.approx(expected, rel=1e-5)


def test_soft_kd_temperature_to_zero_gives_hard_targets():
    zs, zt = _logits(7), _logits(8)
    zs = torch.where(zs.abs() < 0.5, torch.full_like(zs, 0.5), zs)  # keep away from 0
    zt = torch.where(zt.abs() < 0.5, torch.full_like(zt, -0.5), zt)
    w = torch.rand_like(zs) * 8 + 1
    hard = lessmann_loss((zs > 0).float(), (zt > 0).float(), w, 0.6)
    for T, tol in ((1e-2, 1e-6), (1e-4, 1e-7)):
        assert soft_output_kd_loss(zs, zt, w, 0.6, T).item() == pytest.approx(hard.item(), abs=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_for_low_precision_inputs(dtype):
    zs, zt = _logits(9).to(dtype), _logits(10).to(dtype)
    w = (torch.rand(zs.shape) * 8 + 1).to(dtype)
    kd = soft_output_kd_loss(zs, zt, w, 0.5, 4.0)
    lm = logit_matching_loss(zs, zt, w)
    assert kd.dtype == torch.float32 and lm.dtype == torch.float32
    ref_kd = soft_output_kd_loss(zs.float(), zt.float(), w.float(), 0.5, 4.0)
    ref_lm = logit_matching_loss(zs.float(), zt.float(), w.float())
    assert kd.item() == pytest.approx(ref_kd.item(), abs=1e-6)
    assert lm.item() == pytest.approx(ref_lm.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert soft_output_kd_loss(zs, zt, w, 0.5, 4.0).dtype == torch.float32
        assert logit_matching_loss(zs, zt, w).dtype == torch.float32


def test_no_gradient_into_teacher():
    teacher = torch.nn.Conv3d(1, 1, 1)
    student = torch.nn.Conv3d(1, 1, 1)
    x = torch.randn(1, 1, 4, 4, 4)
    zt, zs = teacher(x), student(x)
    w = torch.rand_like(zs) + 1
    loss = soft_output_kd_loss(zs, zt, w, 1.0, 4.0) + logit_matching_loss(zs, zt, w) + logit_matching_loss(zs, zt)
    loss.backward()
    assert teacher.weight.grad is None and teacher.bias.grad is None
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0


def test_total_and_shape_check():
    seg, kd = torch.tensor(0.3), torch.tensor(0.2)
    assert total_kd_loss(seg, kd).item() == pytest.approx(0.5)
    assert total_kd_loss(seg, kd, kd_weight=0.5).item() == pytest.approx(0.4)
    with pytest.raises(ValueError):
        soft_output_kd_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3), None, 1.0, 4.0)
    with pytest.raises(ValueError):
        logit_matching_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3))


def test_total_without_ground_truth_is_the_kd_term():
    seg, kd = torch.tensor(0.3), torch.tensor(0.2)
    assert total_kd_loss(seg, kd, kd_weight=0.5, use_ground_truth=False).item() == pytest.approx(0.1)
    assert total_kd_loss(seg, None).item() == pytest.approx(0.3)
    with pytest.raises(ValueError):
        total_kd_loss(seg, None, use_ground_truth=False)
