"""VerSe's id.rate from labels and label shifts (nnunet_vertkd.evaluation.label_shifts, vertkd_evaluate's
--match auto): exact values on hand-made scans."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.evaluation.cli import main
from nnunet_vertkd.evaluation.label_shifts import chain_position, label_shifts
from nnunet_vertkd.evaluation.metrics import evaluate_case


def blocks(labels, pitch=25, size=10, shape=None):
    """Blocks of ``size`` voxels every ``pitch`` voxels along axis 0 (1 mm): centroids ``pitch`` mm apart."""
    shape = shape or (pitch * len(labels) + 5, 16, 16)
    m = np.zeros(shape, np.uint8)
    for i, lab in enumerate(labels):
        if lab:
            m[5 + i * pitch:5 + i * pitch + size, 3:13, 3:13] = lab
    return m


def test_chain_positions():
    assert chain_position(1) == 0 and chain_position(19) == 18 and chain_position(28) == 19
    assert chain_position(20) == 20 and chain_position(25) == 25
    assert chain_position(20, with_t13=False) == 19 and chain_position(19, with_t13=False) == 18


def test_t12_called_l1_is_one_level_and_an_invented_t13_minus_one():
    ref = blocks([19, 20, 21])
    assert label_shifts(ref, blocks([20, 21, 22]))["label_shifts"] == {19: 1, 20: 1, 21: 1}
    assert label_shifts(ref, blocks([19, 28, 20]))["label_shifts"] == {19: 0, 20: -1, 21: -1}


def test_shift_of_a_whole_scan_and_id_rate():
    ref = blocks([17, 18, 19, 20, 21, 22])           # T10..L3
    right = blocks([17, 18, 19, 20, 21, 22])
    off = blocks([18, 19, 20, 21, 22, 23])           # every label one level too low
    r = evaluate_case(ref, right, (1, 1, 1), match="label")
    assert r["id_rate"] == 1.0 and r["localisation_rate"] == 1.0
    assert label_shifts(ref, right) == {"label_shifts": {k: 0 for k in range(17, 23)}, "scan_shift": 0,
                                        "n_label_shifted": 0, "shifted_as_whole": False}
    r = evaluate_case(ref, off, (1, 1, 1), match="label")
    # T10 has no predicted T10; T11's predicted "T11" is the true T10, 25 mm away: not identified. Same for all.
    assert r["id_rate"] == 0.0 and r["n_identified"] == 0
    assert evaluate_case(ref, off, (1, 1, 1), match="overlap")["localisation_rate"] == 1.0
    s = label_shifts(ref, off)
    assert s["scan_shift"] == 1 and s["n_label_shifted"] == 6 and s["shifted_as_whole"] is True
    assert s["label_shifts"] == {k: 1 for k in range(17, 23)}


def test_missing_t13_shifts_the_vertebrae_below_it():
    ref = blocks([19, 28, 20, 21])                   # T12 T13 L1 L2
    pred = blocks([19, 20, 21, 22])                  # T13 not recognised
    s = label_shifts(ref, pred)
    assert s["label_shifts"] == {19: 0, 28: 1, 20: 1, 21: 1}
    assert s["scan_shift"] == 1 and s["n_label_shifted"] == 3 and s["shifted_as_whole"] is False
    r = evaluate_case(ref, pred, (1, 1, 1), match="label")
    # T12 right; T13 has no prediction; predicted L1 (true T13) is 25 mm from the true L1: 1 of 4 identified
    assert r["n_identified"] == 1 and r["id_rate"] == pytest.approx(0.25)
    # a shift of -1 against +1 tie: the smaller |shift| wins, then the negative one
    ref2 = blocks([20, 21])
    assert label_shifts(ref2, blocks([19, 22]))["scan_shift"] == -1


def test_id_rate_needs_the_closest_landmark_within_20_mm():
    ref = blocks([20, 21, 22], pitch=30)
    pred = blocks([20, 21, 22], pitch=30)
    pred_ctd = {20: (8.0, 8.0, 9.5), 21: (8.0, 8.0, 39.5 + 21.0), 22: (8.0, 8.0, 69.5)}  # L2 21 mm off
    r = evaluate_case(ref, pred, (1, 1, 1), match="label", pred_centroids=pred_ctd)
    assert [v["identified"] for v in r["per_vertebra"]] == [True, False, True]
    assert r["id_rate"] == pytest.approx(2 / 3)


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


def test_evaluate_cli_uses_labels_when_the_record_says_verse(tmp_path):
    ref = blocks([17, 18, 19, 20])
    _write(tmp_path / "ref" / "sub-a_seg-vert_msk.nii.gz", ref)
    _write(tmp_path / "pred" / "sub-a.nii.gz", blocks([18, 19, 20, 21]))  # shifted by one
    (tmp_path / "pred" / "sub-a_record.json").write_text(json.dumps({"labels": "verse"}))
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "o"),
                 "--quiet"]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    c = s["cases"]["sub-a"]
    # with label matching the localisation test uses the label-matched centroids too (= id.rate)
    assert c["match"] == "label" and c["id_rate"] == 0.0 and c["localisation_rate"] == 0.0
    assert c["scan_shift"] == 1 and c["shifted_as_whole"] is True
    assert s["overall"]["n_scans_shifted_as_whole"] == 1 and s["overall"]["id_rate_pct"]["mean"] == 0.0
    assert "Shifted as a whole" in (tmp_path / "o" / "summary.md").read_text()
    # sequential labels (the paper's numbering): overlap matching, no id.rate, no shifts
    _write(tmp_path / "pred2" / "sub-a.nii.gz", blocks([1, 2, 3, 4]))
    (tmp_path / "pred2" / "sub-a_record.json").write_text(json.dumps({"labels": "sequential"}))
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred2"), "-o", str(tmp_path / "o2"),
                 "--quiet"]) == 0
    c = json.loads((tmp_path / "o2" / "summary.json").read_text())["cases"]["sub-a"]
    assert c["match"] == "overlap" and c["id_rate"] is None and c["scan_shift"] is None
    assert c["localisation_rate"] == 1.0


def test_record_found_for_case_names_ending_in_ct(tmp_path):
    """vertkd_predict on sub-x_ct.nii.gz writes sub-x_ct.nii.gz + sub-x_ct_record.json; the case id is sub-x."""
    _write(tmp_path / "ref" / "sub-x_seg-vert_msk.nii.gz", blocks([20, 21]))
    _write(tmp_path / "pred" / "sub-x_ct.nii.gz", blocks([20, 21]))
    (tmp_path / "pred" / "sub-x_ct_record.json").write_text(json.dumps({"labels": "verse"}))
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "o"),
                 "--quiet"]) == 0
    c = json.loads((tmp_path / "o" / "summary.json").read_text())["cases"]["sub-x"]
    assert c["match"] == "label" and c["id_rate"] == 1.0 and c["scan_shift"] == 0
