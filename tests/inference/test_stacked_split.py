"""Cutting a fragment of two stacked vertebrae between them (nnunet_vertkd.inference.stacked_split)."""
import numpy as np
import pytest

from nnunet_vertkd.inference.iterative import IterativeSettings, segment_vertebrae_iteratively
from nnunet_vertkd.inference.stacked_split import stacked_valley, upper_core_region, upper_of_stacked_pair


def test_valley_of_a_hand_made_profile():
    # humps of 20 and 40, valley of 4 at index 2: depth 4 / min(20, 40) = 0.2
    assert stacked_valley([10, 20, 4, 40, 10], 0.1) == (2, pytest.approx(0.2))


def test_single_hump_has_no_deep_valley():
    k, depth = stacked_valley([5, 20, 30, 20, 5], 0.1)
    assert depth >= 1.0  # every interior point is at least as high as the smaller of its sides' maxima


def test_tails_do_not_count_as_a_vertebra():
    # a body (big) and a thin process reaching down: the valley before the tail leaves < 20 % below it
    profile = [30, 40, 40, 30, 2, 6, 6, 2]
    assert stacked_valley(profile, 0.2)[1] > 1.0  # only rows inside the body qualify
    assert stacked_valley(profile, 0.05) == (4, pytest.approx(2 / 6))


def test_too_short_or_empty_profiles():
    assert stacked_valley([0, 0, 0], 0.1) is None
    assert stacked_valley([5, 5], 0.1) is None


def two_blocks(gap_area, axis=2, low=True):
    """Two 6-row blocks stacked along ``axis`` joined by a 1-row neck of ``gap_area`` voxels; label 1 on top."""
    lab = np.zeros((12, 12, 16), np.int16)
    lab[2:10, 2:10, 2:8] = 1
    lab[2:10, 2:10, 9:15] = 2
    side = int(round(np.sqrt(gap_area)))
    lab[2:2 + side, 2:2 + side, 8] = 1
    if not low:
        lab = lab[:, :, ::-1]
    return np.moveaxis(lab, 2, axis)


@pytest.mark.parametrize("axis,low", [(2, True), (2, False), (0, True), (1, False)])
def test_cut_keeps_the_upper_vertebra(axis, low):
    lab = two_blocks(4, axis, low)
    frag = upper_of_stacked_pair(lab > 0, axis, low, 0.65, 0.2)
    np.testing.assert_array_equal(frag, (lab == 1) & ~_neck(lab, axis, low))


def _neck(lab, axis, low):
    """The valley row (cut away with the lower part)."""
    idx = 8 if low else 16 - 1 - 8
    neck = np.zeros(lab.shape, bool)
    sl = [slice(None)] * 3
    sl[axis] = idx
    neck[tuple(sl)] = True
    return neck


def test_no_cut_without_a_deep_valley():
    lab = two_blocks(49)  # neck of 7 x 7 = 49 of 64 voxels per row: depth 0.77
    frag = lab > 0
    np.testing.assert_array_equal(upper_of_stacked_pair(frag, 2, True, 0.65, 0.2), frag)
    assert upper_of_stacked_pair(frag, 2, True, 0.8, 0.2).sum() < frag.sum()


def test_loop_separates_a_network_that_predicts_two_vertebrae_at_once():
    """A network that returns the topmost free vertebra together with the one below it (joined by a thin neck in
    the disc row): without the cut the pair becomes one instance, with it every vertebra is its own."""
    n, h, gap = 5, 6, 1
    lab = np.zeros((14, 14, 2 * 4 + n * h + (n - 1) * gap), np.int16)
    for v in range(n):
        lo = 4 + v * (h + gap)
        lab[3:11, 3:11, lo:lo + h] = v + 1

    def greedy(x):
        found = np.rint(x[0]).astype(int)
        free = found[(found > 0) & (x[1] < 0.5)]
        if free.size == 0:
            return np.zeros(x.shape[1:], np.float32)
        top = free.min()
        pair = ((found == top) | (found == top + 1)) & (x[1] < 0.5)
        z = np.flatnonzero(np.any(found == top, axis=(0, 1)))
        if (found == top + 1).any() and z[-1] + 1 < x.shape[3]:
            pair[5:7, 5:7, z[-1] + 1] = True  # the neck: 4 voxels in the disc row
        return pair.astype(np.float32)

    patch = (14, 14, 24)
    base = dict(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30)
    off = segment_vertebrae_iteratively(greedy, lab.astype(np.float32), lab > 0, 2, True, patch,
                                        IterativeSettings(SPLIT_STACKED_VERTEBRAE=False, **base))
    on = segment_vertebrae_iteratively(greedy, lab.astype(np.float32), lab > 0, 2, True, patch,
                                       IterativeSettings(SPLIT_STACKED_VERTEBRAE=True, **base))
    assert off.n_vertebrae < n
    assert on.n_vertebrae == n
    np.testing.assert_array_equal(on.instances, lab)


