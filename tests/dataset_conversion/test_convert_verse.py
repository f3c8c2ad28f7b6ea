"""vertkd_convert_verse on hand-built VerSe trees and on the real samples (../shared/data/verse_sample)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.centroids import centroids_from_mask, read_centroids
from nnunet_vertkd.dataset_conversion import case_conversion
from nnunet_vertkd.dataset_conversion.convert_verse import ConversionError, main
from nnunet_vertkd.labels import NNUNET_TO_VERSE, VERSE_TO_NNUNET, nnunet_dataset_labels
from nnunet_vertkd.orientation import orientation_of
from helpers.verse_files import convert_trees, lpi_arrays, tree_checksums, write_case

V, S = "Dataset501_VerSeVertebrae", "Dataset502_VerSeSpine"


def read(path):
    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


def verify(folder, fork=True):
    """nnU-Net's own integrity check. It starts a 'spawn' pool (seconds of re-imports per call); fork=True only
    swaps in a 'fork' pool to keep the fast tests fast, the checks themselves are nnU-Net's."""
    import multiprocessing
    import types
    from nnunetv2.experiment_planning import verify_dataset_integrity as vdi
    if fork:
        shim = types.SimpleNamespace(get_context=lambda method: multiprocessing.get_context("fork"))
        real, vdi.multiprocessing = vdi.multiprocessing, shim
        try:
            vdi.verify_dataset_integrity(str(folder), num_processes=1)
        finally:
            vdi.multiprocessing = real
    else:
        vdi.verify_dataset_integrity(str(folder), num_processes=1)


# ------------------------------------------------------------------ orientation + labels, voxel by voxel
def test_pir_case_becomes_expected_lpi_arrays_voxel_by_voxel(tmp_path, converter_dirs):
    """Hand-built PIR image: i -> posterior, j -> inferior, k -> right (directions set by hand)."""
    nk, nj, ni = 4, 5, 6  # PIR array [k=R-axis, j=I-axis, i=P-axis]
    ct_pir = (np.arange(nk * nj * ni).reshape(nk, nj, ni) * 7 - 500).astype(np.int16)
    mask_pir = np.zeros((nk, nj, ni), dtype=np.uint8)
    mask_pir[:, 0, :] = 19      # T12 on the most superior slice (j = 0)
    mask_pir[:, 1:3, :] = 28    # T13 below
    mask_pir[1:3, 3:5, 2:5] = 20  # L1 at the bottom
    direction = (0, 0, -1,   # LPS x of axes (i, j, k): k points to R (-x)
                 1, 0, 0,    # i points to P (+y)
                 0, -1, 0)   # j points to I (-z)
    imgs = {}
    for name, arr in (("ct", ct_pir), ("mask", mask_pir)):
        img = sitk.GetImageFromArray(arr)
        img.SetDirection(direction)
        img.SetOrigin((5.0, 6.0, 7.0))
        imgs[name] = img
    assert orientation_of(imgs["ct"]) == "PIR"
    root = tmp_path / "in" / "01_training"
    (root / "rawdata" / "sub-verse900").mkdir(parents=True)
    (root / "derivatives" / "sub-verse900").mkdir(parents=True)
    sitk.WriteImage(imgs["ct"], str(root / "rawdata/sub-verse900/sub-verse900_ct.nii.gz"))
    sitk.WriteImage(imgs["mask"], str(root / "derivatives/sub-verse900/sub-verse900_seg-vert_msk.nii.gz"))
    report = convert_trees([tmp_path / "in"], converter_dirs)
    assert report["counts"]["converted"] == 1

    out_ct_img, out_ct = read(converter_dirs["raw"] / V / "imagesTr" / "sub-verse900_0000.nii.gz")
    out_mask_img, out_mask = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse900.nii.gz")
    assert orientation_of(out_ct_img) == "LPI" and out_ct_img.GetSpacing() == (1.0, 1.0, 1.0)
    # LPI array [k', j', i']: k' runs to I (= PIR j), j' runs to P (= PIR i), i' runs to L (= PIR k reversed)
    expected_ct = np.flip(ct_pir.transpose(1, 2, 0), axis=2)
    np.testing.assert_array_equal(out_ct, expected_ct)
    lut = np.zeros(29, dtype=np.uint8)
    lut[19], lut[28], lut[20] = 19, 20, 21   # T12 -> 19, T13 -> 20, L1 -> 21 (cranio-caudal order)
    np.testing.assert_array_equal(out_mask, np.flip(lut[mask_pir].transpose(1, 2, 0), axis=2))
    assert out_mask.dtype == np.uint8 and out_ct.dtype == np.int16
    # superior at index 0 of axis 0: T12 (19) occupies the first slice only
    assert set(np.unique(out_mask[0])) == {19}
    # the same physical point: LPI voxel (i'=0, j'=0, k'=0) is PIR voxel (i=0, j=0, k=nk-1)
    np.testing.assert_allclose(out_ct_img.TransformIndexToPhysicalPoint((0, 0, 0)),
                               imgs["ct"].TransformIndexToPhysicalPoint((0, 0, nk - 1)), atol=1e-6)
    # spine dataset: LPI at 4 mm, label = union
    sp_img, sp = read(converter_dirs["raw"] / S / "labelsTr" / "sub-verse900.nii.gz")
    assert orientation_of(sp_img) == "LPI" and sp_img.GetSpacing() == (4.0, 4.0, 4.0)
    assert set(np.unique(sp)) <= {0, 1}


