"""Geometry round trip: input grid -> nnU-Net preprocessed space -> instance mask on the input grid, voxel for voxel.

Uses the stand-in vertebra model (tests/helpers/stand_in_model.py) on a phantom of bone blocks, resampled onto
oblique, anisotropic and differently oriented grids.
"""
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers import stand_in_model as h
from nnunet_vertkd.centroids import read_centroids
from nnunet_vertkd.inference import geometry
from nnunet_vertkd.orientation import orientation_of


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("geom")
    h.set_env(mp, root / "ext")
    folder = h.make_standin_vertebra_model(root / "results", root / "ext", spacing=(2.0, 2.0, 2.0),
                                           patch_size=(32, 32, 32))
    from nnunet_vertkd.inference.predictor import VertKDPredictor
    p = VertKDPredictor(device=torch.device("cpu"), num_threads=1, allow_tqdm=False)
    p.initialize_from_trained_model_folder(folder, ["all"])
    yield p
    mp.undo()


def rotation(axis, degrees):
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    if axis == 0:
        r = [[1, 0, 0], [0, c, -s], [0, s, c]]
    elif axis == 1:
        r = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    else:
        r = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    return np.array(r)


LPI = np.diag([1.0, 1.0, -1.0])


def make_input(direction_matrix, spacing):
    ct, lab = h.phantom()
    direction = tuple(float(v) for v in np.asarray(direction_matrix).ravel())
    size, origin = h.grid_like(ct, spacing, direction)
    ct_in = h.resample_onto(ct, size, spacing, direction, origin, -1000, nearest=False)
    lab_in = h.resample_onto(lab, size, spacing, direction, origin, 0, nearest=True)
    return ct_in, lab_in


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def assert_same_grid(a: sitk.Image, b: sitk.Image):
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


CASES = {
    "lpi_isotropic": (LPI, (1.0, 1.0, 1.0)),
    "anisotropic": (LPI, (0.7, 0.9, 3.0)),
    "ras": (np.diag([-1.0, -1.0, 1.0]), (1.2, 1.0, 1.5)),
    "pir_permuted": (np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float), (1.0, 1.3, 0.8)),
    "oblique": (rotation(0, 12) @ rotation(2, -8) @ LPI, (0.8, 1.1, 2.5)),
    "oblique_permuted": (rotation(1, 10) @ np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float), (1.5, 1.0, 1.2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_on_input_grid(predictor, name):
    direction, spacing = CASES[name]
    ct_in, lab_in = make_input(direction, spacing)
    inst, centroids, record = predictor.predict_single_image(ct_in, name)
    assert_same_grid(inst, ct_in)
    out = sitk.GetArrayFromImage(inst)
    ref = sitk.GetArrayFromImage(lab_in)
    assert record["n_vertebrae"] == 4, record
    assert record["labels"] == "sequential" and record["spine_source"] == "heuristic"
    for k in range(1, 5):  # label k of the output is block k (top-down order kept through all flips)
        assert dice(out == k, ref == k) > 0.75, (name, k, dice(out == k, ref == k))
    # centroids in the output grid's voxel indices, near the reference blocks (physical distance)
    for k in range(1, 5):
        ref_idx = np.argwhere(ref == k).mean(0)[::-1]
        p_ref = np.array(inst.TransformContinuousIndexToPhysicalPoint(tuple(ref_idx)))
        p_out = np.array(inst.TransformContinuousIndexToPhysicalPoint(tuple(centroids[k])))
        assert np.linalg.norm(p_ref - p_out) < 2.5, (name, k)
    sup = [inst.TransformContinuousIndexToPhysicalPoint(tuple(centroids[k]))[2] for k in range(1, 5)]
    assert sup == sorted(sup, reverse=True)  # LPS z grows superior: label 1 is the top


def test_exact_round_trip_at_model_spacing(predictor):
    """Input already at the model's spacing, only permuted/flipped: the export is exact, voxel for voxel."""
    ct, lab = h.phantom(block_mm=10.0, gap_mm=4.0)
    spacing = (2.0, 2.0, 2.0)
    direction = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], float)
    ct_in, lab_in = make_input(direction, spacing)
    inst, _, _ = predictor.predict_single_image(ct_in, "exact")
    assert_same_grid(inst, ct_in)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(inst) > 0, sitk.GetArrayFromImage(ct_in) > 300)


def test_written_files_share_the_input_grid(predictor, tmp_path):
    ct_in, _ = make_input(*CASES["oblique"])
    inp = tmp_path / "in"
    inp.mkdir()
    sitk.WriteImage(ct_in, str(inp / "obl_0000.nii.gz"))
    summary = predictor.predict_from_files(str(inp), str(tmp_path / "out"), save_spine=True, save_preview=True)
    assert summary["succeeded"] == ["obl"] and not summary["failed"]
    ref = sitk.ReadImage(str(inp / "obl_0000.nii.gz"))
    for name in ("obl.nii.gz", "obl_spine.nii.gz"):
        img = sitk.ReadImage(str(tmp_path / "out" / name))
        assert img.GetSize() == ref.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    direction, ctd = read_centroids(str(tmp_path / "out" / "obl_ctd.json"))
    assert "".join(direction) == orientation_of(ref) and sorted(ctd) == [1, 2, 3, 4]
    assert (tmp_path / "out" / "obl_snp.png").stat().st_size > 0
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_nearest_resampling_keeps_labels():
    a = np.zeros((4, 5, 6), np.int16)
    a[1:3, 2:4, 1:5] = 7
    b = geometry.resample_nearest(a, (8, 10, 12))
    assert set(np.unique(b)) == {0, 7}
    np.testing.assert_array_equal(geometry.resample_nearest(b, (4, 5, 6)), a)
