"""Miniature of ``vertkd_benchmark study``: 2 tiny synthetic cases, 2 trainers (T_S, S_T4) of a few iterations,
prediction + evaluation with the real console scripts, the table written."""
import json

import pytest

from nnunet_vertkd.benchmarks.cli import main


@pytest.mark.slow
def test_study_miniature(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "study"
    docs = tmp_path / "docs" / "study_mini.md"
    rc = main(["study", "--scale", "mini", "--out", str(out), "--trainers", "T_S", "S_T4", "--cases", "2",
               "--docs", str(docs)])
    assert rc == 0
    md = docs.read_text()
    assert md == (out / "study.md").read_text()
    assert "vertkd_benchmark study --scale mini" in md
    assert "| T_S |" in md and "| S_T4 |" in md and "| S_S |" not in md
    assert "Hardware:" in md and "data seed 0" in md
    result = json.loads((out / "study.json").read_text())
    assert set(result["results"]) == {"T_S", "S_T4"}
    for pid in ("T_S", "S_T4"):
        for set_name, r in result["results"][pid].items():
            assert r["n_vertebrae"] > 0
            assert r["dice"][0] is not None and 0.0 <= r["dice"][0] <= 100.0
            assert r["failure_pct"] is not None
    models = out / "results_seed0"
    for trainer in ("VertKDTeacherTrainer_studyMini", "VertKDStudentTrainer_studyMini"):
        assert list(models.glob(f"*/{trainer}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth")), trainer
    # the student distilled from the study's own teacher
    log = (out / "logs" / "study.log").read_text()
    assert "Teacher: " in log and "VertKDTeacherTrainer_studyMini__nnUNetPlans__3d_fullres/fold_0" in log

    # an existing non-empty OUT is refused without --resume / --overwrite: a usage error (exit 2)
    assert main(["study", "--scale", "mini", "--out", str(out), "--trainers", "T_S"]) == 2
