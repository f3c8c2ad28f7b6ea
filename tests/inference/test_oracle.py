"""The iterative loop driven by an oracle (a perfect network) on real and whole-spine anatomy.

Whatever the oracle loop misses is the loop's fault, not a network's. The loop must find every annotated
vertebra, in cranio-caudal order, with the ground-truth union as start signal (what the trainers' final
validation uses) and with that union seen through a 4 mm grid (a perfect spine model).
"""
import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.inference.iterative import IterativeSettings
from nnunet_vertkd.inference.oracle import OraclePredictor, labels_from_verse_mask, run_oracle, start_signal

REAL_MASKS = ["sub-verse004", "sub-verse005", "sub-verse006", "sub-verse012", "sub-verse014"]


def _mask_path(root, case):
    found = sorted(root.glob(f"*/derivatives/{case}/{case}*_msk.nii.gz"))
    assert found, f"no mask for {case} under {root}"
    return found[0]


@pytest.mark.parametrize("start", ["gt", "coarse"])
@pytest.mark.parametrize("case", REAL_MASKS)
def test_oracle_finds_every_real_vertebra_in_order(verse_sample_dir, case, start):
    labels = labels_from_verse_mask(sitk.ReadImage(str(_mask_path(verse_sample_dir, case))), 1.0)
    run = run_oracle(labels, start)
    assert run.labels_found == run.labels_true, (case, start, run.result.stop_reason)
    # every vertebra converged in N_CONVERGENCE_CENTRES calls; the end of the spine costs at most 1 + misses calls
    n = IterativeSettings().N_CONVERGENCE_CENTRES
    assert run.result.iterations_per_vertebra == [n] * len(run.labels_true)
    assert run.result.n_network_calls <= n * len(run.labels_true) + 1 + IterativeSettings().MAX_CONSECUTIVE_MISSES
    # the instances are the vertebrae themselves (up to a few voxels outside the 128 mm patch when accepted, and
    # the background a mask encloses in a sagittal or coronal slice, which FILL_HOLES adds: at most 0.2 %)
    for v, true_label in zip(run.result.vertebrae, run.labels_found):
        pred, ref = run.result.instances == v.label, labels == true_label
        assert 2 * np.sum(pred & ref) / (pred.sum() + ref.sum()) > 0.998
        assert np.sum(pred & ref) / ref.sum() > 0.999


@pytest.mark.parametrize("case", ["sub-verse004", "sub-verse012"])
def test_oracle_at_2mm_and_two_centres(verse_sample_dir, case):
    """The 2 mm CPU recipe's spacing (64^3 = the same 128 mm field of view), and accepting on two agreeing
    centres: 2 calls per vertebra."""
    labels = labels_from_verse_mask(sitk.ReadImage(str(_mask_path(verse_sample_dir, case))), 2.0)
    s = IterativeSettings(N_CONVERGENCE_CENTRES=2).scaled_to_spacing((2.0, 2.0, 2.0))
    run = run_oracle(labels, "coarse", spacing_mm=2.0, settings=s)
    assert run.found_all_in_order
    assert run.result.iterations_per_vertebra == [2] * len(run.labels_true)


@pytest.fixture(scope="module")
def whole_spines():
    from nnunet_vertkd.synthetic.case import make_case
    out = {}
    for seed, variant in ((1, "normal"), (2, "T13"), (3, "L6")):
        _, mask, _ = make_case(seed, scale=1.0, fov="whole", spacing="iso1", variant=variant)
        out[variant] = labels_from_verse_mask(mask, 1.0)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("start", ["gt", "coarse"])
@pytest.mark.parametrize("variant", ["normal", "T13", "L6"])
def test_oracle_whole_synthetic_spine(whole_spines, variant, start):
    labels = whole_spines[variant]
    run = run_oracle(labels, start)
    n_expected = {"normal": 24, "T13": 25, "L6": 25}[variant]
    assert len(run.labels_true) >= n_expected - 2  # the field of view may cut C1 or the last lumbar vertebra
    assert run.labels_found == run.labels_true
    assert run.calls_per_vertebra <= 3 + 3 / len(run.labels_true)


def test_oracle_predictor_ignores_remnants_and_memory():
    labels = np.zeros((1, 4, 10), np.float32)
    labels[0, :, 0:4] = 1
    labels[0, :, 5:9] = 2
    memory = np.zeros_like(labels)
    memory[0, 1:, 0:4] = 1  # vertebra 1 in memory but for 4 voxels (a remnant)
    out = OraclePredictor()(np.stack([labels, memory]))
    assert np.array_equal(out > 0, labels == 2)


def test_coarse_start_signal_is_blurred_union():
    labels = np.zeros((16, 16, 16), np.int16)
    labels[4:12, 4:12, 4:12] = 3
    coarse = start_signal(labels, "coarse", 1.0)
    assert coarse.shape == labels.shape and coarse.max() <= 1.0
    assert coarse[8, 8, 8] == pytest.approx(1.0) and coarse[0, 0, 0] < 0.3
    with pytest.raises(ValueError):
        start_signal(labels, "perfect")


@pytest.mark.parametrize("case", ["sub-verse004", "sub-verse012"])
def test_oracle_accepting_complete_fragments(verse_sample_dir, case):
    """ACCEPT_COMPLETE_FRAGMENT with a perfect network: every vertebra in order, fewer calls than 2 centres."""
    labels = labels_from_verse_mask(sitk.ReadImage(str(_mask_path(verse_sample_dir, case))), 2.0)
    runs = {acc: run_oracle(labels, "coarse", spacing_mm=2.0, settings=IterativeSettings(
        N_CONVERGENCE_CENTRES=2, ACCEPT_COMPLETE_FRAGMENT=acc).scaled_to_spacing((2.0, 2.0, 2.0)))
        for acc in (False, True)}
    assert runs[True].found_all_in_order
    assert runs[True].result.n_network_calls < runs[False].result.n_network_calls
