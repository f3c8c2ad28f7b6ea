"""Bad input and faults: every defect found by a hostile-but-fair user, one test each.

Predictor (the stand-in model of tests/helpers/stand_in_model.py), converter (tiny VerSe trees) and evaluator (tiny masks); all
fast. Signals sent to real processes are in test_fault_injection.py.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import stand_in_model as h
from helpers.bad_files import fake_dicom, patch_nifti1_header, truncate
from helpers.verse_files import convert_trees, lpi_arrays, tree_checksums, write_case
from nnunet_vertkd.dataset_conversion import case_conversion, convert_verse as convert_module
from nnunet_vertkd.dataset_conversion.convert_verse import ConversionError
from nnunet_vertkd.evaluation import cli as eval_cli
from nnunet_vertkd.inference import cli as predict_cli
from nnunet_vertkd.inference import outputs
from nnunet_vertkd.inference.input_checks import RejectedCaseError, check_image

V, S = "Dataset501_VerSeVertebrae", "Dataset502_VerSeSpine"


# ------------------------------------------------------------------------------------------------ predictor
def predict(args):
    return predict_cli.main([*args, "-device", "cpu", "-npp", "1"])


def write(img, path):
    sitk.WriteImage(img, str(path))
    return str(path)


def outputs_of(folder, case):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(case + ".") or p.name.startswith(case + "_"))


def failed_line(printed, case):
    lines = [ln for ln in printed.splitlines() if ln.strip().startswith(case + ":")]
    assert lines, f"{case} not listed as failed:\n{printed}"
    return lines[0]


def test_predictor_refuses_truncated_nifti(standin_model, tmp_path, capsys):
    """Defect 1: SimpleITK reads the first 60 % of a .nii.gz without complaint (zero-filled voxels)."""
    ct, _ = h.phantom()
    good = write(ct, tmp_path / "good.nii.gz")
    cut = truncate(good, tmp_path / "cut.nii.gz", 0.6)
    out = tmp_path / "out"
    assert predict(["-i", cut, good, "-o", str(out), "-m", standin_model]) == 1
    printed = capsys.readouterr().out
    assert "truncated" in failed_line(printed, "cut")
    assert outputs_of(out, "cut") == [] and outputs_of(out, "good")


@pytest.mark.parametrize("name, header, words", [
    ("zero_pixdim", {"pixdim": (1.0, 1.0, 0.0)}, "pixdim"),
    ("negative_pixdim", {"pixdim": (1.0, 1.0, -1.0)}, "pixdim"),
    ("singular_sform", {"srow": [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]]}, "singular"),
])
def test_predictor_refuses_impossible_header_geometry(standin_model, tmp_path, capsys, name, header, words):
    """Defect 2: ITK reads pixdim 0 as 1 mm, mirrors a negative pixdim and ignores a singular sform."""
    ct, _ = h.phantom(n_blocks=2)
    src = write(ct, tmp_path / "src.nii")
    bad = patch_nifti1_header(src, tmp_path / f"{name}.nii.gz", **header)
    out = tmp_path / "out"
    assert predict(["-i", bad, "-o", str(out), "-m", standin_model]) == 1
    assert words in failed_line(capsys.readouterr().out, name)
    assert outputs_of(out, name) == []


def test_absurd_spacing_and_non_orthonormal_direction_refused_in_memory():
    ct, _ = h.phantom(n_blocks=2)
    img = sitk.Image(ct)
    img.SetSpacing((1.0, 1.0, 25.0))
    with pytest.raises(RejectedCaseError, match="absurd voxel spacing"):
        check_image(img, "x")
    img = sitk.Image(ct)
    try:
        img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0.6, 0.8))  # not orthonormal
    except RuntimeError:
        pytest.skip("SimpleITK refuses such directions itself")
    with pytest.raises(RejectedCaseError, match="direction"):
        check_image(img, "x")


def test_predictor_warns_about_missing_qform_sform_and_names_the_orientation(standin_model, tmp_path):
    ct, _ = h.phantom(n_blocks=2)
    src = write(ct, tmp_path / "src.nii")
    bad = patch_nifti1_header(src, tmp_path / "noorient.nii.gz", codes=(0, 0))
    out = tmp_path / "out"
    assert predict(["-i", bad, "-o", str(out), "-m", standin_model]) == 0
    record = json.loads((out / "noorient_record.json").read_text())
    warning = [w for w in record["input_warnings"] if "qform" in w]
    assert warning and f"assumed {record['input_orientation']}" in warning[0]


@pytest.mark.parametrize("content, words", [("empty", "the folder is empty"), ("dicom", "3 DICOM file(s)")])
def test_empty_or_dicom_folder_is_an_error(standin_model, tmp_path, content, words, monkeypatch, capsys):
    """Defect 5: exit 0 with '0 case(s)' before. Now an error before the model is even loaded."""
    inp = tmp_path / "in"
    inp.mkdir()
    if content == "dicom":
        for i in range(3):
            fake_dicom(inp / f"IM{i:04d}.dcm")
    monkeypatch.setattr("nnunet_vertkd.inference.predictor.VertKDPredictor.initialize_from_trained_model_folder",
                        lambda *a, **k: pytest.fail("the model was loaded before the input was checked"))
    assert predict(["-i", str(inp), "-o", str(tmp_path / "out"), "-m", standin_model]) == 2
    err = capsys.readouterr().err
    assert "vertkd_predict: error: " in err and words in err
    if content == "dicom":
        assert "dcm2niix" in err


def test_output_folder_problems_are_found_before_any_work(standin_model, tmp_path, monkeypatch, capsys):
    """Defect 7: -o pointing at a file, an uncreatable or read-only folder: a message, no traceback, no case
    computed first."""
    ct, _ = h.phantom(n_blocks=2)
    inp = write(ct, tmp_path / "a.nii.gz")
    monkeypatch.setattr("nnunet_vertkd.inference.predictor.VertKDPredictor._predict",
                        lambda *a, **k: pytest.fail("a case was computed before the output folder was checked"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, words in ((a_file, "is a file"), (a_file / "sub", "cannot create")):
        assert predict(["-i", inp, "-o", str(out), "-m", standin_model]) == 2 and words in capsys.readouterr().err
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real = outputs._writable  # the tests run as root, for whom chmod 555 changes nothing: simulate it
    monkeypatch.setattr(outputs, "_writable", lambda folder: False if str(readonly) in str(folder) else real(folder))
    for out in (readonly, readonly / "new"):
        assert predict(["-i", inp, "-o", str(out), "-m", standin_model]) == 2
        assert "permission denied" in capsys.readouterr().err
    assert list(readonly.iterdir()) == []


def test_corrupt_spine_checkpoint_is_named(standin_model, tmp_path, capsys):
    """Defect 7: UnpicklingError traceback before, without the file name."""
    ct, _ = h.phantom(n_blocks=2)
    inp = write(ct, tmp_path / "a.nii.gz")
    spine = h.make_untrained_spine_model(tmp_path / "spine_results")
    checkpoint = os.path.join(spine, "fold_all", "checkpoint_final.pth")
    with open(checkpoint, "wb") as f:
        f.write(b"not a checkpoint at all")
    assert predict(["-i", inp, "-o", str(tmp_path / "out"), "-m", standin_model, "--spine-m", spine]) == 2
    err = capsys.readouterr().err
    assert checkpoint in err and "spine" in err


def test_stale_temporaries_of_killed_runs_are_removed(standin_model, tmp_path):
    """Defect 8: hidden .tmp files of a killed prediction stayed forever. Those of a live process (another
    part of the same run) are kept."""
    ct, _ = h.phantom(n_blocks=2)
    inp = write(ct, tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".a.tmp4194999.nii.gz"  # above Linux's largest pid: no such process
    dead.write_bytes(b"half a mask")
    (out / ".a_ctd.tmp4194999.json").write_text("[")
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / f".b.tmp{live_proc.pid}.nii.gz"
        live.write_bytes(b"being written by another part")
        assert predict(["-i", inp, "-o", str(out), "-m", standin_model]) == 0
        assert not dead.exists() and not (out / ".a_ctd.tmp4194999.json").exists()
        assert live.exists()
    finally:
        live_proc.kill()
        live_proc.wait()


def test_case_name_clash_is_failed_not_also_segmented(standin_model, tmp_path, capsys):
    """Defect 8: x.nii and x.nii.gz were counted as both segmented and failed."""
    ct, _ = h.phantom(n_blocks=2)
    inp = tmp_path / "in"
    inp.mkdir()
    write(ct, inp / "x.nii")
    write(ct, inp / "x.nii.gz")
    write(ct, inp / "y.nii.gz")
    out = tmp_path / "out"
    assert predict(["-i", str(inp), "-o", str(out), "-m", standin_model]) == 1
    printed = capsys.readouterr().out
    assert "1 segmented" in printed and "1 failed" in printed
    line = failed_line(printed, "x")
    assert "x.nii.gz" in line and "x.nii," in line
    assert outputs_of(out, "x") == [] and outputs_of(out, "y")


def test_ctrl_c_in_the_predictor_exits_130_with_one_line(standin_model, tmp_path, monkeypatch, capsys):
    ct, _ = h.phantom(n_blocks=2)
    inp = write(ct, tmp_path / "a.nii.gz")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("nnunet_vertkd.inference.predictor.VertKDPredictor._predict", interrupted)
    assert predict(["-i", inp, "-o", str(tmp_path / "out"), "-m", standin_model]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vertkd_predict: interrupted") and "Traceback" not in "\n".join(err)
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------------------------------------ converter
def dataset_files(converter_dirs):
    return {str(p.relative_to(converter_dirs["raw"])): p.read_bytes() for p in sorted(converter_dirs["raw"].rglob("*")) if p.is_file()}


def test_converter_refuses_impossible_geometry_and_single_slices(tmp_path, converter_dirs):
    """Defect 2 (converter side) and defect 8 (a 1-slice CT was converted as a training case)."""
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")  # good
    for stem, header in (("sub-verse002", {"pixdim": (1.0, 1.0, 0.0)}),
                         ("sub-verse003", {"pixdim": (1.0, -1.0, 1.0)}),
                         ("sub-verse004", {"srow": [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]]})):
        p = write_case(root, "01_training", stem)
        for key in ("ct", "mask"):
            patch_nifti1_header(p[key], p[key], **header)
    p = write_case(root, "01_training", "sub-verse005", spacing=(1.0, 1.0, 30.0), shape_kji=(4, 24, 20),
                   labels=(20,))
    one = np.zeros((1, 24, 20), np.uint8)
    one[0, 5:15, 5:15] = 20
    write_case(root, "01_training", "sub-verse006", shape_kji=(1, 24, 20), mask_array=one, labels=(20,),
               orientation="LPI")
    p = write_case(root, "01_training", "sub-verse007")  # no qform/sform: converted with a warning
    for key in ("ct", "mask"):
        patch_nifti1_header(p[key], p[key], codes=(0, 0))
    report = convert_trees([root], converter_dirs)
    skipped = {s["case"]: s["reason"] for s in report["skipped"]}
    assert sorted(skipped) == ["sub-verse002", "sub-verse003", "sub-verse004", "sub-verse005", "sub-verse006"]
    assert "pixdim" in skipped["sub-verse002"] and "pixdim" in skipped["sub-verse003"]
    assert "singular" in skipped["sub-verse004"]
    assert "absurd voxel spacing" in skipped["sub-verse005"]
    assert "single slice" in skipped["sub-verse006"]
    conv = {c["case"]: c for c in report["converted"]}
    assert sorted(conv) == ["sub-verse001", "sub-verse007"]
    warning = [w for w in conv["sub-verse007"]["warnings"] if "qform" in w]
    assert warning and "assumed LPS" in warning[0] and "sub-verse007_ct.nii.gz" in warning[0]


def test_failed_write_keeps_the_previous_case_and_dataset(tmp_path, converter_dirs, monkeypatch):
    """Defect 3: with a labelsTr that cannot be written, the previous imagesTr file was deleted as "stale"."""
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    write_case(root, "01_training", "sub-verse002")
    convert_trees([root], converter_dirs)
    before = dataset_files(converter_dirs)
    write_case(root, "01_training", "sub-verse002", labels=(20, 21))  # the scan changed: new files to write
    real = os.replace

    def replace(src, dst, *a, **k):  # labelsTr refuses new entries (root ignores chmod: simulate it)
        if f"{os.sep}labelsTr{os.sep}" in str(dst) or f"{os.sep}labelsTr{os.sep}" in str(src):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ConversionError, match="writing failed"):
        convert_trees([root], converter_dirs, num_processes=1)
    monkeypatch.setattr(os, "replace", real)
    after = dataset_files(converter_dirs)
    assert after == before  # every case as it was (old files, dataset.json, report); nothing removed
    report = convert_trees([root], converter_dirs)  # and once the folder is writable again, the new version is converted
    assert {c["case"]: c["verse_labels"] for c in report["converted"]}["sub-verse002"] == [20, 21]


def test_unwritable_dataset_folder_is_found_before_any_case(tmp_path, converter_dirs, monkeypatch):
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    convert_trees([root], converter_dirs)
    before = dataset_files(converter_dirs)
    real = convert_module._writable
    monkeypatch.setattr(convert_module, "_writable", lambda f: False if f.endswith("labelsTr") else real(f))
    monkeypatch.setattr(convert_module, "convert_case", lambda job: pytest.fail("converted before the check"))
    with pytest.raises(ConversionError, match="cannot write to .*labelsTr"):
        convert_trees([root], converter_dirs)
    assert dataset_files(converter_dirs) == before


class _Killed(BaseException):
    """Stands for SIGKILL in the middle of a commit (nothing after it runs, no clean-up)."""


def test_commit_killed_halfway_is_rolled_back_by_the_next_run(tmp_path, converter_dirs, monkeypatch):
    """A case's five files are moved into place one by one; a process killed in between (SIGKILL: no clean-up
    runs) leaves a journal; the next run puts the previous files back before anything else."""
    root = tmp_path / "in"
    write_case(root, "01_training", "sub-verse001")
    convert_trees([root], converter_dirs)
    first = dataset_files(converter_dirs)
    case_files = sorted(p for p in converter_dirs["raw"].rglob("sub-verse001*") if p.is_file())
    assert len(case_files) == 5
    staging = converter_dirs["raw"] / V / case_conversion.STAGING_FOLDER
    stager = case_conversion._Stager(str(staging))
    for final in case_files:  # a new version of every file, staged
        tmp = stager._tmp(str(final))
        with open(tmp, "wb") as f:
            f.write(b"new version")
        stager.pending.append((tmp, str(final)))
    real = os.replace
    placed = {"n": 0}

    def replace(src, dst, *a, **k):
        if str(src).startswith(str(staging)) and not str(dst).startswith(str(staging)):
            placed["n"] += 1
            if placed["n"] == 3:  # two new files in place, three not yet
                raise _Killed()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        stager.commit()
    monkeypatch.setattr(os, "replace", real)
    contents = [p.read_bytes() if p.exists() else None for p in case_files]
    assert contents.count(b"new version") == 2  # the half-written case a SIGKILL leaves
    assert list(staging.glob("*" + case_conversion.JOURNAL_SUFFIX))
    assert convert_trees([root], converter_dirs)["counts"]["converted"] == 1  # the next run
    assert dataset_files(converter_dirs) == first and not staging.exists()
    # and the roll-back itself restores the previous files, whatever the next run then writes
    stager = case_conversion._Stager(str(staging))
    for final in case_files:
        tmp = stager._tmp(str(final))
        with open(tmp, "wb") as f:
            f.write(b"new version")
        stager.pending.append((tmp, str(final)))
    placed["n"] = 0
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        stager.commit()
    monkeypatch.setattr(os, "replace", real)
    assert case_conversion.recover_interrupted_commits(str(staging))
    assert [p.read_bytes() for p in case_files] == [first[str(p.relative_to(converter_dirs["raw"]))] for p in case_files]


# ------------------------------------------------------------------------------------------------ evaluator
def slabs(labels, shape=(24, 10, 10), dtype=np.uint8):
    m = np.zeros(shape, dtype=dtype)
    for n, lab in enumerate(labels):
        m[n * 4:n * 4 + 3, 2:8, 2:8] = lab
    return m


def write_mask(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def evaluate(ref, pred, tmp_path, *extra):
    return eval_cli.main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "eval"), "--quiet", *extra])


def test_evaluator_refuses_truncated_and_corrupt_files(tmp_path, capsys):
    """Defects 1 and 7: a truncated prediction was scored (Dice 0.02), a corrupt one gave a traceback."""
    ref = write_mask(tmp_path / "ref" / "sub-verse001_seg-vert_msk.nii.gz", slabs([20, 21, 22, 23, 24]))
    full = write_mask(tmp_path / "full" / "sub-verse001.nii.gz", np.random.default_rng(0).integers(
        0, 6, (24, 10, 10)).astype(np.uint8))
    pred = tmp_path / "pred"
    pred.mkdir()
    truncate(full, pred / "sub-verse001.nii.gz", 0.5)
    assert evaluate(ref, pred, tmp_path) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "sub-verse001.nii.gz" in err
    (pred / "sub-verse001.nii.gz").write_bytes(b"garbage" * 50)
    assert evaluate(ref, pred, tmp_path) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [99, 255])
def test_evaluator_refuses_reference_labels_that_are_not_vertebrae(tmp_path, capsys, bad):
    """Defect 6: 99, 255 were scored as vertebrae; same rule as the converter."""
    ref = write_mask(tmp_path / "ref" / "sub-verse001_seg-vert_msk.nii.gz", slabs([20, 21, bad]))
    pred = write_mask(tmp_path / "pred" / "sub-verse001.nii.gz", slabs([1, 2, 3]))
    assert evaluate(ref.parent, pred.parent, tmp_path) == 2
    assert f"[{bad}]" in capsys.readouterr().err


def test_evaluator_drops_sacrum_with_a_warning(tmp_path):
    ref = write_mask(tmp_path / "ref" / "sub-verse001_seg-vert_msk.nii.gz", slabs([20, 21, 26]))
    pred = write_mask(tmp_path / "pred" / "sub-verse001.nii.gz", slabs([1, 2]))
    assert evaluate(ref.parent, pred.parent, tmp_path) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    case = summary["cases"]["sub-verse001"]
    assert case["n_ref"] == 2 and case["dice_mean"] == 1.0
    assert any("26" in w and "background" in w for w in case["warnings"])


@pytest.mark.parametrize("values, dtype, words", [((1, 300), np.uint16, "above 255"),
                                                  ((1, -5), np.int16, "negative"),
                                                  ((1, 2.5), np.float32, "non-integer")])
def test_evaluator_refuses_impossible_prediction_labels(tmp_path, capsys, values, dtype, words):
    """Defect 8: 300, -5 and 2.5 (rounded, merging two vertebrae) were accepted without a word."""
    ref = write_mask(tmp_path / "ref" / "sub-verse001_seg-vert_msk.nii.gz", slabs([20, 21]))
    pred = write_mask(tmp_path / "pred" / "sub-verse001.nii.gz", slabs(values, dtype=dtype))
    assert evaluate(ref.parent, pred.parent, tmp_path) == 2
    assert words in capsys.readouterr().err
