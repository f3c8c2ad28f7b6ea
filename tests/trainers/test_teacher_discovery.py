"""Teacher discovery: default location, VERTKD_TEACHER overrides, clear error when the teacher is missing."""
import pytest

from nnunet_vertkd.trainers.teacher_discovery import (
    TEACHER_ENV, TeacherNotFoundError, default_teacher_fold_folder, find_teacher_checkpoint, find_trainer_class)

DS, PLANS, CONF = "Dataset990_TinyVert", "nnUNetPlans", "3d_fullres"


def _find(results, environ=None, fold=0, trainer="VertKDTeacherTrainer"):
    return find_teacher_checkpoint(str(results), DS, PLANS, CONF, fold, trainer, environ=environ or {})


def _make(folder, name="checkpoint_final.pth"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"x")
    return folder / name


def test_missing_teacher_message_names_path_and_fixes(tmp_path):
    with pytest.raises(TeacherNotFoundError) as e:
        _find(tmp_path)
    msg = str(e.value)
    expected = default_teacher_fold_folder(str(tmp_path), DS, "VertKDTeacherTrainer", PLANS, CONF, 0)
    assert str(expected / "checkpoint_final.pth") in msg
    assert f"nnUNetv2_train {DS} {CONF} 0 -tr VertKDTeacherTrainer -p {PLANS}" in msg
    assert TEACHER_ENV in msg


def test_default_location_final_then_best(tmp_path):
    folder = default_teacher_fold_folder(str(tmp_path), DS, "VertKDTeacherTrainer", PLANS, CONF, 0)
    best = _make(folder, "checkpoint_best.pth")
    assert _find(tmp_path) == best
    final = _make(folder, "checkpoint_final.pth")
    assert _find(tmp_path) == final
    # another teacher trainer name (class attribute teacher_trainer_name) and fold
    other = _make(default_teacher_fold_folder(str(tmp_path), DS, "MyTeacher", PLANS, CONF, "all"))
    assert _find(tmp_path, fold="all", trainer="MyTeacher") == other


def test_env_var_file_fold_folder_and_model_folder(tmp_path):
    ckpt = _make(tmp_path / "elsewhere" / "T__p__c" / "fold_3", "checkpoint_best.pth")
    assert _find(tmp_path, {TEACHER_ENV: str(ckpt)}) == ckpt
    assert _find(tmp_path, {TEACHER_ENV: str(ckpt.parent)}) == ckpt
    assert _find(tmp_path, {TEACHER_ENV: str(ckpt.parent.parent)}, fold=3) == ckpt
    # the env var wins over an existing default teacher
    _make(default_teacher_fold_folder(str(tmp_path), DS, "VertKDTeacherTrainer", PLANS, CONF, 3))
    assert _find(tmp_path, {TEACHER_ENV: str(ckpt)}, fold=3) == ckpt


def test_plans_key_used_when_env_var_unset(tmp_path):
    ckpt = _make(tmp_path / "plans_teacher" / "fold_0")
    assert find_teacher_checkpoint(str(tmp_path), DS, PLANS, CONF, 0, environ={},
                                   plans_teacher=str(ckpt.parent.parent)) == ckpt
    other = _make(tmp_path / "env_teacher")
    assert find_teacher_checkpoint(str(tmp_path), DS, PLANS, CONF, 0, environ={TEACHER_ENV: str(other)},
                                   plans_teacher=str(ckpt)) == other
    with pytest.raises(TeacherNotFoundError, match="vertkd_teacher"):
        find_teacher_checkpoint(str(tmp_path), DS, PLANS, CONF, 0, environ={}, plans_teacher=str(tmp_path / "x"))


def test_env_var_pointing_nowhere(tmp_path):
    bad = tmp_path / "nope" / "checkpoint_final.pth"
    with pytest.raises(TeacherNotFoundError) as e:
        _find(tmp_path, {TEACHER_ENV: str(bad)})
    assert str(bad) in str(e.value)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(TeacherNotFoundError) as e:
        _find(tmp_path, {TEACHER_ENV: str(empty)}, fold=1)
    assert str(empty / "fold_1" / "checkpoint_final.pth") in str(e.value)


def test_no_results_folder():
    with pytest.raises(TeacherNotFoundError, match="nnUNet_results"):
        find_teacher_checkpoint(None, DS, PLANS, CONF, 0, environ={})


def test_trainer_classes_found_by_name():
    from nnunet_vertkd.trainers import VertKDTeacherTrainer
    assert find_trainer_class("VertKDTeacherTrainer") is VertKDTeacherTrainer
