"""fill_fragment: holes of a predicted vertebra filled, the spinal canal left open."""
import numpy as np
import pytest

from nnunet_vertkd.inference.fragment_filling import close_gaps, fill_fragment

SUPERIOR_AXIS = 0


def _hollow_box(shape=(20, 20, 20), outer=(3, 17), wall=2):
    m = np.zeros(shape, dtype=bool)
    a, b = outer
    m[a:b, a:b, a:b] = True
    m[a + wall:b - wall, a + wall:b - wall, a + wall:b - wall] = False
    return m


def test_enclosed_cavity_is_filled():
    shell = _hollow_box()
    filled = fill_fragment(shell, SUPERIOR_AXIS)
    solid = np.zeros_like(shell)
    solid[3:17, 3:17, 3:17] = True
    assert np.array_equal(filled, solid)


def test_cavity_open_at_one_face_is_filled_in_sagittal_and_coronal_slices():
    # a body whose shell has a hole on its anterior face: not enclosed in 3-D, but enclosed in every sagittal
    # (axis 2 normal) slice ... except those through the opening; the coronal slices close it
    shell = _hollow_box()
    shell[8:12, 8:12, 3:5] = False  # opening in the face at low index of axis 2
    filled = fill_fragment(shell, SUPERIOR_AXIS)
    assert filled[5:15, 5:15, 5:15].all()


def test_canal_along_the_spine_stays_open():
    # a vertebral ring around a canal running along the superior-inferior axis (axis 0): in axial slices the canal
    # is enclosed, in 3-D and in sagittal/coronal slices it is not
    ring = np.zeros((12, 24, 24), dtype=bool)
    yy, xx = np.mgrid[:24, :24]
    r = np.hypot(yy - 11.5, xx - 11.5)
    ring[2:10] = (r >= 5) & (r <= 9)
    filled = fill_fragment(ring, SUPERIOR_AXIS)
    assert np.array_equal(filled, ring)
    # the same ring around an axis that is not the spine's would be filled in its slices
    assert not np.array_equal(fill_fragment(np.moveaxis(ring, 0, 2), SUPERIOR_AXIS), np.moveaxis(ring, 0, 2))


@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_solid_and_empty_fragments_are_unchanged(iterations):
    solid = np.zeros((16, 16, 16), dtype=bool)
    solid[4:12, 3:13, 5:11] = True
    assert np.array_equal(fill_fragment(solid, SUPERIOR_AXIS, iterations), solid)
    empty = np.zeros_like(solid)
    assert not fill_fragment(empty, SUPERIOR_AXIS, iterations).any()


def test_fragment_touching_the_patch_border_keeps_its_border_voxels():
    m = np.zeros((10, 10, 10), dtype=bool)
    m[0:6, 0:10, 0:4] = True
    for iterations in (0, 2):
        out = fill_fragment(m, SUPERIOR_AXIS, iterations)
        assert out[m].all()
        assert np.array_equal(out, m)  # a box is convex: nothing to add


def test_closing_bridges_a_narrow_gap_only_when_asked():
    m = np.zeros((9, 9, 20), dtype=bool)
    m[2:7, 2:7, 2:9] = True
    m[2:7, 2:7, 10:18] = True  # a one-voxel gap at index 9
    assert not fill_fragment(m, SUPERIOR_AXIS, 0)[4, 4, 9]
    bridged = close_gaps(m, 1)
    assert bridged[3:6, 3:6, 9].all() and bridged[m].all()
    assert np.array_equal(close_gaps(m, 0), m)


def test_input_is_not_modified():
    shell = _hollow_box()
    before = shell.copy()
    fill_fragment(shell, SUPERIOR_AXIS, 1)
    assert np.array_equal(shell, before)
