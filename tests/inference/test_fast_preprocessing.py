"""The converter-grid preprocessing of the predictor (nnunet_vertkd/inference/fast_preprocessing.py)."""
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.inference import fast_preprocessing as F


def image(arr_zyx, spacing=(0.8, 0.8, 1.0), origin=(3.0, -7.0, 11.0), direction=None):
    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def test_target_grid_matches_the_converter():
    from nnunet_vertkd.dataset_conversion.case_conversion import target_grid
    img = image(np.zeros((30, 40, 50), np.int16), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    a, b = F.target_grid(img, (2.0, 2.0, 2.0)), target_grid(img, 2.0)
    assert a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin())
    assert a.GetDirection() == b.GetDirection() and a.GetSpacing() == b.GetSpacing()


def test_spacing_follows_nnunet_transpose():
    assert F.sitk_spacing([1.0, 2.0, 3.0], [0, 1, 2]) == (3.0, 2.0, 1.0)
    assert F.sitk_spacing([1.0, 2.0, 3.0], [2, 0, 1]) == (1.0, 3.0, 2.0)  # array axes z, y, x get 2, 3, 1


@pytest.mark.parametrize("target", [(4.0, 4.0, 4.0), (2.0, 2.5, 3.0)])
def test_sparse_downsampling_equals_smoothing_then_linear_resampling(target):
    """Same values as the converter's SimpleITK route (recursive Gaussian + linear) within a few HU."""
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 200, size=(60, 50, 45)).astype(np.float32)
    arr[20:40, 10:30, 15:35] += 800
    from scipy import ndimage
    arr = ndimage.gaussian_filter(arr, 1.0).astype(np.int16)
    img = image(arr)
    ref = F.target_grid(img, target)
    want = sitk.GetArrayFromImage(F._resample(F.smooth_for_downsampling(img, target), ref, sitk.sitkLinear,
                                              float(arr.min()), sitk.sitkFloat32))
    got_img = F.downsample_like_converter(img, ref, slab=7)
    got = sitk.GetArrayFromImage(got_img)
    assert got.shape == want.shape and got_img.GetOrigin() == ref.GetOrigin()
    inner = tuple(slice(1, -1) for _ in range(3))  # the borders' boundary rules differ (both renormalise)
    assert np.abs(got[inner] - want[inner]).max() < 0.03 * np.ptp(arr)


def test_identity_at_the_same_spacing():
    arr = np.random.default_rng(1).normal(size=(12, 10, 8)).astype(np.float32)
    img = image(arr, spacing=(1.0, 1.0, 1.0))
    out = sitk.GetArrayFromImage(F.downsample_like_converter(img, F.target_grid(img, (1.0, 1.0, 1.0))))
    np.testing.assert_allclose(out, arr, atol=1e-5)


def test_region_is_in_plane_with_margin_and_keeps_the_spine_axis():
    """LPI image: sitk axis 2 (k) is superior-inferior and is kept whole; i, j are cut to the spine + margin."""
    grid = image(np.zeros((100, 80, 90), np.uint8), spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0))
    prob = np.zeros((25, 20, 22), np.float32)  # 4 mm grid over the same extent (90 / 4 rounds to 22)
    prob[5:15, 8:10, 10:12] = 0.9
    p = F.target_grid(grid, (4.0, 4.0, 4.0))
    pimg = sitk.GetImageFromArray(prob)
    pimg.CopyInformation(p)
    start, stop = F.region_of(pimg, 0.3, grid, margin_mm=5.0)
    assert (start[2], stop[2]) == (0, 100)
    # voxels i = 10..11 of the 4 mm grid cover 40..48 mm; +-5 mm margin (and a voxel of rounding)
    assert 33 <= start[0] <= 35 and 53 <= stop[0] <= 55
    assert 25 <= start[1] <= 27 and 45 <= stop[1] <= 47  # j = 8..9: 31.5..39.5 mm
    empty = sitk.GetImageFromArray(np.zeros_like(prob))
    empty.CopyInformation(p)
    assert F.region_of(empty, 0.3, grid, 5.0) == ((0, 0, 0), grid.GetSize())
    sub = F.sub_grid(grid, start, stop)
    assert np.allclose(sub.GetOrigin(), grid.TransformIndexToPhysicalPoint(start))
