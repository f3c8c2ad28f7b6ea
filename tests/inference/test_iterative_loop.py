"""The iterative top-down loop (nnunet_vertkd.inference.iterative) with deterministic stand-in networks."""
import numpy as np
import pytest

from nnunet_vertkd.inference.iterative import (IterativeSettings, crop_patch, segment_vertebrae_iteratively)

PATCH = (16, 16, 24)
SMALL = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30)


def synthetic_spine(n=6, superior_axis=2, superior_at_low_index=True, height=6, gap=2, shape_xy=(24, 26),
                    margin=5):
    """Label volume (X, Y, Z-like) with n blocks stacked along superior_axis, label 1 the most superior."""
    length = margin * 2 + n * height + (n - 1) * gap
    shape = list(shape_xy)
    shape.insert(superior_axis, length)
    labels = np.zeros(shape, dtype=np.int16)
    for v in range(n):
        lo = margin + v * (height + gap)
        if not superior_at_low_index:
            lo = length - lo - height
        sl = [slice(6, 18), slice(7, 19)]
        sl.insert(superior_axis, slice(lo, lo + height))
        labels[tuple(sl)] = v + 1
    return labels


def topmost_standin(calls=None, patch=PATCH):
    """'Network' that reads labels from the CT channel and returns the topmost one not yet in memory."""
    def predict(x):
        assert x.shape == (2,) + tuple(patch) and x.dtype == np.float32
        if calls is not None:
            calls.append(x.copy())
        lab = np.rint(x[0]).astype(int)
        free = lab[(lab > 0) & (x[1] < 0.5)]
        if free.size == 0:
            return np.zeros(patch, np.float32)
        return (lab == free.min()).astype(np.float32)
    return predict


@pytest.mark.parametrize("axis,low", [(2, True), (2, False), (0, True), (1, False)])
def test_visits_vertebrae_top_down_and_stops(axis, low):
    labels = synthetic_spine(superior_axis=axis, superior_at_low_index=low)
    ct = labels.astype(np.float32)
    spine = (labels > 0).astype(np.float32)
    res = segment_vertebrae_iteratively(topmost_standin(), ct, spine, axis, low, PATCH, SMALL)
    assert res.n_vertebrae == 6
    # label k of the output is exactly block k (top-down order)
    np.testing.assert_array_equal(res.instances, labels)
    assert res.instances.dtype == np.int16
    assert res.stop_reason in ("end_of_spine", "no_fragment", "end_of_volume")
    si = [c[axis] for c in res.vertebra_centres]
    assert si == sorted(si, reverse=not low)
    assert all(v.converged for v in res.vertebrae)
    # after the last vertebra: one call finds nothing, then at most MAX_CONSECUTIVE_MISSES steps down
    extra = res.n_network_calls - sum(res.iterations_per_vertebra)
    assert 1 <= extra <= SMALL.MAX_CONSECUTIVE_MISSES + 1
    assert all(it <= SMALL.MAX_ITERATIONS_PER_VERTEBRA for it in res.iterations_per_vertebra)


def test_start_point_is_top_of_spine_at_maximum():
    labels = synthetic_spine()
    prob = np.zeros(labels.shape, np.float32)
    prob[labels > 0] = 0.4
    top = np.flatnonzero((labels > 0).any(axis=(0, 1)))[0]
    prob[10, 12, top] = 0.9
    res = segment_vertebrae_iteratively(topmost_standin(), labels.astype(np.float32), prob, 2, True, PATCH, SMALL)
    assert res.start_point == (10, 12, top)


def test_no_spine_means_no_network_call():
    labels = synthetic_spine()
    calls = []
    res = segment_vertebrae_iteratively(topmost_standin(calls), labels.astype(np.float32),
                                        np.zeros(labels.shape), 2, True, PATCH, SMALL)
    assert res.stop_reason == "no_spine" and res.n_network_calls == 0 and not calls
    assert res.instances.max() == 0


