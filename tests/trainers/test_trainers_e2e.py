"""End to end with the STOCK nnU-Net command: plan/preprocess a tiny vertebra dataset, see the student stop at
once without a teacher, train the debug teacher, then the default-style debug student that finds it. Checks
checkpoints (+ 'vertkd' entry) load into the trainer-built network, both loss terms are logged and the
iterative validation wrote validation/summary.json. About 2-3 minutes on 2 CPU cores."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
from nnunet_vertkd.trainers.network import STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet, count_parameters
from nnunet_vertkd.trainers.teacher_discovery import TEACHER_ENV, find_trainer_class, load_teacher_network
from helpers.tiny_dataset import plan_and_preprocess, write_tiny_vertebra_dataset

DATASET_ID = 990
DATASET = "Dataset990_TinyVert"
TEACHER = "VertKDTeacherTrainer_debug"
STUDENT = "VertKDStudentTrainer_debug"


def _train(trainer, env, *extra):
    exe = Path(sys.executable).parent / "nnUNetv2_train"
    return subprocess.run([str(exe), str(DATASET_ID), "3d_fullres", "all", "-tr", trainer, "-device", "cpu", *extra],
                          env=env, capture_output=True, text=True, timeout=600)


def _fold(env, trainer):
    return Path(env["nnUNet_results"]) / DATASET / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_all"


def _latest_log(fold):
    """The newest training log (a failed earlier run leaves its own log in the same folder)."""
    return max(fold.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime).read_text()


def _load_checkpoint_into_network(path):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    cls = find_trainer_class(ckpt["trainer_name"])
    pm = PlansManager(ckpt["init_args"]["plans"])
    cm = pm.get_configuration(ckpt["init_args"]["configuration"])
    net = cls.build_network_architecture(pm, cm, 1, 27, False)
    net.load_state_dict(ckpt["network_weights"])
    return ckpt, net.eval()


@pytest.mark.slow
def test_teacher_then_student_with_stock_nnunetv2_train(nnunet_env):
    torch.set_num_threads(1)
    env = ensure_ext_trainer_env(dict(nnunet_env))
    env.pop(TEACHER_ENV, None)
    write_tiny_vertebra_dataset(Path(env["nnUNet_raw"]), DATASET_ID)
    plan_and_preprocess(DATASET_ID, env)

    # 1. student without teacher: stops at once, naming the path it looked for
    res = _train(STUDENT, env)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    expected = _fold(env, TEACHER) / "checkpoint_final.pth"
    assert "TeacherNotFoundError" in out and str(expected) in out, out[-3000:]
    assert not (_fold(env, STUDENT) / "checkpoint_final.pth").exists()

    # 2. teacher
    res = _train(TEACHER, env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    # 3. default-style student: finds the teacher of the same dataset/plans/configuration/fold
    res = _train(STUDENT, env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]

    for trainer, features in ((TEACHER, TEACHER_FEATURES), (STUDENT, STUDENT_FEATURES)):
        fold = _fold(env, trainer)
        assert (fold / "checkpoint_final.pth").is_file() and (fold / "checkpoint_best.pth").is_file()
        assert (fold.parent / "plans.json").is_file() and (fold.parent / "dataset.json").is_file()
        ckpt, net = _load_checkpoint_into_network(fold / "checkpoint_final.pth")
        v = ckpt["vertkd"]
        assert v["role"] == "vertebra" and v["patch_size"] == [32, 32, 32] and v["features"] == list(features)
        assert (v["superior_axis"], v["superior_at_low_index"], v["left_right_axis"]) == (0, True, 2)
        assert tuple(ckpt["inference_allowed_mirroring_axes"]) == (2,)
        assert count_parameters(net) == count_parameters(VertKDUNet(2, 1, features))
        with torch.no_grad():
            assert net(torch.zeros(1, 2, 32, 32, 32)).shape == (1, 1, 32, 32, 32)

        log = _latest_log(fold)
        lines = [ln for ln in log.splitlines() if "train_seg_loss" in ln]
        assert len(lines) == 2 and all("train_kd_loss" in ln for ln in lines)
        kd = [float(ln.split("train_kd_loss")[1].split()[0]) for ln in lines]
        assert all(k > 0 for k in kd) if trainer == STUDENT else all(k == 0 for k in kd)

        summary = json.loads((fold / "validation" / "summary.json").read_text())
        assert len(summary["metric_per_case"]) == 5
        assert "dice_mean" in summary["mean"] and "per_vertebra" in summary["metric_per_case"][0]["metrics"]

    student_log = _latest_log(_fold(env, STUDENT))
    assert f"Teacher: {_fold(env, TEACHER) / 'checkpoint_final.pth'}" in student_log
    student_ckpt = torch.load(str(_fold(env, STUDENT) / "checkpoint_final.pth"), map_location="cpu",
                              weights_only=False)
    assert student_ckpt["vertkd"]["teacher"]["trainer_name"] == TEACHER
    assert student_ckpt["vertkd"]["distillation"] == "soft_outputs"
    # 4. resume (--c) after an "interruption" after epoch 0: checkpoint_latest as nnU-Net writes it then
    fold = _fold(env, STUDENT)
    ckpt = torch.load(str(fold / "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    ckpt["current_epoch"] = 1
    ckpt["logging"] = {k: v[:1] for k, v in ckpt["logging"].items()}
    torch.save(ckpt, str(fold / "checkpoint_latest.pth"))
    (fold / "checkpoint_final.pth").unlink()
    for log in fold.glob("training_log_*.txt"):
        log.rename(log.with_suffix(".old"))
    res = _train(STUDENT, env, "--c")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    log = _latest_log(fold)
    assert "Epoch 1" in log and "Epoch 0" not in log and "Teacher: " in log
    assert len([ln for ln in log.splitlines() if "train_kd_loss" in ln]) == 1
    assert torch.load(str(fold / "checkpoint_final.pth"), map_location="cpu", weights_only=False)["current_epoch"] == 2

    # the teacher loads frozen, in eval mode, through the same path the student uses
    teacher, info = load_teacher_network(_fold(env, TEACHER) / "checkpoint_final.pth", torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
