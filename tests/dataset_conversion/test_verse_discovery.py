"""Finding and pairing VerSe files: every naming variant, split folders, nesting, duplicates, orphans."""
from pathlib import Path

import pytest

from nnunet_vertkd.dataset_conversion.verse_discovery import (
    TEST, TRAIN, VALIDATION, classify_name, discover, patient_of, split_of_folder)


@pytest.mark.parametrize("name, expected", [
    ("sub-verse500_ct.nii.gz", ("ct", "sub-verse500")),
    ("sub-verse500_dir-ax_ct.nii.gz", ("ct", "sub-verse500_dir-ax")),
    ("sub-verse401_split-verse201_ct.nii.gz", ("ct", "sub-verse401_split-verse201")),
    ("sub-verse401_split-verse201_ct.nii", ("ct", "sub-verse401_split-verse201")),
    ("sub-verse500_dir-ax_seg-vert_msk.nii.gz", ("mask", "sub-verse500_dir-ax")),
    ("sub-verse401_split-verse201_seg-vert_msk.nii.gz", ("mask", "sub-verse401_split-verse201")),
    ("sub-verse500_dir-ax_seg-subreg_ctd.json", ("ctd", "sub-verse500_dir-ax")),
    ("sub-verse500_seg-vert_ctd.json", ("ctd", "sub-verse500")),
    ("verse004.nii.gz", ("ct", "verse004")),
    ("verse004_seg.nii.gz", ("mask", "verse004")),
    ("verse004_ctd.json", ("ctd", "verse004")),
    ("sub-verse500_dir-ax_seg-subreg_snp.png", None),
    ("sub-verse500_seg-subreg_msk.nii.gz", None),
    ("notes.txt", None),
])
def test_classify_name(name, expected):
    assert classify_name(name) == expected


@pytest.mark.parametrize("folder, split", [
    ("01_training", TRAIN), ("dataset-01training", TRAIN), ("dataset-verse19training", TRAIN),
    ("training", TRAIN), ("02_validation", VALIDATION), ("dataset-02validation", VALIDATION),
    ("dataset-verse19validation", VALIDATION), ("03_test", TEST), ("dataset-03test", TEST),
    ("dataset-verse20test", TEST), ("test_discovery0", None), ("pytest-7", None), ("rawdata", None),
    ("sub-verse500", None),
])
def test_split_folder_names(folder, split):
    assert split_of_folder(folder) == split


def test_patient_of():
    assert patient_of("sub-verse401_split-verse201") == "verse401"
    assert patient_of("sub-verse500_dir-ax") == "verse500"
    assert patient_of("verse004") == "verse004"
    assert patient_of("sub-verse004") == patient_of("verse004")


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_discover_pairs_by_full_stem_any_depth_and_reports_orphans(tmp_path):
    r1, r2 = tmp_path / "verse20", tmp_path / "verse19"
    deep = r1 / "zips" / "unpacked" / "dataset-01training"
    for stem in ("sub-verse401_split-verse201", "sub-verse401_split-verse202"):
        _touch(deep / "rawdata" / "sub-verse401" / f"{stem}_ct.nii.gz")
        _touch(deep / "derivatives" / "sub-verse401" / f"{stem}_seg-vert_msk.nii.gz")
    _touch(r1 / "02_validation" / "rawdata" / "sub-verse500" / "sub-verse500_dir-ax_ct.nii.gz")
    _touch(r1 / "02_validation" / "derivatives" / "sub-verse500" / "sub-verse500_dir-ax_seg-vert_msk.nii.gz")
    _touch(r1 / "02_validation" / "derivatives" / "sub-verse500" / "sub-verse500_dir-ax_seg-subreg_ctd.json")
    _touch(r1 / "03_test" / "rawdata" / "sub-verse600" / "sub-verse600_ct.nii.gz")  # CT without mask
    _touch(r1 / "03_test" / "derivatives" / "sub-verse601" / "sub-verse601_seg-vert_msk.nii.gz")  # mask only
    _touch(r1 / "01_training" / "stray_image.nii.gz")  # not a VerSe name
    # old naming in another root, plus a duplicate of a stem already in r1
    _touch(r2 / "dataset-verse19training" / "verse004.nii.gz")
    _touch(r2 / "dataset-verse19training" / "verse004_seg.nii.gz")
    _touch(r2 / "dataset-verse19training" / "verse004_ctd.json")
    _touch(r2 / "dataset-verse19training" / "rawdata" / "sub-verse500" / "sub-verse500_dir-ax_ct.nii.gz")
    _touch(r2 / "dataset-verse19training" / "derivatives" / "sub-verse500" / "sub-verse500_dir-ax_seg-vert_msk.nii.gz")
    # no split folder at all
    _touch(r2 / "loose" / "verse007.nii.gz")
    _touch(r2 / "loose" / "verse007_seg.nii.gz")

    d = discover([str(r1), str(r2)])
    cases = {c.case_id: c for c in d.cases}
    assert sorted(cases) == ["sub-verse401_split-verse201", "sub-verse401_split-verse202",
                             "sub-verse500_dir-ax", "verse004", "verse007"]
    assert cases["sub-verse401_split-verse201"].patient == cases["sub-verse401_split-verse202"].patient == "verse401"
    assert cases["sub-verse401_split-verse201"].mask.endswith("sub-verse401_split-verse201_seg-vert_msk.nii.gz")
    assert cases["sub-verse401_split-verse201"].split == TRAIN
    # the duplicate stem is converted once, from the first root, and the duplicate is reported
    v500 = cases["sub-verse500_dir-ax"]
    assert v500.split == VALIDATION and v500.ct.startswith(str(r1)) and v500.mask.startswith(str(r1))
    assert v500.ctd.endswith("sub-verse500_dir-ax_seg-subreg_ctd.json")
    assert sum("duplicate" in n for n in v500.notes) == 2
    assert cases["verse004"].split == TRAIN and cases["verse004"].ctd.endswith("verse004_ctd.json")
    assert cases["verse007"].split == TRAIN and any("not inside a split folder" in n for n in cases["verse007"].notes)
    skipped = {s.case_id: s for s in d.skipped}
    assert "CT without mask" in skipped["sub-verse600"].reason
    assert skipped["sub-verse600"].files[0].endswith("sub-verse600_ct.nii.gz")
    assert "mask without CT" in skipped["sub-verse601"].reason
    assert any("stray_image.nii.gz" in n for n in d.notes)


def test_discover_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        discover([str(tmp_path / "nope")])


def test_nested_roots_and_symlink_loops_find_each_file_once(tmp_path):
    root = tmp_path / "verse"
    _touch(root / "01_training" / "rawdata" / "sub-verse001" / "sub-verse001_ct.nii.gz")
    _touch(root / "01_training" / "derivatives" / "sub-verse001" / "sub-verse001_seg-vert_msk.nii.gz")
    (root / "01_training" / "loop").symlink_to(root, target_is_directory=True)
    d = discover([str(root), str(root / "01_training")])
    assert [c.case_id for c in d.cases] == ["sub-verse001"]
    assert d.cases[0].notes == [] and d.cases[0].split == TRAIN
