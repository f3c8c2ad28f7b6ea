"""nnunet_vertkd.centroids: the one transform of centroid voxel coordinates between grids."""
import pytest
import SimpleITK as sitk

from nnunet_vertkd.centroids import transform_centroids


def test_transform_centroids_through_physical_space():
    src = sitk.Image(10, 10, 10, sitk.sitkUInt8)
    src.SetSpacing((1.0, 1.0, 2.0))
    src.SetOrigin((10.0, 0.0, 0.0))
    dst = sitk.Image(5, 5, 5, sitk.sitkUInt8)
    dst.SetSpacing((2.0, 2.0, 4.0))
    # voxel (4, 2, 3) of src is the point (14, 2, 6) mm, i.e. voxel (7, 1, 1.5) of dst
    (xyz,) = transform_centroids({20: (4.0, 2.0, 3.0)}, src, dst).values()
    assert xyz == pytest.approx((7.0, 1.0, 1.5))
    flipped = sitk.Image(src)
    flipped.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    back = transform_centroids(transform_centroids({1: (4.0, 2.0, 3.0)}, src, flipped), flipped, src)
    assert back[1] == pytest.approx((4.0, 2.0, 3.0))
