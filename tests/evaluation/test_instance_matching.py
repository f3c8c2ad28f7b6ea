"""Instance matching, missing/extra vertebrae and the VerSe identification rate / d_mean on hand-made cases."""
import math

import numpy as np
import pytest
from helpers.masks import slabs

from nnunet_vertkd.evaluation.metrics import (ID_RADIUS_MM, centroid_distance_mm, evaluate_case,
                                              match_instances)


def test_permuted_labels_matched_by_overlap():
    ref = slabs([20, 21, 22, 23])
    pred = slabs([3, 1, 4, 2])
    assert match_instances(ref, pred) == {20: 3, 21: 1, 22: 4, 23: 2}
    res = evaluate_case(ref, pred, (2.0, 1.0, 1.0))
    assert res["missing"] == [] and res["extra"] == []
    assert [r["matched_pred_label"] for r in res["per_vertebra"]] == [3, 1, 4, 2]
    assert all(r["dice"] == 1.0 and r["hd_mm"] == 0.0 for r in res["per_vertebra"])
    assert res["localisation_rate"] == 1.0 and res["id_rate"] is None and res["d_mean_mm"] == 0.0
    assert [r["region"] for r in res["per_vertebra"]] == ["lumbar"] * 4


def test_overlap_matching_is_one_to_one_and_maximises_dice():
    # pred 1 overlaps ref 1 a lot and ref 2 a little; pred 2 overlaps only ref 2 a little.
    ref = np.zeros((10, 4, 4), dtype=np.uint8)
    ref[0:5] = 1
    ref[5:10] = 2
    pred = np.zeros_like(ref)
    pred[0:6] = 1
    pred[8:9] = 2
    assert match_instances(ref, pred) == {1: 1, 2: 2}
    # zero-overlap pairs never match
    pred2 = np.zeros_like(ref)
    pred2[0:5] = 7
    assert match_instances(ref, pred2) == {1: 7}


def test_missing_vertebra_counts_in_dice_and_id_rate_not_in_hd():
    ref = slabs([20, 21, 22, 23])
    pred = slabs([1, 0, 2, 3])          # L2 (21) not predicted
    res = evaluate_case(ref, pred, 1.0)
    assert res["missing"] == [21]
    assert res["extra"] == []
    row = {r["label"]: r for r in res["per_vertebra"]}[21]
    assert row["dice"] == 0.0 and row["failed"] is True and row["hd_mm"] is None
    assert row["matched_pred_label"] is None and row["localised"] is False and row["identified"] is None
    assert res["dice_mean"] == pytest.approx(3 / 4)
    assert res["hd_mean_mm"] == 0.0            # averaged over the 3 matched vertebrae only
    assert res["localisation_rate"] == pytest.approx(3 / 4)
    assert res["d_mean_mm"] == 0.0
    assert res["failure_rate"] == pytest.approx(1 / 4)


def test_extra_vertebra_reported():
    ref = slabs([20, 21, 0, 0])
    pred = slabs([1, 2, 3, 0])
    res = evaluate_case(ref, pred, 1.0)
    assert res["extra"] == [3]
    assert res["missing"] == []
    assert res["n_pred"] == 3 and res["n_ref"] == 2
    assert res["dice_mean"] == 1.0 and res["localisation_rate"] == 1.0


def test_id_rate_and_d_mean_with_given_centroids():
    # spacing (k, j, i) = (2, 1, 1) mm; centroids are (X=i, Y=j, Z=k) voxel indices.
    sp = (2.0, 1.0, 1.0)
    ref = slabs([20, 21, 22, 23])
    pred = slabs([5, 6, 7, 8])
    ref_ctd = {20: (5.0, 5.0, 1.5), 21: (5.0, 5.0, 6.5), 22: (5.0, 5.0, 11.5), 23: (5.0, 5.0, 16.5)}
    pred_ctd = {
        5: (8.0, 9.0, 1.5),     # 5 mm off in plane (3-4-5): identified
        6: (5.0, 5.0, 7.5),     # 1 voxel along k = 2 mm: identified
        7: (5.0, 5.0, 22.5),    # 11 voxels along k = 22 mm >= 20 mm: not identified
        8: (5.0, 5.0, 16.5),    # exact
    }
    res = evaluate_case(ref, pred, sp, ref_centroids=ref_ctd, pred_centroids=pred_ctd)
    rows = {r["label"]: r for r in res["per_vertebra"]}
    assert [rows[lab]["centroid_distance_mm"] for lab in (20, 21, 22, 23)] == pytest.approx([5.0, 2.0, 22.0, 0.0])
    assert [rows[lab]["localised"] for lab in (20, 21, 22, 23)] == [True, True, False, True]
    assert res["localisation_rate"] == pytest.approx(3 / 4) and res["id_rate"] is None
    assert res["d_mean_mm"] == pytest.approx((5 + 2 + 22 + 0) / 4)