def test_stops_at_bottom_of_spine_probability():
    """start_prob covering only the first 3 blocks ends the loop after 3 vertebrae."""
    labels = synthetic_spine()
    spine = np.isin(labels, [1, 2, 3]).astype(np.float32)
    res = segment_vertebrae_iteratively(topmost_standin(), labels.astype(np.float32), spine, 2, True, PATCH, SMALL)
    assert res.n_vertebrae == 3 and res.stop_reason == "end_of_spine"


def test_fragment_too_small_to_start():
    labels = synthetic_spine()
    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=10_000, MIN_CONTINUE_FRAGMENT_VOXELS=30, STEP_ON_MISS_VOXELS=4)
    res = segment_vertebrae_iteratively(topmost_standin(), labels.astype(np.float32), labels > 0, 2, True, PATCH, s)
    assert res.stop_reason == "fragment_too_small" and res.n_vertebrae == 0
    assert res.n_network_calls == s.MAX_CONSECUTIVE_MISSES + 1


def test_predicts_again_from_the_accepted_vertebra():
    """Paper Fig. 2: after accepting, the next prediction is made at the accepted vertebra's centre with the
    updated memory (not after a jump by the vertebra's height)."""
    labels = synthetic_spine()
    calls = []
    res = segment_vertebrae_iteratively(topmost_standin(calls), labels.astype(np.float32), labels > 0, 2, True,
                                        PATCH, SMALL)
    first_after = calls[res.iterations_per_vertebra[0]]  # the call right after vertebra 1 was accepted
    # the patch is centred on vertebra 1: its centre voxel holds label 1 and the memory there is 1
    centre = tuple(p // 2 for p in PATCH)
    assert np.rint(first_after[0][centre]) == 1 and first_after[1][centre] == 1


def test_one_missed_vertebra_does_not_end_the_scan():
    """A network that sees nothing once (a gap, a fracture) costs a step down, not the rest of the spine."""
    labels = synthetic_spine(n=6)
    inner = topmost_standin()
    state = {"i": 0}

    def predict(x):
        state["i"] += 1
        if state["i"] == 7:  # a call while looking for the second vertebra: nothing
            return np.zeros(PATCH, np.float32)
        return inner(x)

    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30, STEP_ON_MISS_VOXELS=4)
    res = segment_vertebrae_iteratively(predict, labels.astype(np.float32), labels > 0, 2, True, PATCH, s)
    assert res.n_vertebrae == 6
    np.testing.assert_array_equal(res.instances, labels)


def test_detached_piece_joins_its_vertebra():
    """A piece of a vertebra separated from its main part (a thin process cut by the threshold) goes into the
    memory with it; left out, it would come back as the 'next' vertebra."""
    labels = synthetic_spine(n=4)
    lab2 = np.argwhere(labels == 2)
    lo, hi = lab2.min(0), lab2.max(0)
    piece = (slice(lo[0], lo[0] + 3), slice(hi[1] + 3, hi[1] + 6), slice(lo[2] + 1, lo[2] + 4))
    labels[piece] = 2  # 27 voxels, 2 voxels away from the body of vertebra 2 (Euclidean distance 3)
    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30,
                          DETACHED_PIECE_MARGIN_VOXELS=3)
    patch = (24, 32, 24)
    res = segment_vertebrae_iteratively(topmost_standin(patch=patch), labels.astype(np.float32), labels > 0, 2, True,
                                        patch, s)
    assert res.n_vertebrae == 4
    np.testing.assert_array_equal(res.instances, labels)