def test_label_table_is_craniocaudal():
    assert VERSE_TO_NNUNET[19] == 19 and VERSE_TO_NNUNET[28] == 20 and VERSE_TO_NNUNET[20] == 21
    assert VERSE_TO_NNUNET[25] == 26 and NNUNET_TO_VERSE[1] == 1


# ---------------------------------------------------------------------------- naming variants + splits
def _variant_tree(tmp_path):
    r1, r2 = tmp_path / "verse20", tmp_path / "verse19"
    write_case(r1 / "nested" / "deeper", "dataset-01training", "sub-verse401_split-verse201", orientation="PIR",
               spacing=(1.0, 1.0, 2.0))
    write_case(r1 / "nested" / "deeper", "dataset-01training", "sub-verse401_split-verse202", orientation="RAS",
               labels=(18, 19, 20), ctd=None)
    write_case(r1, "01_training", "sub-verse402", orientation="LPS", labels=(1, 2, 3))
    write_case(r1, "01_training", "sub-verse403", orientation="PIR", labels=(19, 28, 20))
    write_case(r1, "02_validation", "sub-verse500_dir-ax", orientation="PIR")
    write_case(r1, "02_validation", "sub-verse501_dir-sag", orientation="LPI", labels=(23, 24, 25))
    write_case(r1, "03_test", "sub-verse600", orientation="PIR")
    write_case(r2, "02_validation", "verse004", naming="old", orientation="PIR", ctd="nodir", labels=(8, 9, 10))
    write_case(r2, "dataset-verse19training", "sub-verse500_dir-ax", orientation="RAS")  # duplicate stem
    return r1, r2