def test_identified_requires_the_closest_predicted_landmark():
    sp = 1.0
    ref = slabs([20, 21])
    pred = slabs([1, 2])
    ref_ctd = {20: (5.0, 5.0, 1.5), 21: (5.0, 5.0, 6.5)}
    # pred 1 (matched to 20) is 10 mm away, but pred 2's landmark lies 1 mm from ref 20's centroid
    pred_ctd = {1: (5.0, 5.0, 11.5), 2: (5.0, 5.0, 2.5)}
    res = evaluate_case(ref, pred, sp, ref_centroids=ref_ctd, pred_centroids=pred_ctd)
    rows = {r["label"]: r for r in res["per_vertebra"]}
    assert rows[20]["centroid_distance_mm"] == pytest.approx(10.0) and rows[20]["localised"] is False
    # ref 21: matched landmark 4 mm away; pred 1's landmark is 5 mm away -> identified
    assert rows[21]["localised"] is True
    assert res["localisation_rate"] == 0.5


def test_centroids_from_masks_and_axis_order():
    # a shift along array axis 0 (Z) with 3 mm spacing gives a 3*k mm centroid distance
    ref = slabs([20], shape=(20, 12, 12))
    pred = np.roll(ref, 2, axis=0)
    res = evaluate_case(ref, pred, (3.0, 1.0, 1.0))
    assert res["d_mean_mm"] == pytest.approx(6.0)
    assert res["per_vertebra"][0]["hd_mm"] == pytest.approx(6.0)
    assert centroid_distance_mm((1, 0, 0), (0, 0, 0), (3.0, 2.0, 0.5)) == pytest.approx(0.5)
    assert ID_RADIUS_MM == 20.0


def test_match_by_label_and_empty_prediction():
    ref = slabs([20, 21])
    pred = slabs([21, 20])   # anatomical labels swapped
    res = evaluate_case(ref, pred, 1.0, match="label")
    assert all(r["dice"] == 0.0 for r in res["per_vertebra"])
    assert res["missing"] == [] and res["extra"] == []
    empty = evaluate_case(ref, np.zeros_like(ref), 1.0)
    assert empty["missing"] == [20, 21] and empty["localisation_rate"] == 0.0 and empty["d_mean_mm"] is None
    assert empty["hd_mean_mm"] is None and empty["dice_mean"] == 0.0
    none = evaluate_case(np.zeros_like(ref), pred, 1.0)
    assert none["localisation_rate"] is None and none["extra"] == [20, 21]
    with pytest.raises(ValueError):
        evaluate_case(ref, pred, 1.0, match="nearest")
    assert math.isfinite(evaluate_case(ref, pred, 1.0)["dice_mean"])


def test_id_rate_only_from_labels():
    """Sequential labels matched by overlap say where a vertebra is, not which one it is: the VerSe id.rate
    needs the label match (predicted L1 against true L1); overlap gives the localisation rate only."""
    ref = slabs([20, 21, 22, 23])
    shifted = slabs([21, 22, 23, 24])  # every vertebra found, every name off by one level
    by_overlap = evaluate_case(ref, shifted, 1.0, match="overlap")
    assert by_overlap["localisation_rate"] == 1.0 and by_overlap["id_rate"] is None
    by_label = evaluate_case(ref, shifted, 1.0, match="label")
    assert by_label["id_rate"] == 0.0 and by_label["n_identified"] == 0
    right = evaluate_case(ref, ref, 1.0, match="label")
    assert right["id_rate"] == 1.0 and all(r["identified"] is True for r in right["per_vertebra"])
