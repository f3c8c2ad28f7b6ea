"""Multi-teacher student end to end with the STOCK nnU-Net command: a tiny vertebra dataset, the debug teacher of
fold 0, the multi-teacher student stopping at once and naming the missing fold-1 teacher, the fold-1 teacher,
then the student (folds 0 and 1 as teachers) trains, logs its terms, time and memory, writes a checkpoint that
loads as a plain student and resumes with --c (adapters restored). About 3-4 minutes on 2 CPU cores."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
from nnunet_vertkd.trainers.multi_teacher import ADAPTER_CHECKPOINT_KEY, TEACHERS_ENV
from nnunet_vertkd.trainers.network import STUDENT_FEATURES, VertKDUNet
from nnunet_vertkd.trainers.teacher_discovery import TEACHER_ENV, find_trainer_class
from helpers.tiny_dataset import plan_and_preprocess, write_tiny_vertebra_dataset

DATASET_ID = 990
DATASET = "Dataset990_TinyVert"
TEACHER = "VertKDTeacherTrainer_debug"
STUDENT = "VertKDStudentTrainer_multiTeacher_debug"


def _train(trainer, fold, env, *extra):
    exe = Path(sys.executable).parent / "nnUNetv2_train"
    return subprocess.run([str(exe), str(DATASET_ID), "3d_fullres", str(fold), "-tr", trainer, "-device", "cpu",
                           *extra], env=env, capture_output=True, text=True, timeout=900)


def _fold(env, trainer, fold):
    return Path(env["nnUNet_results"]) / DATASET / f"{trainer}__nnUNetPlans__3d_fullres" / f"fold_{fold}"


def _latest_log(fold):
    return max(fold.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime).read_text()


@pytest.mark.slow
def test_multi_teacher_student_with_stock_nnunetv2_train(nnunet_env):
    torch.set_num_threads(1)
    env = ensure_ext_trainer_env(dict(nnunet_env))
    env.pop(TEACHER_ENV, None)
    env.pop(TEACHERS_ENV, None)
    write_tiny_vertebra_dataset(Path(env["nnUNet_raw"]), DATASET_ID)
    plan_and_preprocess(DATASET_ID, env)
    env["nnUNet_n_proc_DA"] = "0"  # training only (it breaks the planner)

    # 1. fold-0 teacher only: the student stops at once and names the missing fold-1 teacher
    res = _train(TEACHER, 0, env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    res = _train(STUDENT, 0, env)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "TeacherNotFoundError" in out, out[-3000:]
    assert f"found   fold 0: {_fold(env, TEACHER, 0) / 'checkpoint_final.pth'}" in out
    assert f"MISSING fold 1: looked for {_fold(env, TEACHER, 1) / 'checkpoint_final.pth'}" in out
    assert f"nnUNetv2_train {DATASET} 3d_fullres 1 -tr {TEACHER} -p nnUNetPlans" in out
    assert TEACHERS_ENV in out
    assert not (_fold(env, STUDENT, 0) / "checkpoint_final.pth").exists()

    # 2. fold-1 teacher, then the student finds both
    res = _train(TEACHER, 1, env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    res = _train(STUDENT, 0, env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]

    fold = _fold(env, STUDENT, 0)
    log = _latest_log(fold)
    assert "2 teacher(s) found, 0 missing" in log
    assert "teachers in eval mode under torch.no_grad" in log
    mt_lines = [ln for ln in log.splitlines() if "multi-teacher: 3 steps, time per step" in ln]
    assert len(mt_lines) == 2, log[-3000:]
    for ln in mt_lines:
        assert "teachers' forward" in ln and "peak memory" in ln and "MB" in ln
        weights = [float(v) for v in ln.split("teacher weights mean [")[1].split("]")[0].split(",")]
        assert len(weights) == 2 and abs(sum(weights) - 1) < 1e-3 and all(0 <= w <= 1 for w in weights)
        assert float(ln.split("Mid ")[1].split()[0]) > 0 and float(ln.split("KL ")[1].split()[0]) >= 0
    kd = [float(ln.split("train_kd_loss")[1].split()[0]) for ln in log.splitlines() if "train_kd_loss" in ln]
    assert len(kd) == 2 and all(k > 0 for k in kd)

    # the checkpoint: a plain student network (no adapter weights in it), teachers and adapters recorded beside
    ckpt = torch.load(str(fold / "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    net = VertKDUNet(2, 1, STUDENT_FEATURES)
    net.load_state_dict(ckpt["network_weights"])  # strict
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm = PlansManager(ckpt["init_args"]["plans"])
    built = find_trainer_class(ckpt["trainer_name"]).build_network_architecture(
        pm, pm.get_configuration("3d_fullres"), 1, 27, False)
    built.load_state_dict(ckpt["network_weights"])
    v = ckpt["vertkd"]
    assert v["distillation"] == "multi_teacher" and v["features"] == list(STUDENT_FEATURES)
    assert [t["trainer_name"] for t in v["teachers"]] == [TEACHER, TEACHER]
    assert [t["label"] for t in v["teachers"]] == ["fold 0", "fold 1"]
    assert v["multi_teacher"]["alpha"] == 0.1 and v["multi_teacher"]["beta"] == 0.1
    assert v["multi_teacher"]["weighting"] == "dice"
    adapters = ckpt[ADAPTER_CHECKPOINT_KEY]
    assert adapters["channels"] == {"t0_encoder": [64, 128], "t0_decoder": [8, 16],
                                    "t1_encoder": [64, 128], "t1_decoder": [8, 16]}
    assert adapters["state_dict"]["t0_decoder.weight"].shape == (16, 8, 1, 1, 1)
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 1 and "dice_mean" in summary["mean"]

    # 3. resume after epoch 0 (checkpoint_latest as nnU-Net writes it then): teachers and adapters come back
    ckpt["current_epoch"] = 1
    ckpt["logging"] = {k: val[:1] for k, val in ckpt["logging"].items()}
    torch.save(ckpt, str(fold / "checkpoint_latest.pth"))
    (fold / "checkpoint_final.pth").unlink()
    for old in fold.glob("training_log_*.txt"):
        old.rename(old.with_suffix(".old"))
    res = _train(STUDENT, 0, env, "--c")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    log = _latest_log(fold)
    assert "Epoch 1" in log and "Epoch 0" not in log
    assert "Restored 4 feature adapter(s)" in log and "2 teacher(s) found" in log
    assert len([ln for ln in log.splitlines() if "multi-teacher: 3 steps" in ln]) == 1
    assert torch.load(str(fold / "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)["current_epoch"] == 2
