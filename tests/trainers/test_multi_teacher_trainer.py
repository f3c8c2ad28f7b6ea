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


def test_trainer_distillation_term_equals_the_pure_functions():
    """The trainer's KD term (hooks, lazily created adapters, weights) = 0.1 * sum_j w_j Mid_j + 0.1 * KL computed
    directly with the loss functions; the teachers stay frozen and in eval mode."""
    from nnunet_vertkd.trainers.losses.multi_teacher import (
        adaptive_teacher_weights, multi_teacher_kl_loss, weighted_teacher_mean)
    cls = ext.VertKDStudentTrainer_multiTeacher
    torch.manual_seed(0)
    tr = cls.__new__(cls)  # no nnU-Net __init__: only what compute_distillation_loss uses
    tr.device, tr.is_ddp, tr._mt_in_train_step, tr._mt_step = torch.device("cpu"), False, True, {}
    tr.feature_adapters, tr._adapter_channels, tr.adapter_optimizer = torch.nn.ModuleDict(), {}, None
    tr.optimizer_name, tr.initial_lr, tr.adam_betas, tr.weight_decay = "adam", 1e-3, (0.9, 0.999), 0.0
    tr.teachers = [VertKDUNet(2, 1, TEACHER_FEATURES).eval() for _ in range(2)]
    for t in tr.teachers:
        t.requires_grad_(False)
    tr._teacher_recorders = [FeatureRecorder(t) for t in tr.teachers]
    student = VertKDUNet(2, 1, STUDENT_FEATURES)
    tr._student_recorder = FeatureRecorder(student)
    data = torch.randn(2, 2, 16, 16, 16)
    target = torch.zeros(2, 1, 16, 16, 16)
    target[0, :, 2:9, 3:12, 3:12] = 1
    target[1, :, 6:14, 4:10, 5:11] = 1
    tr._mt_target = target
    out = student(data)
    kd = tr.compute_distillation_loss(data, out, None, 1.0)
    assert sorted(tr._adapter_channels.items()) == [("t0_decoder", [8, 16]), ("t0_encoder", [64, 128]),
                                                    ("t1_decoder", [8, 16]), ("t1_encoder", [64, 128])]
    assert sum(p.numel() for p in tr.adapter_optimizer.param_groups[0]["params"]) + sum(
        p.numel() for g in tr.adapter_optimizer.param_groups[1:] for p in g["params"]) == 2 * (64 * 128 + 128 + 8 * 16 + 16)
    # recompute independently
    rec_s = FeatureRecorder(student)
    out2 = student(data)
    fs = rec_s.take()
    zs, mids = [], []
    for j, t in enumerate(tr.teachers):
        rec = FeatureRecorder(t)
        with torch.no_grad():
            zs.append(t(data))
        ft = rec.take()
        adapters = [tr.feature_adapters[f"t{j}_encoder"], tr.feature_adapters[f"t{j}_decoder"]]
        mids.append(mid_loss_per_sample(fs, ft, target, adapters))
    w, _ = adaptive_teacher_weights(zs, target)
    expected = 0.1 * weighted_teacher_mean(torch.stack(mids, 1), w) + 0.1 * multi_teacher_kl_loss(out2, zs, w, 4.0)
    assert kd.item() == pytest.approx(expected.item(), rel=1e-5)
    assert tr._mt_step["weights"].sum() == pytest.approx(1.0, abs=1e-5) and tr._mt_step["mid"] > 0
    kd.backward()
    assert student.decoder.stages[-1][0].weight.grad is not None
    assert all(p.grad is not None for p in tr.feature_adapters.parameters())
    assert all(not t.training and all(p.grad is None for p in t.parameters()) for t in tr.teachers)