def test_piece_of_the_next_vertebra_does_not_join():
    """A network that also predicts a detached piece of the next vertebra: the piece lies inside the bounding box
    of the vertebra (whose 'spinous process' reaches down beside the next one, as in the thoracic spine) but
    farther than DETACHED_PIECE_MARGIN_VOXELS from it, so it stays out and each vertebra stays one instance."""
    labels = synthetic_spine(n=4)
    for v in range(1, 4):  # a process behind each vertebra, reaching down to the middle of the next one
        z = np.flatnonzero(np.any(labels == v, axis=(0, 1)))
        labels[6:8, 19:22, z[0]:z[-1] + 5] = v  # right behind the block (y 7:19), attached to it

    def sloppy(x):
        lab = np.rint(x[0]).astype(int)
        free = lab[(lab > 0) & (x[1] < 0.5)]
        if free.size == 0:
            return np.zeros(x.shape[1:], np.float32)
        top = free.min()
        piece = (lab == top + 1) & (np.arange(x.shape[1])[:, None, None] >= 12) & (x[1] < 0.5)
        piece[:, 19:] = False  # only the block, not the next one's process
        return ((lab == top) | piece).astype(np.float32)

    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30,
                          DETACHED_PIECE_MARGIN_VOXELS=2)
    res = segment_vertebrae_iteratively(sloppy, labels.astype(np.float32), labels > 0, 2, True, (24, 32, 32), s)
    assert res.n_vertebrae == 4
    np.testing.assert_array_equal(res.instances, labels)


def test_memory_channel_holds_accepted_vertebrae_and_border_padding():
    labels = synthetic_spine()
    calls = []
    segment_vertebrae_iteratively(topmost_standin(calls), labels.astype(np.float32), labels > 0, 2, True, PATCH,
                                  SMALL)
    assert calls[0][1].max() == 0  # empty memory for the first vertebra
    assert calls[-1][1].max() == 1  # later ones see the memory
    assert set(np.unique(calls[-1][1])) <= {0.0, 1.0}


def test_crop_patch_pads_outside():
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    patch, vs, ps = crop_patch(vol, (0, 5, 3), (4, 4, 4), -1.0)
    assert patch.shape == (4, 4, 4)
    np.testing.assert_array_equal(patch[ps], vol[vs])
    assert (patch[:2] == -1).all() and (patch[:, 3:] == -1).all()
    assert patch[2, 0, 0] == vol[0, 3, 1]


@pytest.mark.parametrize("kind", ["random", "ones", "zeros", "nan", "shifting", "half"])
def test_adversarial_networks_terminate(kind):
    labels = synthetic_spine()
    rng = np.random.default_rng(0)
    state = {"i": 0}

    def predict(x):
        state["i"] += 1
        if kind == "random":
            return rng.random(PATCH).astype(np.float32)
        if kind == "ones":
            return np.ones(PATCH, np.float32)
        if kind == "zeros":
            return np.zeros(PATCH, np.float32)
        if kind == "nan":
            return np.full(PATCH, np.nan, np.float32)
        if kind == "shifting":  # a block that never stops moving
            out = np.zeros(PATCH, np.float32)
            o = state["i"] % 8
            out[o:o + 8, 2:10, 2:10] = 1
            return out
        out = np.zeros(PATCH, np.float32)  # a constant half patch, minus memory
        out[:, :, :12] = 1
        return out

    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=20, MIN_CONTINUE_FRAGMENT_VOXELS=20,
                          MAX_ITERATIONS_PER_VERTEBRA=7, MAX_VERTEBRAE=9)
    res = segment_vertebrae_iteratively(predict, labels.astype(np.float32), np.ones(labels.shape), 2, True, PATCH, s)
    assert res.n_network_calls == state["i"] <= s.max_network_calls()
    assert res.n_vertebrae <= 9
    assert res.stop_reason in {"no_fragment", "max_vertebrae", "end_of_volume", "end_of_spine",
                               "fragment_too_small", "max_network_calls"}
    assert set(np.unique(res.instances)) <= set(range(0, 10))


def test_oscillation_hits_iteration_cap_and_can_stop():
    labels = synthetic_spine()
    state = {"i": 0}

    def predict(x):
        state["i"] += 1
        out = np.zeros(PATCH, np.float32)
        o = 0 if state["i"] % 2 else 8  # centre jumps 4 voxels back and forth forever
        out[o:o + 9, 4:13, 8:17] = 1
        return out

    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=20, MIN_CONTINUE_FRAGMENT_VOXELS=20,
                          MAX_ITERATIONS_PER_VERTEBRA=5, ACCEPT_UNCONVERGED=False)
    res = segment_vertebrae_iteratively(predict, labels.astype(np.float32), labels > 0, 2, True, PATCH, s)
    assert res.stop_reason == "not_converged" and res.n_network_calls == 5 and res.n_vertebrae == 0


