"""Multi-teacher student trainer pieces without training: fold-teacher discovery ($VERTKD_TEACHERS and the
default folds, what is missing), the feature layers recorded on teacher and student nets, the adapters the
channel counts need, and the trainer classes' settings."""
import os

import pytest
import torch

import nnunet_vertkd.ext_trainers.nnunet_vertkd_trainers as ext
from nnunet_vertkd.trainers.losses.multi_teacher import feature_adapter, mid_loss_per_sample
from nnunet_vertkd.trainers.multi_teacher import (
    TEACHERS_ENV, FeatureRecorder, describe_teachers, feature_layer_modules, find_fold_teacher_checkpoints)
from nnunet_vertkd.trainers.network import STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet
from nnunet_vertkd.trainers.teacher_discovery import default_teacher_fold_folder

DS, PLANS, CONF, TR = "Dataset990_TinyVert", "nnUNetPlans", "3d_fullres", "VertKDTeacherTrainer"


def _make(folder, name="checkpoint_final.pth"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"x")
    return folder / name


def _find(results, folds=(0, 1, 2), environ=None):
    return find_fold_teacher_checkpoints(str(results), DS, PLANS, CONF, folds, TR, environ=environ or {})


def test_default_fold_teachers_found_and_missing(tmp_path):
    f0 = _make(default_teacher_fold_folder(str(tmp_path), DS, TR, PLANS, CONF, 0))
    f2 = _make(default_teacher_fold_folder(str(tmp_path), DS, TR, PLANS, CONF, 2), "checkpoint_best.pth")
    found, missing = _find(tmp_path)
    assert found == [("fold 0", f0), ("fold 2", f2)]
    assert [m[0] for m in missing] == ["fold 1"]
    looked = missing[0][1]
    assert looked[0] == default_teacher_fold_folder(str(tmp_path), DS, TR, PLANS, CONF, 1) / "checkpoint_final.pth"
    msg = describe_teachers(found, missing, DS, PLANS, CONF, TR, (0, 1, 2))
    assert "2 teacher(s) found, 1 missing" in msg
    assert f"found   fold 0: {f0}" in msg and f"MISSING fold 1: looked for {looked[0]}" in msg
    assert f"nnUNetv2_train {DS} {CONF} 1 -tr {TR} -p {PLANS}" in msg
    assert f"nnUNetv2_train {DS} {CONF} 0 " not in msg and TEACHERS_ENV in msg


def test_env_list_of_files_fold_folders_and_model_folders(tmp_path):
    a = _make(tmp_path / "x" / "a.pth")
    b = _make(tmp_path / "y" / "fold_3", "checkpoint_best.pth")
    model = tmp_path / "M__p__c"
    m0 = _make(model / "fold_0")
    _make(model / "fold_1")
    # a default teacher exists too: the env var wins
    _make(default_teacher_fold_folder(str(tmp_path), DS, TR, PLANS, CONF, 0))
    env = {TEACHERS_ENV: os.pathsep.join([str(a), str(b.parent), " ", str(model)])}
    found, missing = _find(tmp_path, folds=(0, 2), environ=env)
    assert [p for _, p in found] == [a, b, m0]
    assert [m[0] for m in missing] == [f"{model} fold 2"]
    nowhere = tmp_path / "nope.pth"
    found, missing = _find(tmp_path, environ={TEACHERS_ENV: f"{a}{os.pathsep}{nowhere}"})
    assert [p for _, p in found] == [a] and missing[0][0] == str(nowhere)


def test_no_results_folder():
    with pytest.raises(FileNotFoundError, match=TEACHERS_ENV):
        find_fold_teacher_checkpoints(None, DS, PLANS, CONF, (0, 1), TR, environ={})


def test_feature_layers_channels_and_adapters():
    teacher, student = VertKDUNet(2, 1, TEACHER_FEATURES).eval(), VertKDUNet(2, 1, STUDENT_FEATURES)
    rec_t, rec_s = FeatureRecorder(teacher), FeatureRecorder(student)
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        teacher(x)
    student(x)
    ft, fs = rec_t.take(), rec_s.take()
    assert [tuple(f.shape) for f in ft] == [(1, 128, 2, 2, 2), (1, 16, 16, 16, 16)]
    assert [tuple(f.shape) for f in fs] == [(1, 64, 2, 2, 2), (1, 8, 16, 16, 16)]
    assert fs[1].requires_grad and not ft[1].requires_grad
    adapters = [feature_adapter(s.shape[1], t.shape[1]) for s, t in zip(fs, ft)]
    assert [a.out_channels for a in adapters] == [128, 16]
    mask = torch.zeros(1, 1, 16, 16, 16)
    mask[:, :, 4:10, 4:10, 4:10] = 1
    mid = mid_loss_per_sample(fs, ft, mask, adapters)
    mid.sum().backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad and p.grad is not None)
    assert student.encoder.stages[0][0].weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(RuntimeError):
        rec_t.take()  # taken once per forward
    rec_t.remove()
    teacher(x)
    assert rec_t.features == {}
    with pytest.raises(TypeError):
        feature_layer_modules(torch.nn.Conv3d(2, 1, 1))


def test_trainer_classes_and_settings():
    base = ext.VertKDStudentTrainer_multiTeacher
    assert base.distillation == "multi_teacher" and base.teacher_trainer_name == "VertKDTeacherTrainer"
    assert base.teacher_folds == (0, 1, 2, 3, 4) and base.require_all_teachers
    assert (base.mt_alpha, base.mt_beta, base.kd_temperature, base.mt_weighting) == (0.1, 0.1, 4.0, "dice")
    assert base.features == STUDENT_FEATURES
    assert ext.VertKDStudentTrainer_multiTeacher_equalWeights.mt_weighting == "equal"
    assert ext.VertKDStudentTrainer_multiTeacher_printedWeights.mt_weighting == "dice_loss_printed"
    assert ext.VertKDStudentTrainer_multiTeacher_klOnly.mt_alpha == 0.0
    dbg = ext.VertKDStudentTrainer_multiTeacher_debug
    assert dbg.teacher_trainer_name == "VertKDTeacherTrainer_debug" and dbg.teacher_folds == (0, 1)
    assert dbg.patch_size_voxels == (32, 32, 32) and dbg.distillation == "multi_teacher"
    cpu = ext.VertKDStudentTrainer_multiTeacher_cpu2mm
    assert cpu.teacher_trainer_name == "VertKDTeacherTrainer_cpu2mm" and cpu.patch_size_voxels == (64, 64, 64)
    # the network is the ordinary student's (adapters are not part of it)
    assert type(base.build_network_architecture(None, None, 1, 27, False)) is VertKDUNet
