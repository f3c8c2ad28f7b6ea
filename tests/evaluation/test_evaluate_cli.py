"""vertkd_evaluate end to end (main(argv)) on tiny NIfTI folders in both reference formats."""
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import masks

from nnunet_vertkd.centroids import write_centroids
from nnunet_vertkd.evaluation import cli
from nnunet_vertkd.evaluation.cli import main
from nnunet_vertkd.image_io import case_id
from nnunet_vertkd.labels import NNUNET_TO_VERSE, VERSE_TO_NNUNET

SPACING_ITK = (1.0, 1.0, 2.0)   # (i, j, k): 2 mm along array axis 0


def slabs(labels):
    """Small uint8 masks of 3-slice slabs (helpers.masks.slabs)."""
    return masks.slabs(labels, shape=(24, 10, 10), thickness=3, gap=1, dtype=np.uint8)


def write(path, arr, spacing=SPACING_ITK, origin=(0.0, 0.0, 0.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def ctd_of(labels, thickness=3, gap=1):
    """Centroids (X=i, Y=j, Z=k) of the slabs above (centre of each slab)."""
    out = {}
    z = 0
    for lab in labels:
        if lab:
            out[lab] = (4.5, 4.5, z + (thickness - 1) / 2)
        z += thickness + gap
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_case_id():
    assert case_id("a/sub-verse500_dir-ax_seg-vert_msk.nii.gz") == "sub-verse500_dir-ax"
    assert case_id("verse004_seg.nii.gz") == "verse004"
    assert case_id("sub-verse401_split-verse201_ct.nii.gz") == "sub-verse401_split-verse201"
    assert case_id("case_007_0000.nii.gz") == "case_007"
    assert case_id("sub-verse500_dir-ax_seg-subreg_ctd.json") == "sub-verse500_dir-ax"


def test_verse_reference_overlap_matching(tmp_path):
    ref_root = tmp_path / "verse" / "01_training" / "derivatives"
    labels_a = [20, 21, 22, 23]                # L1-L4
    write(ref_root / "sub-verse900" / "sub-verse900_seg-vert_msk.nii.gz", slabs(labels_a).astype(np.float64))
    write_centroids(str(ref_root / "sub-verse900" / "sub-verse900_seg-subreg_ctd.json"), ["L", "P", "I"],
                    ctd_of(labels_a))
    write(ref_root / "sub-verse901" / "sub-verse901_seg-vert_msk.nii.gz", slabs([0, 8, 9]))  # T1, T2
    pred = tmp_path / "pred"
    # vertkd_predict style: 1..N top-down; L2 not found, one extra instance at the bottom
    write(pred / "sub-verse900.nii.gz", slabs([1, 0, 2, 3, 4]))
    pred_ctd = ctd_of([1, 0, 2, 3, 4])
    pred_ctd[1] = (4.5, 4.5, 1.0 + 15.0)       # 15 voxels * 2 mm = 30 mm away: not identified
    write_centroids(str(pred / "sub-verse900_ctd.json"), ["L", "P", "I"], pred_ctd)
    write(pred / "unrelated.nii.gz", slabs([1]))
    write(pred / "sub-verse900_spine.nii.gz", slabs([1, 1, 1, 1]))   # vertkd_predict's spine map: skipped
    out = tmp_path / "out"
    assert main(["-ref", str(tmp_path / "verse"), "-pred", str(pred), "-o", str(out), "--quiet"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["ref_format"] == "verse"
    assert summary["missing_predictions"] == ["sub-verse901"]
    assert summary["unreferenced_predictions"] == ["unrelated"]
    c900 = summary["cases"]["sub-verse900"]
    assert c900["missing"] == [21] and c900["extra"] == [4]
    assert c900["dice_mean"] == pytest.approx(3 / 4)
    assert c900["localisation_rate"] == pytest.approx(2 / 4) and c900["id_rate"] is None           # L1 too far, L2 missing
    assert c900["d_mean_mm"] == pytest.approx(30.0 / 3)
    c901 = summary["cases"]["sub-verse901"]
    assert c901["missing"] == [8, 9] and c901["localisation_rate"] == 0.0 and c901["note"] == "no prediction"
    ov = summary["overall"]
    assert ov["n_vertebrae"] == 6 and ov["n_missing"] == 3 and ov["n_extra"] == 1
    assert ov["dice_pct"]["mean"] == pytest.approx(50.0)
    assert ov["hd_mm"] == {"mean": 0.0, "std": 0.0, "n": 3}
    assert ov["failure_rate_pct"] == pytest.approx(50.0)
    assert ov["localisation_rate_pct"]["mean"] == pytest.approx(25.0) and ov["id_rate_pct"]["n"] == 0  # scans: 50 % and 0 %
    assert set(summary["regions"]) == {"thoracic", "lumbar"}
    assert summary["regions"]["thoracic"]["dice_pct"]["mean"] == 0.0
    assert summary["regions"]["lumbar"]["dice_pct"]["mean"] == pytest.approx(75.0)

    rows = read_csv(out / "per_vertebra.csv")
    assert len(rows) == 6
    l1 = next(r for r in rows if r["case"] == "sub-verse900" and r["label"] == "20")
    assert l1["name"] == "L1" and l1["region"] == "lumbar" and l1["matched_pred_label"] == "1"
    assert float(l1["centroid_distance_mm"]) == pytest.approx(30.0) and l1["localised"] == "False" and l1["identified"] == ""
    l2 = next(r for r in rows if r["label"] == "21")
    assert l2["dice"] == "0.0" and l2["hd_mm"] == "" and l2["failed"] == "True"
    assert "| overall |" in (out / "summary.md").read_text()


def test_nnunet_reference_with_mapping_and_label_matching(tmp_path):
    ds = tmp_path / "Dataset501_VerSeVertebrae"
    verse = [19, 28, 20]                                     # T12, T13, L1
    nn = [VERSE_TO_NNUNET[v] for v in verse]                 # 19, 20, 21
    write(ds / "labelsTs" / "case_a.nii.gz", slabs(nn))
    write_centroids(str(ds / "labelsTs" / "case_a_ctd.json"), ["L", "P", "I"], ctd_of(verse))
    (ds / "dataset.json").write_text(json.dumps({
        "labels": {"background": 0}, "file_ending": ".nii.gz",
        "vertkd": {"kind": "vertebrae", "nnunet_to_verse": {str(k): v for k, v in NNUNET_TO_VERSE.items()}}}))
    pred = tmp_path / "pred"
    write(pred / "case_a_0000.nii.gz", slabs(verse))          # anatomical VerSe labels
    out = tmp_path / "out"
    assert main(["-ref", str(ds / "labelsTs"), "-pred", str(pred), "-o", str(out), "--match", "label",
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["ref_format"] == "nnunet"
    assert "dataset.json" in summary["settings"]["label_mapping"]
    c = summary["cases"]["case_a"]
    assert c["dice_mean"] == 1.0 and c["id_rate"] == 1.0 and c["missing"] == [] and c["extra"] == []
    rows = read_csv(out / "per_vertebra.csv")
    assert [(r["label"], r["name"], r["region"]) for r in rows] == [
        ("19", "T12", "thoracic"), ("20", "L1", "lumbar"), ("28", "T13", "thoracic")]

    # the same prediction in consecutive nnU-Net labels, and with label matching against swapped labels
    write(pred / "case_a_0000.nii.gz", slabs(nn))
    assert main(["-ref", str(ds / "labelsTs"), "-pred", str(pred), "-o", str(out), "--match", "label",
                 "--pred-labels", "nnunet", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["cases"]["case_a"]["dice_mean"] == 1.0
    write(pred / "case_a_0000.nii.gz", slabs(list(reversed(verse))))
    assert main(["-ref", str(ds / "labelsTs"), "-pred", str(pred), "-o", str(out), "--match", "label",
                 "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["cases"]["case_a"]["dice_mean"] == pytest.approx(1 / 3)  # only the middle slab keeps its label
    # overlap matching ignores the labels
    assert main(["-ref", str(ds / "labelsTs"), "-pred", str(pred), "-o", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["cases"]["case_a"]["dice_mean"] == 1.0


def test_grid_mismatch_single_files(tmp_path, capsys):
    ref = tmp_path / "ref" / "verse004_seg.nii.gz"
    write(ref, slabs([20, 21]))
    pred = tmp_path / "pred" / "verse004.nii.gz"
    # same voxels, shifted origin by 2 voxels along k (4 mm): a different grid
    write(pred, slabs([1, 2]), origin=(0.0, 0.0, 4.0))
    assert main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vertkd_evaluate: error: ") and "verse004" in err and "origin" in err
    assert main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "o"), "--quiet",
                 "--resample-pred"]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    c = s["cases"]["verse004"]
    assert c["note"] == "resampled"
    assert c["d_mean_mm"] == pytest.approx(4.0)    # the prediction lies 4 mm lower in physical space
    assert c["hd_mean_mm"] == pytest.approx(4.0)


def test_real_verse_sample_against_itself(verse_sample_dir, tmp_path):
    """The real VerSe'19 sample: the reference mask relabelled 1..N is a perfect prediction."""
    msk = verse_sample_dir / "dataset-verse19training" / "derivatives" / "sub-verse005" / \
        "sub-verse005_seg-vert_msk.nii.gz"
    if not msk.is_file():
        pytest.skip(f"{msk} not found")
    img = sitk.ReadImage(str(msk))
    arr = np.rint(sitk.GetArrayFromImage(img)).astype(np.int16)
    labels = [int(v) for v in np.unique(arr) if v]
    pred = np.zeros_like(arr)
    for i, lab in enumerate(labels):
        pred[arr == lab] = i + 1
    out_img = sitk.GetImageFromArray(pred)
    out_img.CopyInformation(img)
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(out_img, str(tmp_path / "pred" / "sub-verse005.nii.gz"))
    assert main(["-ref", str(msk), "-pred", str(tmp_path / "pred" / "sub-verse005.nii.gz"),
                 "-o", str(tmp_path / "out"), "--quiet"]) == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    c = s["cases"]["sub-verse005"]
    assert c["n_ref"] == len(labels) and c["dice_mean"] == 1.0 and c["hd_mean_mm"] == 0.0
    assert c["localisation_rate"] == 1.0 and c["d_mean_mm"] == 0.0 and c["missing"] == [] and c["extra"] == []
    assert set(s["regions"]) == {"lumbar"}


@pytest.mark.parametrize("spelling", [["-np", "2", "--disable_progress_bar"], ["--num-processes", "2", "--no-progress"]])
def test_option_spellings_old_and_new(tmp_path, capsys, spelling):
    ref = tmp_path / "ref"
    pred = tmp_path / "pred"
    for case in ("verse004", "verse005"):
        write(ref / f"{case}_seg.nii.gz", slabs([20, 21]))
        write(pred / f"{case}.nii.gz", slabs([1, 2]))
    assert main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "o"), *spelling]) == 0
    captured = capsys.readouterr()
    assert "| overall | 2 | 4 | 0 |" in captured.out and "vertkd_evaluate:" not in captured.err  # no progress bar
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["overall"]["dice_pct"]["mean"] == 100.0


def test_ctrl_c_exits_130_with_one_line(tmp_path, capsys, monkeypatch):
    write(tmp_path / "ref" / "verse004_seg.nii.gz", slabs([20, 21]))
    write(tmp_path / "pred" / "verse004.nii.gz", slabs([1, 2]))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "evaluate_pairs", interrupted)
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("vertkd_evaluate: interrupted") and "Traceback" not in err