def test_max_network_calls_cap():
    labels = synthetic_spine()
    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30, MAX_NETWORK_CALLS=4)
    res = segment_vertebrae_iteratively(topmost_standin(), labels.astype(np.float32), labels > 0, 2, True, PATCH, s)
    assert res.n_network_calls == 4 and res.stop_reason == "max_network_calls"


def test_scaled_to_spacing():
    s = IterativeSettings().scaled_to_spacing((2.0, 2.0, 2.0))
    assert s.MIN_START_FRAGMENT_VOXELS == 125 and s.MIN_CONTINUE_FRAGMENT_VOXELS == 62
    assert s.CONVERGENCE_TOLERANCE_VOXELS == 1.0
    assert s.STEP_ON_MISS_VOXELS == 16 and s.DETACHED_PIECE_MARGIN_VOXELS == 1  # 2 mm
    assert s.STACKED_CORE_DISTANCE_VOXELS == 8.0 and s.STACKED_MAX_EROSION_VOXELS == 4  # 16 mm, 8 mm
    assert IterativeSettings(DETACHED_PIECE_MARGIN_VOXELS=-1).scaled_to_spacing((2.0,) * 3).DETACHED_PIECE_MARGIN_VOXELS < 0


def test_wrong_output_shape_is_an_error():
    labels = synthetic_spine()
    with pytest.raises(ValueError, match="shape"):
        segment_vertebrae_iteratively(lambda x: np.zeros((3, 3, 3)), labels.astype(np.float32), labels > 0, 2, True,
                                      PATCH, SMALL)


def test_complete_fragment_is_accepted_at_once():
    """ACCEPT_COMPLETE_FRAGMENT: a fragment away from every patch face needs no converged centres: after the first
    vertebra, the prediction from the previous centre already holds the next vertebra whole -> one call each."""
    labels = synthetic_spine()
    ct = labels.astype(np.float32)
    spine = (labels > 0).astype(np.float32)
    settings = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30,
                                 ACCEPT_COMPLETE_FRAGMENT=True, COMPLETE_FRAGMENT_MARGIN_VOXELS=1)
    res = segment_vertebrae_iteratively(topmost_standin(), ct, spine, 2, True, PATCH, settings)
    np.testing.assert_array_equal(res.instances, labels)
    # the first one starts at the corner of the top slice (cut by the patch: centres must converge)
    assert res.iterations_per_vertebra[1:] == [1] * 5
    baseline = segment_vertebrae_iteratively(topmost_standin(), ct, spine, 2, True, PATCH, SMALL)
    assert res.n_network_calls < baseline.n_network_calls


def test_fragment_touching_the_patch_face_is_not_complete():
    """A fragment that reaches a patch face (cut by the patch) waits for converged centres."""
    from nnunet_vertkd.inference.iterative import _is_complete
    frag = np.zeros((10, 10, 10), bool)
    frag[3:7, 3:7, 3:7] = True
    assert _is_complete(frag, 3) and not _is_complete(frag, 4)
    frag[3:7, 3:7, 6:10] = True  # reaches the last slice
    assert not _is_complete(frag, 1)
    assert not _is_complete(np.zeros((10, 10, 10), bool), 1)


