"""Exact, hand-computed checks of the per-vertebra metrics (Dice, Hausdorff, directed ASSD)."""
import math

import numpy as np
import pytest

from nnunet_vertkd.evaluation.metrics import assd_mm, dice, hausdorff_distance_mm, surface_metrics_mm


def cube(shape=(12, 12, 12), start=(2, 2, 2), size=3):
    m = np.zeros(shape, dtype=np.uint8)
    m[tuple(slice(s, s + size) for s in start)] = 1
    return m


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_cube_dice_and_hd(k):
    n = 4
    a = cube(start=(2, 2, 2), size=n)
    b = cube(start=(2 + k, 2, 2), size=n)
    # overlap n*n*(n-k) of 2*n^3 voxels
    assert dice(a, b) == pytest.approx((n - k) / n)
    # the top face of a lies k voxels above b's top face: HD = k * spacing exactly
    assert hausdorff_distance_mm(a, b, 1.0) == pytest.approx(k)
    assert hausdorff_distance_mm(a, b, (1.5, 1.0, 1.0)) == pytest.approx(1.5 * k)


def test_shifted_3cube_assd_hand_computed():
    # 3x3x3 cubes shifted by one voxel along array axis 0. Surface of each: 26 voxels (all but the centre).
    # a -> b: the 9 voxels of a's top row are 1 voxel from b's top face; a's bottom-centre voxel is inside b
    # and 1 voxel from b's surface; the other 16 surface voxels of a lie on b's surface -> 10/26.
    a = cube(size=3, start=(2, 2, 2))
    b = cube(size=3, start=(3, 2, 2))
    assert assd_mm(a, b, 1.0) == pytest.approx(10 / 26)
    assert assd_mm(b, a, 1.0) == pytest.approx(10 / 26)
    # spacing 2 mm along the shift axis: top row 9 * 2 mm, bottom centre min(2 mm, 1 mm in-plane) = 1 mm
    assert assd_mm(a, b, (2.0, 1.0, 1.0)) == pytest.approx(19 / 26)
    s = surface_metrics_mm(a, b, (2.0, 1.0, 1.0))
    assert s == pytest.approx({"hd_mm": 2.0, "assd_a_to_b_mm": 19 / 26, "assd_b_to_a_mm": 19 / 26})


def test_directed_assd_is_directed():
    # a: single voxel inside big cube b (at its centre); surface of a = that voxel, 2 voxels from b's surface
    b = cube(size=5, start=(2, 2, 2))
    a = np.zeros_like(b)
    a[4, 4, 4] = 1
    assert assd_mm(a, b, 1.0) == pytest.approx(2.0)
    # b's 98 surface voxels to the single voxel: exact mean computed from their coordinates
    idx = np.argwhere(b)
    surf = idx[(idx.min(1) == 2) | (idx.max(1) == 6)]
    expected = np.linalg.norm(surf - np.array([4, 4, 4]), axis=1).mean()
    assert len(surf) == 98
    assert assd_mm(b, a, 1.0) == pytest.approx(expected)
    assert hausdorff_distance_mm(a, b, 1.0) == pytest.approx(math.sqrt(12))


def test_identity():
    a = cube(size=4)
    assert dice(a, a) == 1.0
    assert hausdorff_distance_mm(a, a, (3.0, 1.0, 0.5)) == 0.0
    assert assd_mm(a, a, 2.0) == 0.0


def test_symmetry():
    a = cube(size=4, start=(1, 2, 3))
    b = cube(size=3, start=(3, 4, 2))
    sp = (3.0, 0.8, 1.2)
    assert dice(a, b) == pytest.approx(dice(b, a))
    assert hausdorff_distance_mm(a, b, sp) == pytest.approx(hausdorff_distance_mm(b, a, sp))


@pytest.mark.parametrize("axis,k", [(0, 1), (0, 2), (1, 2), (2, 3)])
def test_anisotropic_spacing(axis, k):
    # spacing 3 mm along array axis 0 (k / superior-inferior), 1 mm in-plane
    sp = (3.0, 1.0, 1.0)
    start_b = [2, 2, 2]
    start_b[axis] += k
    a = cube(shape=(14, 14, 14), size=5)
    b = cube(shape=(14, 14, 14), size=5, start=tuple(start_b))
    assert hausdorff_distance_mm(a, b, sp) == pytest.approx(sp[axis] * k)


def test_empty_conventions():
    a = cube()
    e = np.zeros_like(a)
    assert math.isnan(dice(e, e))
    assert dice(a, e) == 0.0 and dice(e, a) == 0.0
    assert math.isnan(hausdorff_distance_mm(e, e, 1.0))
    assert hausdorff_distance_mm(a, e, 1.0) == math.inf
    assert assd_mm(e, a, 1.0) == math.inf
    assert math.isnan(assd_mm(e, e, 1.0))


def test_mask_touching_the_border_and_bad_input():
    a = np.ones((3, 3, 3), dtype=bool)   # whole array: border voxels are surface
    b = np.zeros_like(a)
    b[1:, :, :] = True
    assert hausdorff_distance_mm(a, b, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        dice(a, np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        hausdorff_distance_mm(a, b, (1.0, 1.0))
