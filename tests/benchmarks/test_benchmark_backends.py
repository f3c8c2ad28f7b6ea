"""Miniature of the backend and end-to-end options of ``vertkd_benchmark efficiency``: time per patch by backend,
nnU-Net with mirroring off and its estimate with mirroring on, end to end through the predictor (oracle loop on
the paper's recipe network). 32^3 patches, one tiny scan, CPU; OpenVINO rows only when it is installed."""
import json

import pytest

from nnunet_vertkd.benchmarks.cli import main
from nnunet_vertkd.inference.backends import backend_installed
from test_benchmark_efficiency import _tiny_scan


@pytest.mark.slow
def test_efficiency_backends_and_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv("VERTKD_CACHE_DIR", str(tmp_path / "cache"))
    ct, mask = _tiny_scan(str(tmp_path))
    out = tmp_path / "out"
    backends = ["torch"] + (["openvino"] if backend_installed("openvino") else [])
    main(["efficiency", "--patch", "32", "--runs", "1", "--warmup", "0", "--threads", "1", "--out", str(out),
          "--scan", ct, "--scan-mask", mask, "--nets", "student", "nnunet", "--backends", *backends,
          "--e2e", "--e2e-trained", "--e2e-backends", backends[-1], "--e2e-centres", "3", "2"])
    report = json.loads((out / "efficiency.json").read_text())
    md = (out / "efficiency.md").read_text()
    assert set(report["patch_backends"]["student"]) == set(backends)
    if "openvino" in backends:
        assert report["patch_backends"]["student"]["openvino"]["max_abs_probability_difference_to_torch"] < 1e-3
    est = report["scan"]["nnunet_mirroring_on"]
    assert est["estimated"] and est["n_network_calls"] == 8 * report["scan"]["nnunet"]["n_network_calls"]
    rows = report["e2e"]
    assert [r["n_convergence_centres"] for r in rows] == [3, 2]
    for r in rows:
        assert r["oracle"] and r["n_vertebrae_found"] == 3 and r["stages"]["spine"] >= 0
        assert r["peak_memory_mb"] > 0 and r["backend"]["vertebra"] == backends[-1]
    assert rows[1]["n_network_calls"] < rows[0]["n_network_calls"]  # 2 centres: fewer calls
    assert "End to end" in md and "Time per patch by inference backend" in md


def test_dice_per_reference_vertebra():
    import numpy as np
    from nnunet_vertkd.benchmarks.whole_scan import dice_per_reference
    ref = np.zeros((10, 10, 10), np.int32)
    ref[:3], ref[4:7], ref[8:] = 20, 21, 22
    pred = np.zeros_like(ref)
    pred[:3] = 5            # perfect, other label number
    pred[4:6] = 6           # 2 of 3 slices
    assert dice_per_reference(pred, ref) == [1.0, 0.8, 0.0]  # the third is missed


def test_loop_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["loop", "--help"])
    assert e.value.code == 0 and "--centres" in capsys.readouterr().out