def test_fragment_mostly_off_the_spine_ends_the_scan():
    """Below the last vertebra the network predicts a blob (a sacrum) that touches the spine signal with a few
    voxels only: with MIN_SPINE_FRACTION it is not accepted as a vertebra; with 0 (one voxel is enough) it is."""
    labels = synthetic_spine(n=4)
    z = np.flatnonzero(np.any(labels == 4, axis=(0, 1)))
    blob = np.zeros(labels.shape, bool)
    blob[6:18, 7:19, z[-1] + 2:z[-1] + 5] = True  # below vertebra 4, 36 of its 432 voxels on the spine
    spine = labels > 0
    spine[6:12, 7:13, z[-1] + 2] = True
    ct = labels.astype(np.float32)
    ct[blob] = 5  # the network sees it as the next 'vertebra'
    base = dict(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30)
    strict = segment_vertebrae_iteratively(topmost_standin(), ct, spine, 2, True, PATCH,
                                           IterativeSettings(MIN_SPINE_FRACTION=0.5, **base))
    assert strict.n_vertebrae == 4 and strict.stop_reason == "end_of_spine"
    np.testing.assert_array_equal(strict.instances, labels)
    lax = segment_vertebrae_iteratively(topmost_standin(), ct, spine, 2, True, PATCH,
                                        IterativeSettings(MIN_SPINE_FRACTION=0.0, **base))
    assert lax.n_vertebrae == 5


def test_first_vertebra_needs_the_spine_on_one_voxel_only():
    """A partly visible top vertebra with a weak spine signal (one row of it): accepted, and the scan goes on."""
    labels = synthetic_spine(n=4)
    spine = labels > 1
    z = np.flatnonzero(np.any(labels == 1, axis=(0, 1)))
    spine[:, :, z[-1]] |= labels[:, :, z[-1]] == 1  # 1 of the 6 rows of vertebra 1 on the spine
    s = IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30, MIN_SPINE_FRACTION=0.5)
    res = segment_vertebrae_iteratively(topmost_standin(), labels.astype(np.float32), spine, 2, True, PATCH, s)
    assert res.n_vertebrae == 4
    np.testing.assert_array_equal(res.instances, labels)


def _hollow_standin(patch=PATCH):
    """Like topmost_standin, but the predicted vertebra has a cavity in its interior (a body whose cancellous core
    the network misses; a quarter of the cross-section, so the stacked-vertebra cut does not see two humps)."""
    solid = topmost_standin(patch=patch)

    def predict(x):
        prob = solid(x)
        core = np.zeros(prob.shape, dtype=bool)
        idx = np.argwhere(prob > 0.5)
        if len(idx):
            lo, hi = idx.min(0) + 3, idx.max(0) - 2  # an interior box, 3 voxels from the faces beside the spine
            lo[2], hi[2] = lo[2] - 1, hi[2] + 1  # and 2 from the end plates (superior axis 2)
            if np.all(hi > lo):
                core[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        return np.where(core, 0.0, prob).astype(np.float32)
    return predict


def test_holes_of_a_fragment_are_filled():
    labels = synthetic_spine(n=4, height=8)
    ct, spine = labels.astype(np.float32), (labels > 0).astype(np.float32)
    filled = segment_vertebrae_iteratively(_hollow_standin(), ct, spine, 2, True, PATCH, SMALL)
    np.testing.assert_array_equal(filled.instances, labels)
    holey = segment_vertebrae_iteratively(_hollow_standin(), ct, spine, 2, True, PATCH,
                                          IterativeSettings(MIN_START_FRAGMENT_VOXELS=50, MIN_CONTINUE_FRAGMENT_VOXELS=30,
                                                            FILL_HOLES=False))
    # unfilled, the cavity stays out of the instance and out of the memory, where the stand-in network then finds
    # the 'next' vertebra: a fragment off the spine that ends the scan
    assert (holey.instances > 0).sum() < (labels > 0).sum()
    assert holey.n_vertebrae < 4


def test_fill_closing_iterations_scale_with_spacing():
    assert IterativeSettings(FILL_CLOSING_ITERATIONS=2).scaled_to_spacing((2.0,) * 3).FILL_CLOSING_ITERATIONS == 1
    assert IterativeSettings(FILL_CLOSING_ITERATIONS=0).scaled_to_spacing((2.0,) * 3).FILL_CLOSING_ITERATIONS == 0
