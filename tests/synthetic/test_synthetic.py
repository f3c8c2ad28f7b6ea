"""Synthetic VerSe generator: determinism, tree layout, labels, geometry, anatomy sanity (fast, scale 0.4)."""
import json
import os
import re
import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_vertkd.centroids import centroids_from_mask, read_centroids
from nnunet_vertkd.labels import VERSE_LABEL_NAMES, VERSE_LABELS_CRANIOCAUDAL
from nnunet_vertkd.orientation import orientation_of
from nnunet_vertkd.synthetic.case import make_case, make_case_with_info
from nnunet_vertkd.synthetic.cli import main as cli_main
from nnunet_vertkd.synthetic.verse_tree import (MANIFEST, SPLIT_FOLDERS, split_counts,
                                                                    write_synthetic_verse)

SCALE = 0.4
N_TREE = 6


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synverse") / "out")
    records = write_synthetic_verse(out, N_TREE, seed=11, scale=SCALE)
    return out, records


def _load(out, rec):
    ct = sitk.ReadImage(os.path.join(out, rec["ct"]))
    mask = sitk.ReadImage(os.path.join(out, rec["mask"]))
    return ct, mask


def _superior_positions(mask_img, centroids):
    """World z (LPS: larger = more superior) of each centroid."""
    return {lab: mask_img.TransformContinuousIndexToPhysicalPoint([float(c) for c in xyz])[2]
            for lab, xyz in centroids.items()}


def test_same_seed_gives_identical_arrays():
    a = make_case(5, scale=SCALE, fov="lumbar")
    b = make_case(5, scale=SCALE, fov="lumbar")
    for x, y in zip(a[:2], b[:2]):
        assert np.array_equal(sitk.GetArrayViewFromImage(x), sitk.GetArrayViewFromImage(y))
        assert x.GetOrigin() == y.GetOrigin() and x.GetSpacing() == y.GetSpacing()
        assert x.GetDirection() == y.GetDirection()
    assert a[2] == b[2]


def test_different_seeds_differ():
    a, _, _ = make_case(1, scale=SCALE, fov="lumbar", spacing="iso1", orientation="LPS")
    b, _, _ = make_case(2, scale=SCALE, fov="lumbar", spacing="iso1", orientation="LPS")
    aa, bb = sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)
    assert aa.shape != bb.shape or not np.array_equal(aa, bb)