def test_naming_variants_splits_and_integrity(tmp_path, converter_dirs):
    r1, r2 = _variant_tree(tmp_path)
    before = tree_checksums(tmp_path / "verse20")
    report = convert_trees([r1, r2], converter_dirs)
    assert tree_checksums(tmp_path / "verse20") == before  # inputs untouched
    assert report["counts"] == {"training": 4, "validation": 3, "test": 1, "converted": 8, "skipped": 0}
    tr = sorted(p.name for p in (converter_dirs["raw"] / V / "imagesTr").iterdir())
    assert tr == ["sub-verse401_split-verse201_0000.nii.gz", "sub-verse401_split-verse202_0000.nii.gz",
                  "sub-verse402_0000.nii.gz", "sub-verse403_0000.nii.gz", "sub-verse500_dir-ax_0000.nii.gz",
                  "sub-verse501_dir-sag_0000.nii.gz", "verse004_0000.nii.gz"]
    assert sorted(p.name for p in (converter_dirs["raw"] / V / "labelsTs").iterdir()) == ["sub-verse600.nii.gz",
                                                                                  "sub-verse600_ctd.json"]
    assert (converter_dirs["raw"] / S / "imagesTs" / "sub-verse600_0000.nii.gz").is_file()
    conv = {c["case"]: c for c in report["converted"]}
    assert conv["sub-verse500_dir-ax"]["inputs"]["ct"].startswith(str(r1))
    assert any("duplicate" in w for w in conv["sub-verse500_dir-ax"]["warnings"])
    assert conv["sub-verse403"]["verse_labels"] == [19, 28, 20]
    assert conv["verse004"]["centroids_source"] == "json"
    assert conv["sub-verse401_split-verse202"]["centroids_source"] == "mask"
    # every image is LPI at 1 mm (the 1x1x2 mm case resampled: 30 slices of 2 mm -> 60 of 1 mm)
    img, arr = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse401_split-verse201.nii.gz")
    assert orientation_of(img) == "LPI" and img.GetSpacing() == (1.0, 1.0, 1.0) and arr.shape == (60, 24, 20)
    _, arr = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse403.nii.gz")
    _, lpi_mask = lpi_arrays((19, 28, 20))
    np.testing.assert_array_equal(arr, np.vectorize(lambda v: VERSE_TO_NNUNET.get(int(v), 0))(lpi_mask))

    vj = json.loads((converter_dirs["raw"] / V / "dataset.json").read_text())
    assert vj["channel_names"] == {"0": "CT"} and vj["labels"] == nnunet_dataset_labels()
    assert vj["numTraining"] == 7 and vj["file_ending"] == ".nii.gz"
    assert vj["vertkd"]["kind"] == "vertebrae" and vj["vertkd"]["orientation"] == "LPI"
    assert vj["vertkd"]["spine_dataset_id"] == 502 and vj["vertkd"]["nnunet_to_verse"]["20"] == 28
    sj = json.loads((converter_dirs["raw"] / S / "dataset.json").read_text())
    assert sj["labels"] == {"background": 0, "spine": 1} and sj["vertkd"]["spacing_mm"] == 4.0
    assert sj["vertkd"]["vertebra_dataset_id"] == 501

    splits = json.loads((converter_dirs["pre"] / V / "splits_final.json").read_text())
    assert splits == json.loads((converter_dirs["pre"] / S / "splits_final.json").read_text())
    assert len(splits) == 5
    assert splits[0]["val"] == ["sub-verse500_dir-ax", "sub-verse501_dir-sag", "verse004"]
    assert "sub-verse600" not in sum((f["train"] + f["val"] for f in splits), [])
    patient = {c: c.split("_")[0].replace("sub-", "") for c in conv}
    for fold in splits:
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}
        assert sorted(fold["train"] + fold["val"]) == sorted(c for c in conv if c != "sub-verse600")
    # the two scans of patient verse401 always on the same side
    for fold in splits[1:]:
        assert ("sub-verse401_split-verse201" in fold["val"]) == ("sub-verse401_split-verse202" in fold["val"])

    verify(converter_dirs["raw"] / V)
    verify(converter_dirs["raw"] / S)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_are_reported_and_the_rest_converted(tmp_path, converter_dirs):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")                          # good
    write_case(root, "01_training", "sub-verse002", write_mask=False)        # CT without mask
    write_case(root, "01_training", "sub-verse003", write_ct=False)          # mask without CT
    p = write_case(root, "01_training", "sub-verse004")                      # truncated CT
    data = p["ct"].read_bytes()
    p["ct"].write_bytes(data[: len(data) // 2])
    p = write_case(root, "01_training", "sub-verse005")                      # not a NIfTI at all
    p["mask"].write_bytes(b"this is not an image")
    bad_shape = np.zeros((30, 24, 21), np.uint8)
    bad_shape[5:10, 5:10, 5:10] = 20
    write_case(root, "01_training", "sub-verse006", mask_array=bad_shape)    # shape mismatch
    write_case(root, "01_training", "sub-verse007", mask_origin_shift=(5.0, 0.0, 0.0))  # geometry mismatch
    write_case(root, "01_training", "sub-verse008", mask_array=np.zeros((30, 24, 20), np.uint8))  # empty
    _, m = lpi_arrays((20, 21, 22))
    m99 = m.copy()
    m99[m99 == 22] = 99
    write_case(root, "01_training", "sub-verse009", mask_array=m99)          # unknown label -> skipped
    m26 = m.copy()
    m26[m26 == 22] = 26
    write_case(root, "01_training", "sub-verse010", mask_array=m26)          # sacrum -> dropped, converted
    mf = m.astype(np.float64) + 1e-7
    mf[m == 0] = 0
    write_case(root, "01_training", "sub-verse011", mask_array=mf, mask_dtype=np.float64)  # float mask
    pc = write_case(root, "01_training", "sub-verse012")                     # broken centroid JSON
    pc["ctd"].write_text("{not json")
    before = tree_checksums(root)

    report = convert_trees([root], converter_dirs)
    assert tree_checksums(root) == before
    skipped = {s["case"]: s for s in report["skipped"]}
    assert sorted(skipped) == ["sub-verse002", "sub-verse003", "sub-verse004", "sub-verse005", "sub-verse006",
                               "sub-verse007", "sub-verse008", "sub-verse009"]
    expect = {"sub-verse002": "CT without mask", "sub-verse003": "mask without CT",
              "sub-verse004": "unreadable or truncated", "sub-verse005": "unreadable or truncated",
              "sub-verse006": "shape", "sub-verse007": "origin", "sub-verse008": "empty mask",
              "sub-verse009": "unknown label values [99]"}
    for case, words in expect.items():
        assert words in skipped[case]["reason"], (case, skipped[case]["reason"])
        assert skipped[case]["files"]
    assert "sub-verse004_ct.nii.gz" in skipped["sub-verse004"]["reason"]
    assert "sub-verse005_seg-vert_msk.nii.gz" in skipped["sub-verse005"]["reason"]
    assert "sub-verse009_seg-vert_msk.nii.gz" in skipped["sub-verse009"]["reason"]
    conv = {c["case"]: c for c in report["converted"]}
    assert sorted(conv) == ["sub-verse001", "sub-verse010", "sub-verse011", "sub-verse012"]
    assert conv["sub-verse010"]["verse_labels"] == [20, 21]
    assert any("26" in w and "background" in w for w in conv["sub-verse010"]["warnings"])
    _, arr = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse011.nii.gz")
    assert arr.dtype == np.uint8 and sorted(np.unique(arr)) == [0, 21, 22, 23]
    assert conv["sub-verse012"]["centroids_source"] == "mask"
    assert any("centroid" in w for w in conv["sub-verse012"]["warnings"])
    # nothing of a skipped case was written, no staging leftovers
    written = {p.name for p in (converter_dirs["raw"] / V).rglob("*")} | {p.name for p in (converter_dirs["raw"] / S).rglob("*")}
    assert not any(name.startswith(tuple(skipped)) for name in written)
    assert not (converter_dirs["raw"] / V / case_conversion.STAGING_FOLDER).exists()
    assert json.loads((converter_dirs["raw"] / V / "conversion_report.json").read_text()) == report
    verify(converter_dirs["raw"] / V)


def test_interrupted_case_leaves_nothing_half_written(tmp_path, converter_dirs, monkeypatch):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    write_case(root, "01_training", "sub-verse002")
    real = case_conversion._Stager.image
    calls = {"n": 0}

    def failing(self, image, final):
        calls["n"] += 1
        if "sub-verse002" in final and calls["n"] > 5:
            raise OSError("disk full (simulated)")
        return real(self, image, final)

    monkeypatch.setattr(case_conversion._Stager, "image", failing)
    report = convert_trees([root], converter_dirs)
    assert [c["case"] for c in report["converted"]] == ["sub-verse001"]
    assert "disk full" in report["skipped"][0]["reason"]
    names = [p.name for p in (converter_dirs["raw"]).rglob("*") if p.is_file()]
    assert not any("sub-verse002" in n for n in names)
    monkeypatch.setattr(case_conversion._Stager, "image", real)
    # leftovers of a killed run in the staging folder are removed by the next run
    staging = converter_dirs["raw"] / V / case_conversion.STAGING_FOLDER
    staging.mkdir()
    (staging / "abc_sub-verse002.nii.gz").write_bytes(b"partial")
    report = convert_trees([root], converter_dirs)
    assert report["counts"]["converted"] == 2 and not staging.exists()


# ------------------------------------------------------------------------------------------- centroids
@pytest.mark.parametrize("orientation, ctd", [("PIR", "json"), ("RAS", "json"), ("PIR", "nodir"), ("LPS", None)])
def test_centroids_carried_into_written_grid(tmp_path, converter_dirs, orientation, ctd):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001", orientation=orientation, spacing=(1.0, 1.0, 2.0), ctd=ctd,
               labels=(19, 28, 20))
    report = convert_trees([root], converter_dirs)
    assert report["converted"][0]["centroids_source"] == ("mask" if ctd is None else "json")
    direction, cents = read_centroids(str(converter_dirs["raw"] / V / "labelsTr" / "sub-verse001_ctd.json"))
    assert direction == ["L", "P", "I"]
    assert sorted(cents) == [19, 20, 28]  # VerSe labels; the NaN entry of label 7 is dropped
    _, out = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse001.nii.gz")
    com = centroids_from_mask(out)
    for verse_label, xyz in cents.items():
        # 2 mm -> 1 mm nearest neighbour shifts the mask's centre of mass by at most half a source voxel
        np.testing.assert_allclose(xyz, com[VERSE_TO_NNUNET[verse_label]], atol=0.6)


def test_real_verse004_centroids_match_its_mask(tmp_path, converter_dirs, verse_sample_dir):
    """The real PIR JSON of sub-verse004, carried into LPI, lands on the mask's centres (mask used as CT)."""
    der = verse_sample_dir / "dataset-verse19training" / "derivatives" / "sub-verse004"
    root = tmp_path / "in" / "dataset-verse19training"
    (root / "rawdata" / "sub-verse004").mkdir(parents=True)
    shutil.copytree(der, root / "derivatives" / "sub-verse004")
    shutil.copy(der / "sub-verse004_seg-vert_msk.nii.gz", root / "rawdata/sub-verse004/sub-verse004_ct.nii.gz")
    report = convert_trees([tmp_path / "in"], converter_dirs)
    assert report["converted"][0]["centroids_source"] == "json"
    _, cents = read_centroids(str(converter_dirs["raw"] / V / "labelsTr" / "sub-verse004_ctd.json"))
    _, out = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse004.nii.gz")
    com = centroids_from_mask(out)
    assert sorted(cents) == list(range(16, 25))
    for verse_label, xyz in cents.items():
        # LPI, 1 mm: X = left, Y = posterior, Z = inferior. VerSe centroids are vertebral-body centres, which
        # lie 8-16 mm anterior of the whole vertebra's centre of mass; the other axes agree within a few mm.
        dx, dy, dz = np.subtract(xyz, com[VERSE_TO_NNUNET[verse_label]])
        assert abs(dx) < 3 and abs(dz) < 5 and -16 < dy < -8, (verse_label, dx, dy, dz)


# ------------------------------------------------------------------------- idempotence and conflicts
def _snapshot(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_is_identical_and_removes_stale_cases(tmp_path, converter_dirs):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    write_case(root, "02_validation", "sub-verse002", orientation="RAS")
    first = convert_trees([root], converter_dirs)
    snap = _snapshot(converter_dirs["raw"]), _snapshot(converter_dirs["pre"])
    second = convert_trees([root], converter_dirs, num_processes=2)
    assert second == first and (_snapshot(converter_dirs["raw"]), _snapshot(converter_dirs["pre"])) == snap
    # a case that disappears from the input disappears from the output on the next run
    shutil.rmtree(root / "02_validation")
    third = convert_trees([root], converter_dirs)
    assert [c["case"] for c in third["converted"]] == ["sub-verse001"]
    assert not list((converter_dirs["raw"] / V).rglob("sub-verse002*"))
    assert third["removed_stale_files"]


def test_dataset_id_conflict(tmp_path, converter_dirs):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    (converter_dirs["raw"] / "Dataset501_Other").mkdir()
    with pytest.raises(ConversionError, match="Dataset501_Other"):
        convert_trees([root], converter_dirs)
    (converter_dirs["pre"] / "Dataset502_Else").mkdir()
    convert_trees([root], converter_dirs, overwrite=True)
    assert not (converter_dirs["raw"] / "Dataset501_Other").exists() and not (converter_dirs["pre"] / "Dataset502_Else").exists()
    (converter_dirs["res"] / "Dataset501_Trained").mkdir()
    with pytest.raises(ConversionError, match="never deletes results"):
        convert_trees([root], converter_dirs, overwrite=True)


def test_cli(tmp_path, converter_dirs, monkeypatch, capsys):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    write_case(root, "01_training", "sub-verse003", write_ct=False)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert main([str(root), "-d", "501"]) == 2  # bad input: command_line.INPUT_ERROR_EXIT
    assert capsys.readouterr().err.startswith("vertkd_convert_verse: error: nnUNet_raw is not set")
    monkeypatch.setenv("nnUNet_raw", str(converter_dirs["raw"]))
    monkeypatch.setenv("nnUNet_preprocessed", str(converter_dirs["pre"]))
    monkeypatch.setenv("nnUNet_results", str(converter_dirs["res"]))
    assert main([str(root), "-d", "501", "--spine-id", "600", "-np", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Converted 1 case(s)" in out and "SKIPPED sub-verse003: mask without CT" in out
    assert (converter_dirs["raw"] / "Dataset600_VerSeSpine" / "dataset.json").is_file()
    assert main([str(tmp_path / "missing"), "-d", "501", "--spine-id", "600"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


# ------------------------------------------------------------------------------------------ real samples
def test_real_samples(tmp_path, converter_dirs, verse_sample_dir, capsys):
    before = tree_checksums(verse_sample_dir)
    report = convert_trees([verse_sample_dir], converter_dirs, verbose=True)
    assert tree_checksums(verse_sample_dir) == before
    out = capsys.readouterr().out
    assert "SKIPPED sub-verse004: mask without CT" in out
    assert [s["case"] for s in report["skipped"]] == ["sub-verse004"]
    assert any(f.endswith("sub-verse004_seg-vert_msk.nii.gz") for f in report["skipped"][0]["files"])
    conv = {c["case"]: c for c in report["converted"]}
    assert sorted(conv) == ["sub-verse005", "sub-verse006", "sub-verse012", "sub-verse014"]
    assert conv["sub-verse005"]["verse_labels"] == [20, 21, 22, 23, 24]
    assert conv["sub-verse006"]["verse_labels"] == [23, 24]
    assert conv["sub-verse012"]["verse_labels"] == [17, 18, 19, 20, 21, 22]
    assert conv["sub-verse014"]["verse_labels"] == [20, 21, 22, 23, 24]
    # 012 comes from the VerSe'19 test folder: it lands in the test side of the dataset, never in training
    assert (converter_dirs["raw"] / V / "labelsTs" / "sub-verse012.nii.gz").is_file()
    assert not (converter_dirs["raw"] / V / "labelsTr" / "sub-verse012.nii.gz").exists()
    assert (converter_dirs["raw"] / V / "labelsTr" / "sub-verse014.nii.gz").is_file()
    img012, arr012 = read(converter_dirs["raw"] / V / "labelsTs" / "sub-verse012.nii.gz")
    assert orientation_of(img012) == "LPI" and img012.GetSpacing() == (1.0, 1.0, 1.0)
    assert conv["sub-verse012"]["split"] == "test" and conv["sub-verse014"]["split"] != "test"
    assert conv["sub-verse012"]["centroids_source"] == "json"  # it has an annotated _ctd.json
    for case, shape in (("sub-verse005", (180, 103, 106)), ("sub-verse006", (86, 100, 111))):
        img, arr = read(converter_dirs["raw"] / V / "labelsTr" / f"{case}.nii.gz")
        assert orientation_of(img) == "LPI" and img.GetSpacing() == (1.0, 1.0, 1.0)
        assert arr.shape == shape
        assert conv[case]["centroids_source"] == "mask"
        cimg, _ = read(converter_dirs["raw"] / V / "imagesTr" / f"{case}_0000.nii.gz")
        assert cimg.GetSize() == img.GetSize() and np.allclose(cimg.GetOrigin(), img.GetOrigin())
    # 005 is 1 mm PIR: conversion is a pure reorientation, so labels match voxel by voxel
    src = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(
        verse_sample_dir / "dataset-verse19training/derivatives/sub-verse005/sub-verse005_seg-vert_msk.nii.gz")), "LPI"))
    _, arr = read(converter_dirs["raw"] / V / "labelsTr" / "sub-verse005.nii.gz")
    np.testing.assert_array_equal(arr, np.vectorize(lambda v: VERSE_TO_NNUNET.get(int(v), 0))(src))
    verify(converter_dirs["raw"] / V)  # the spawn-pool original runs in tests/test_convert_verse_e2e.py


# ------------------------------------------------------------------------------------------ dataset.json
def test_dataset_json_is_nnunets_and_replaced_whole(tmp_path, monkeypatch):
    from nnunet_vertkd.dataset_conversion import convert_verse as module
    path = module.write_dataset_json(str(tmp_path), "Dataset501_X", 3, {"background": 0, "spine": 1},
                                     {"kind": "spine", "orientation": "LPI"}, "a description")
    content = json.loads(Path(path).read_text())
    assert content["channel_names"] == {"0": "CT"} and content["labels"] == {"background": 0, "spine": 1}
    assert content["numTraining"] == 3 and content["file_ending"] == ".nii.gz" and content["name"] == "Dataset501_X"
    assert content["overwrite_image_reader_writer"] == "SimpleITKIO" and content["licence"] == module.LICENCE
    assert content["converted_by"] == "vertkd_convert_verse" and content["vertkd"]["kind"] == "spine"
    before = Path(path).read_bytes()

    def fails(folder, *a, **k):  # nnU-Net's writer dies after writing half a file
        Path(folder, "dataset.json").write_text('{"channel_na')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "generate_dataset_json", fails)
    with pytest.raises(OSError):
        module.write_dataset_json(str(tmp_path), "Dataset501_X", 4, {"background": 0, "spine": 1}, {}, "")
    assert Path(path).read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json"]