# ------------------------------------------------------------------------------------------ the cores test
def tilted_pair(tilt=0.5, neck=True):
    """Two 8-voxel-thick slabs stacked along axis 2 (superior at low index) with a disc of 2 voxels between them,
    both tilted by ``tilt`` voxels of axis 2 per voxel of axis 0 (a spine not aligned with the scan); the slabs
    touch through a 2 x 2 neck across the disc at one edge. Label 1 = upper, 2 = lower."""
    lab = np.zeros((16, 12, 40), np.int16)
    i, _, k = np.meshgrid(np.arange(16), np.arange(12), np.arange(40), indexing="ij")
    along = k - tilt * i  # position along the spine, constant on a tilted disc
    inside = (i >= 2) & (i < 14) & (np.arange(12)[None, :, None] >= 2) & (np.arange(12)[None, :, None] < 10)
    lab[inside & (along >= 10) & (along < 18)] = 1
    lab[inside & (along >= 20) & (along < 28)] = 2
    if neck:  # the two slabs touch at the i = 2 edge, across the disc
        lab[2:4, 5:7, 18:20] = 1
    return lab


def test_cores_cut_follows_a_tilted_disc():
    lab = tilted_pair()
    frag = lab > 0
    upper = upper_of_stacked_pair(frag, 2, True, 0.65, 0.2, "cores", 6, 3)
    np.testing.assert_array_equal(upper, lab == 1)
    # the horizontal cut at the valley cannot: its rows hold the top of the lower slab (or lose the upper's bottom)
    rows = upper_of_stacked_pair(frag, 2, True, 0.65, 0.2, "rows")
    assert not np.array_equal(rows, lab == 1)


@pytest.mark.parametrize("axis,low", [(2, False), (0, True), (1, False)])
def test_cores_cut_on_any_superior_axis(axis, low):
    lab = tilted_pair()
    if not low:
        lab = lab[:, :, ::-1]
    lab = np.moveaxis(lab, 2, axis)
    upper = upper_core_region(lab > 0, axis, low, 0.2, 6, 3)
    np.testing.assert_array_equal(upper, lab == 1)


def test_cores_too_close_along_the_spine_are_no_pair():
    lab = tilted_pair()
    # the slabs' cores are 10 voxels apart along axis 2: a minimum of 12 refuses them
    assert upper_core_region(lab > 0, 2, True, 0.2, 12, 3) is None
    assert upper_core_region(lab > 0, 2, True, 0.2, 8, 3) is not None


def test_body_and_its_own_arch_are_not_cut():
    """One vertebra: a body and an arch side by side front to back (axis 1), the arch reaching a little lower,
    joined by thin pedicles. Erosion separates them, but they lie across the spine, not along it."""
    lab = np.zeros((16, 40, 30), np.int16)
    lab[3:13, 2:16, 6:18] = 1     # body
    lab[3:13, 24:34, 10:24] = 1   # arch and spinous process, 4 voxels lower
    lab[5:7, 16:24, 11:13] = 1    # pedicles (2 x 2)
    lab[9:11, 16:24, 11:13] = 1
    frag = lab > 0
    assert upper_core_region(frag, 2, True, 0.2, 2, 4) is None
    np.testing.assert_array_equal(upper_of_stacked_pair(frag, 2, True, 0.65, 0.2, "cores", 2, 4), frag)


def test_unknown_method_or_missing_core_parameters():
    frag = tilted_pair() > 0
    with pytest.raises(ValueError, match="rows"):
        upper_of_stacked_pair(frag, 2, True, 0.65, 0.2, "watershed")
    with pytest.raises(ValueError, match="max_erosions"):
        upper_of_stacked_pair(frag, 2, True, 0.65, 0.2, "cores")
    with pytest.raises(ValueError, match="STACKED_CUT"):
        segment_vertebrae_iteratively(lambda x: x[0], np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8)), 2, True,
                                      (8, 8, 8), IterativeSettings(STACKED_CUT="plane"))
