"""End to end, the way a user runs it: vertkd_make_synthetic + vertkd_convert_verse (synthetic + real samples)
+ nnUNetv2_plan_and_preprocess --verify_dataset_integrity -> 1 mm isotropic preprocessed vertebra data."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VERSE_SAMPLE_DIR

BIN = Path(sys.executable).parent


def _tool(name):
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


@pytest.mark.slow
def test_synthetic_and_real_samples_to_preprocessed_1mm(tmp_path, nnunet_env):
    if importlib.util.find_spec("nnunet_vertkd.synthetic.cli") is None:
        pytest.skip("vertkd_make_synthetic (nnunet_vertkd.synthetic.cli) is not available")
    for tool in ("vertkd_make_synthetic", "vertkd_convert_verse", "nnUNetv2_plan_and_preprocess"):
        assert _tool(tool), f"console script {tool} not installed (pip install -e .)"

    def run(*cmd, timeout=900):
        proc = subprocess.run([_tool(cmd[0]), *cmd[1:]], env=nnunet_env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    synthetic = tmp_path / "verse_synthetic"
    run("vertkd_make_synthetic", str(synthetic), "--cases", "6", "--seed", "0", "--scale", "0.5", "--quiet")
    roots = [str(synthetic)] + ([str(VERSE_SAMPLE_DIR)] if VERSE_SAMPLE_DIR.is_dir() else [])
    out = run("vertkd_convert_verse", *roots, "-d", "501", "-np", "1", "--no-progress")
    raw = Path(nnunet_env["nnUNet_raw"])
    report = json.loads((raw / "Dataset501_VerSeVertebrae" / "conversion_report.json").read_text())
    assert report["counts"]["converted"] >= 6
    if VERSE_SAMPLE_DIR.is_dir():
        assert "SKIPPED sub-verse004: mask without CT" in out
        assert [s["case"] for s in report["skipped"]] == ["sub-verse004"]
        assert {"sub-verse005", "sub-verse006"} <= {c["case"] for c in report["converted"]}

    run("nnUNetv2_plan_and_preprocess", "-d", "501", "502", "--verify_dataset_integrity", "-c", "3d_fullres",
        "-np", "1")
    pre = Path(nnunet_env["nnUNet_preprocessed"])
    for name, spacing in (("Dataset501_VerSeVertebrae", [1.0, 1.0, 1.0]), ("Dataset502_VerSeSpine", [4.0, 4.0, 4.0])):
        plans = json.loads((pre / name / "nnUNetPlans.json").read_text())
        assert plans["configurations"]["3d_fullres"]["spacing"] == spacing
        splits = json.loads((pre / name / "splits_final.json").read_text())  # kept by the preprocessing
        assert len(splits) == 5
        n_train = report["counts"]["training"] + report["counts"]["validation"]
        assert len(list((pre / name / "nnUNetPlans_3d_fullres").glob("*.pkl"))) == n_train
