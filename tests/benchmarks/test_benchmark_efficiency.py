"""Miniature of ``vertkd_benchmark efficiency`` (32^3 patches, 2 runs) on a tiny synthetic scan, CPU only."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.benchmarks.cli import main
from nnunet_vertkd.benchmarks.efficiency import NETS, build_net
from nnunet_vertkd.trainers.network import STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet, count_parameters


def _tiny_scan(folder):
    """40x40x72 voxels at 1 mm (identity direction = LPS, so a higher k index is more superior) with three
    box 'vertebrae' L1 (top), L2, L3 in VerSe labels 20-22 and soft tissue around them."""
    ct = np.full((72, 40, 40), -1000, np.int16)  # [k, j, i]
    ct[:, 5:35, 5:35] = 20
    mask = np.zeros(ct.shape, np.uint8)
    for n, label in enumerate((20, 21, 22)):
        k_hi = 66 - n * 20
        ct[k_hi - 16:k_hi, 12:28, 12:28] = 500
        mask[k_hi - 16:k_hi, 12:28, 12:28] = label
    paths = []
    for arr, name in ((ct, "tiny_ct.nii.gz"), (mask, "tiny_seg-vert_msk.nii.gz")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((1.0, 1.0, 1.0))
        p = os.path.join(folder, name)
        sitk.WriteImage(img, p)
        paths.append(p)
    return paths


def test_efficiency_miniature(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("nnUNet_compile", "false")
    ct, mask = _tiny_scan(str(tmp_path))
    out = tmp_path / "out"
    main(["efficiency", "--patch", "32", "--runs", "2", "--threads", "1", "--out", str(out),
          "--scan", ct, "--scan-mask", mask])
    report = json.loads((out / "efficiency.json").read_text())
    md = (out / "efficiency.md").read_text()

    assert set(report["patch"]) == set(NETS)
    for title in ("VertKD teacher", "VertKD student", "nnU-Net default"):
        assert title in md
    teacher, student, nnunet = (report["patch"][n] for n in NETS)
    assert teacher["parameters"] == count_parameters(VertKDUNet(2, 1, TEACHER_FEATURES))
    assert student["parameters"] == count_parameters(VertKDUNet(2, 1, STUDENT_FEATURES))
    planned, _ = build_net("nnunet", str(out / "nnunet_plans_used.json"))
    assert nnunet["parameters"] == count_parameters(planned)
    assert all(r["flops"] > 0 for r in (teacher, student, nnunet))
    assert teacher["flops"] > student["flops"]
    assert teacher["parameters"] > student["parameters"]
    for r in (teacher, student, nnunet):
        t = r["seconds_per_patch"]
        assert t["n"] == 2 and 0 < t["min"] <= t["median"] <= t["max"]
        assert r["peak_memory_mb"] > 0
    assert report["machine"]["torch"] and report["machine"]["cores_available"] >= 1

    # whole scan: the oracle loop finds the three box vertebrae; nnU-Net's sliding window calls its network
    for name in ("teacher", "student"):
        s = report["scan"][name]
        assert s["loop_mode"] == "oracle"
        assert s["n_vertebrae_found"] == 3, s
        assert s["n_network_calls"] >= 3 * 3  # at least N_CONVERGENCE_CENTRES calls per vertebra
    assert report["scan"]["nnunet"]["n_network_calls"] >= 1
    assert report["scan"]["nnunet"]["output_shape"][-3:] == list(reversed(report["scan_info"]["size_1mm"]))


def test_efficiency_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["efficiency", "--help"])
    assert e.value.code == 0
    assert "--patch" in capsys.readouterr().out


def test_bad_input_is_reported_as_a_usage_error(tmp_path, capsys):
    """``vertkd_benchmark``: ``prog: error: …`` and exit status 2 (nnunet_vertkd.command_line)."""
    assert main(["efficiency", "--scan", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "vertkd_benchmark: error: --scan" in capsys.readouterr().err
    assert main(["efficiency", "--runs", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["loop", "-m", str(tmp_path / "no_model")]) == 2
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "x").write_text("")
    assert main(["study", "--scale", "mini", "--out", str(tmp_path / "study")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_option_spellings_of_the_shared_convention():
    from nnunet_vertkd.benchmarks.cli import build_parser
    p = build_parser()
    for sub in ("efficiency", "study"):
        for spelling in ("-device", "--device"):
            assert p.parse_args([sub, spelling, "cpu", "--threads", "2"]).device == "cpu"
    assert p.parse_args(["loop", "--threads", "3"]).threads == 3


def test_prepare_scan_uses_the_converter_grid_and_labels(tmp_path):
    from nnunet_vertkd.benchmarks.scan_preparation import prepare_scan
    from nnunet_vertkd.labels import VERSE_TO_NNUNET
    ct, mask = _tiny_scan(str(tmp_path))
    prepared = prepare_scan(Path(ct), Path(mask), tmp_path / "prepared", spacing_mm=2.0)
    assert prepared["size_1mm"] == [20, 20, 36] and prepared["n_vertebrae"] == 3
    img = sitk.ReadImage(prepared["mask"])
    assert img.GetSpacing() == (2.0, 2.0, 2.0)
    from nnunet_vertkd.orientation import orientation_of
    assert orientation_of(img) == "LPI"
    labels = sorted(int(v) for v in np.unique(sitk.GetArrayFromImage(img)) if v)
    assert labels == sorted(VERSE_TO_NNUNET[v] for v in (20, 21, 22))
    assert prepared["original"]["orientation"] == "LPS"


def test_acceptance_rules_of_the_loop_and_e2e_benchmarks(tmp_path, monkeypatch):
    """``loop --accept-complete off on`` runs every centres value with and without ACCEPT_COMPLETE_FRAGMENT;
    ``efficiency --e2e-setting`` reaches every end-to-end job, and N_CONVERGENCE_CENTRES stays per row."""
    from nnunet_vertkd.benchmarks import loop_accuracy, whole_scan
    from nnunet_vertkd.benchmarks.cli import build_parser
    p = build_parser()
    args = p.parse_args(["loop", "--centres", "3", "2", "--accept-complete", "off", "on"])
    assert loop_accuracy._rules(args) == [(3, False), (2, False), (3, True), (2, True)]
    assert loop_accuracy._rules(p.parse_args(["loop"])) == [(3, False), (2, False)]
    args = p.parse_args(["efficiency", "--e2e", "--nets", "nnunet", "--e2e-centres", "2",
                         "--e2e-setting", "ACCEPT_COMPLETE_FRAGMENT=true", "--e2e-setting", "START_THRESHOLD=0.4"])
    jobs = whole_scan.e2e_jobs(args, plans="unused", work=tmp_path, trained=["modelA"])
    assert [j["settings"] for j in jobs] == [{"ACCEPT_COMPLETE_FRAGMENT": True, "START_THRESHOLD": 0.4,
                                              "N_CONVERGENCE_CENTRES": 2}]