def test_tree_is_deterministic(tmp_path, tree):
    out, records = tree
    out2 = str(tmp_path / "again")
    records2 = write_synthetic_verse(out2, N_TREE, seed=11, scale=SCALE)
    assert [r["stem"] for r in records] == [r["stem"] for r in records2]
    for r1, r2 in zip(records, records2):
        for key in ("ct", "mask"):
            a = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out, r1[key])))
            b = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out2, r2[key])))
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_tree_layout_and_bids_names(tree):
    out, records = tree
    assert len(records) == N_TREE
    for split in SPLIT_FOLDERS:
        assert os.path.isdir(os.path.join(out, split, "rawdata"))
        assert os.path.isdir(os.path.join(out, split, "derivatives"))
    counts = [sum(r["split"] == s for r in records) for s in SPLIT_FOLDERS]
    assert all(c >= 1 for c in counts) and counts[0] >= counts[1] and counts[0] >= counts[2]
    stem_re = re.compile(r"^sub-syn\d{3}(_dir-(ax|sag)|_split-syn\d{3})?$")
    for rec in records:
        subj, stem = rec["subject"], rec["stem"]
        assert stem_re.match(stem), stem
        assert stem.startswith(subj)
        assert rec["ct"] == os.path.join(rec["split"], "rawdata", subj, f"{stem}_ct.nii.gz")
        assert rec["mask"] == os.path.join(rec["split"], "derivatives", subj, f"{stem}_seg-vert_msk.nii.gz")
        assert rec["ctd"] == os.path.join(rec["split"], "derivatives", subj, f"{stem}_seg-subreg_ctd.json")
        for key in ("ct", "mask", "ctd"):
            assert os.path.isfile(os.path.join(out, rec[key]))
    # one patient scanned in two parts, both in one subject folder and one split
    split_scans = [r for r in records if "_split-" in r["stem"]]
    assert len(split_scans) == 2 and len({(r["subject"], r["split"]) for r in split_scans}) == 1
    assert any("_dir-" in r["stem"] for r in records)
    # patients never on both sides of a split
    by_subject = {}
    for r in records:
        by_subject.setdefault(r["subject"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_subject.values())
    manifest = json.load(open(os.path.join(out, MANIFEST)))
    assert manifest["seed"] == 11 and len(manifest["cases"]) == N_TREE
    assert not [f for _, _, fs in os.walk(out) for f in fs if ".tmp" in f]


def test_split_counts():
    assert split_counts(10) == [6, 2, 2]
    assert split_counts(3) == [1, 1, 1]
    assert split_counts(1) == [1, 0, 0]
    assert sum(split_counts(37)) == 37


def test_geometry_labels_order_and_centroids(tree):
    out, records = tree
    orientations = set()
    for rec in records:
        ct, mask = _load(out, rec)
        assert ct.GetSize() == mask.GetSize()
        assert ct.GetSpacing() == mask.GetSpacing()
        assert ct.GetOrigin() == mask.GetOrigin()
        assert ct.GetDirection() == mask.GetDirection()
        assert ct.GetPixelID() == sitk.sitkInt16
        orient = orientation_of(ct)
        orientations.add(orient)
        m = sitk.GetArrayFromImage(mask)
        labels = sorted(int(v) for v in np.unique(m) if v)
        assert labels, rec["stem"]
        assert set(labels) <= set(VERSE_LABEL_NAMES)
        # centroid file: direction = orientation letters, coordinates = mask centre of mass (voxels i, j, k)
        direction, ctd = read_centroids(os.path.join(out, rec["ctd"]))
        assert direction == list(orient)
        assert sorted(ctd) == labels
        com = centroids_from_mask(m)
        for lab in labels:
            assert np.allclose(ctd[lab], com[lab], atol=0.01)
        # cranio-caudal: physical height decreases along C1 ... L6 order, consecutive labels
        z = _superior_positions(mask, ctd)
        ordered = [lab for lab in VERSE_LABELS_CRANIOCAUDAL if lab in z]
        assert all(z[a] > z[b] for a, b in zip(ordered[:-1], ordered[1:])), (rec["stem"], z)
        seq = [lab for lab in VERSE_LABELS_CRANIOCAUDAL if lab != 28 or 28 in z]  # T13 only when present
        idx = [seq.index(lab) for lab in ordered]
        assert idx == list(range(idx[0], idx[0] + len(idx))), f"gap in labels {ordered}"
    assert {"PIR", "RAS", "LPS"} <= orientations


def test_cut_border_vertebrae_are_unlabelled(tree):
    out, records = tree
    seen_partial = False
    for rec in records:
        ct, mask = _load(out, rec)
        ct = sitk.DICOMOrient(ct, "LPI")
        mask = sitk.DICOMOrient(mask, "LPI")
        a, m = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(mask)
        assert not m[0].any() and not m[-1].any(), f"{rec['stem']}: a labelled vertebra touches the top/bottom slice"
        present = set(int(v) for v in np.unique(m) if v)
        assert not present & set(rec["partial_unlabelled"])
        for sl in (a[0], a[-1]):
            if (sl > 500).sum() > 10:   # bone cut by the border: visible, unlabelled
                seen_partial = True
    assert seen_partial


def test_bone_brighter_than_soft_tissue_and_cortex_brighter_than_core(tree):
    out, records = tree
    for rec in records[:3]:
        ct, mask = _load(out, rec)
        a, m = sitk.GetArrayFromImage(ct).astype(float), sitk.GetArrayFromImage(mask) > 0
        soft = (~ndimage.binary_dilation(m, iterations=3)) & (a > -300) & (a < 300)
        assert a[m].mean() > a[soft].mean() + 150
        if min(ct.GetSpacing()) < 2.0 and max(ct.GetSpacing()) < 2.0:
            core = ndimage.binary_erosion(m, iterations=2)
            shell = m & ~ndimage.binary_erosion(m, iterations=1)
            assert a[shell].mean() > a[core].mean() + 50, rec["stem"]
        assert a.min() >= -1024 and (a < -900).any()  # air present


def test_neighbouring_vertebrae_are_separated():
    ct, mask, ctd = make_case(3, scale=SCALE, fov="whole", spacing="iso1")
    m = sitk.GetArrayFromImage(mask)
    labels = [lab for lab in VERSE_LABELS_CRANIOCAUDAL if lab in ctd]
    assert len(labels) >= 20
    for a, b in zip(labels[:-1], labels[1:]):
        touching = ndimage.binary_dilation(m == a) & (m == b)
        assert touching.sum() < 0.02 * (m == b).sum(), (a, b, touching.sum())
    # vertebrae grow from cervical to lumbar
    sizes = {lab: int((m == lab).sum()) for lab in labels}
    assert sizes[4] < sizes[14] < sizes[22]


@pytest.mark.parametrize("variant,fov,label,above,below", [("L6", "lumbar", 25, 24, None),
                                                          ("T13", "thoracolumbar", 28, 19, 20)])
def test_transitional_vertebrae(variant, fov, label, above, below):
    ct, mask, ctd, info = make_case_with_info(7, scale=SCALE, fov=fov, variant=variant)
    assert info["variant"] == variant
    assert label in ctd and above in ctd
    z = _superior_positions(mask, ctd)
    assert z[above] > z[label]
    if below is not None:
        assert z[label] > z[below]


@pytest.mark.parametrize("spacing,expected", [("thick3", 3.0), ("inplane08", 0.8), ("iso1", 1.0)])
def test_spacings(spacing, expected):
    ct, mask, ctd = make_case(4, scale=SCALE, fov="lumbar", spacing=spacing)
    sp = ct.GetSpacing()
    assert expected in [round(s, 3) for s in sp]
    assert ctd


def test_small_scale_whole_spine_is_small():
    ct, mask, ctd = make_case(8, scale=SCALE, fov="whole", spacing="iso1")
    size = sorted(ct.GetSize())
    assert size[2] <= 300 and size[1] <= 160 and size[0] <= 160, size
    assert {1, 24} <= set(ctd)


def test_cli_refuses_non_empty_output(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main([str(out), "--cases", "3", "--seed", "2", "--scale", "0.35", "--quiet"]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    assert cli_main([str(out), "--cases", "3", "--seed", "2", "--scale", "0.35", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vertkd_make_synthetic: error: ") and "--overwrite" in err
    assert sorted(p.name for p in out.rglob("*")) == before
    assert cli_main([str(out), "--cases", "3", "--seed", "3", "--scale", "0.35", "--quiet", "--overwrite"]) == 0
    assert len(list(out.rglob("*_ct.nii.gz"))) == 3


@pytest.mark.parametrize("spelling", [["-np", "2", "--disable_progress_bar"], ["--num-processes", "2", "--no-progress"]])
def test_cli_option_spellings_old_and_new(spelling):
    from nnunet_vertkd.synthetic.cli import build_parser
    args = build_parser().parse_args(["out", *spelling])
    assert args.num_processes == 2 and args.disable_progress_bar and not args.quiet


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    assert cli_main([str(tmp_path / "x"), "--cases", "0"]) == 2
    assert capsys.readouterr().err.startswith("vertkd_make_synthetic: error: --cases")


@pytest.mark.slow
def test_full_scale_case_takes_seconds():
    t0 = time.time()
    ct, mask, ctd = make_case(0, scale=1.0, fov="whole", spacing="iso1")
    assert time.time() - t0 < 30
    assert len(ctd) >= 20
