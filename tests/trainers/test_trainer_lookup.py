"""Stock nnU-Net commands find the plugin's trainers through the one line the README gives."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.ext_trainers_path import EXT_TRAINER_DIR, ensure_ext_trainer_env
from nnunet_vertkd.model_contract import DATASET_JSON_KEY
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION

BIN = Path(sys.executable).parent
#: the plugin's shortest trainer on nnU-Net's own data pipeline (works on any 2-class dataset)
TRAINER = "VertKDSpineTrainer_studyMini"


def _tool(name):
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def test_trainer_dir_command_prints_ext_folder():
    out = subprocess.run([_tool("vertkd_trainer_dir")], capture_output=True, text=True, check=True).stdout.strip()
    assert out == EXT_TRAINER_DIR
    # the folder only re-exports: no trainer class is defined there
    modules = [p for p in Path(out).glob("*.py")]
    assert modules, "ext trainer folder holds no module"
    for m in modules:
        assert "class " not in m.read_text()


def test_ensure_env_keeps_user_paths():
    env = {"nnUNet_extTrainer": "/some/user/dir"}
    ensure_ext_trainer_env(env)
    parts = env["nnUNet_extTrainer"].split(os.pathsep)
    assert parts[0] == "/some/user/dir" and parts[1] == EXT_TRAINER_DIR
    ensure_ext_trainer_env(env)  # idempotent
    assert env["nnUNet_extTrainer"].split(os.pathsep).count(EXT_TRAINER_DIR) == 1


def test_lookup_without_env_fails_and_with_env_succeeds():
    """nnU-Net's own lookup function, in a fresh interpreter, with and without the README's line."""
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
            "c = f('VertKDSpineTrainer'); print('FOUND', c.__module__)")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "Could not find requested nnunet trainer" in res.stdout + res.stderr
    env["nnUNet_extTrainer"] = EXT_TRAINER_DIR
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "FOUND nnunet_vertkd.trainers" in res.stdout
    # the demo/study schedules are found through the same single folder
    res = subprocess.run([sys.executable, "-c", code.replace("VertKDSpineTrainer", "VertKDStudentTrainer_demo")],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "FOUND nnunet_vertkd.trainers.benchmarking" in res.stdout


def test_one_trainer_class_lookup_for_teachers_and_inference():
    """``find_trainer_class`` is defined once (ext_trainers_path) and used by teacher discovery and model loading:
    the plugin's classes directly, anything else through nnU-Net's lookup."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_vertkd import ext_trainers_path
    from nnunet_vertkd.inference import model_loading
    from nnunet_vertkd.trainers import VertKDSpineTrainer_demo, VertKDStudentTrainer, teacher_discovery
    find = ext_trainers_path.find_trainer_class
    assert model_loading.find_trainer_class is find and teacher_discovery.find_trainer_class is find
    assert find("VertKDStudentTrainer") is VertKDStudentTrainer
    assert find("VertKDSpineTrainer_demo") is VertKDSpineTrainer_demo
    assert find("nnUNetTrainer") is nnUNetTrainer
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
        find("NoSuchTrainer")
    with pytest.raises(RuntimeError):
        find("STUDY_TRAINERS")  # a name in the trainers package that is not a class


def _write_tiny_dataset(raw: Path, dataset_id=990, n_cases=2):
    folder = raw / f"Dataset{dataset_id:03d}_Lookup"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        seg = np.zeros((24, 24, 24), np.uint8)
        seg[6:18, 8:16, 8:16] = 1
        ct = (rng.normal(0, 30, seg.shape) + 400.0 * seg - 200).astype(np.float32)
        for arr, name in ((ct, f"imagesTr/case{i}_0000.nii.gz"), (seg, f"labelsTr/case{i}.nii.gz")):
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(folder / name))
    json.dump({"channel_names": {"0": "CT"}, "labels": {"background": 0, "bone": 1},
               "numTraining": n_cases, "file_ending": ".nii.gz",
               DATASET_JSON_KEY: {"orientation": CANONICAL_ORIENTATION}}, open(folder / "dataset.json", "w"))
    return folder


@pytest.mark.slow
def test_stock_nnunet_train_and_predict_find_plugin_trainer(nnunet_env, tmp_path):
    """The real nnUNetv2_train / nnUNetv2_predict console scripts, run as a user would, with the plugin's shortest
    stock-pipeline trainer (the spine trainer's 'studyMini' schedule: 1 epoch x 2 iterations)."""
    env = dict(nnunet_env)
    env.pop("nnUNet_extTrainer", None)
    env["nnUNet_extTrainer"] = subprocess.run([_tool("vertkd_trainer_dir")], capture_output=True, text=True,
                                              check=True).stdout.strip()
    raw = Path(env["nnUNet_raw"])
    folder = _write_tiny_dataset(raw)
    subprocess.run([_tool("nnUNetv2_plan_and_preprocess"), "-d", "990", "-c", "3d_fullres", "-np", "1",
                    "--verify_dataset_integrity"], env=env, check=True, capture_output=True)
    env["nnUNet_n_proc_DA"] = "0"
    res = subprocess.run([_tool("nnUNetv2_train"), "990", "3d_fullres", "all", "-tr", TRAINER,
                          "-device", "cpu"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    model = Path(env["nnUNet_results"]) / folder.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    assert (model / "fold_all" / "checkpoint_final.pth").is_file()
    out = tmp_path / "pred"
    res = subprocess.run([_tool("nnUNetv2_predict"), "-i", str(folder / "imagesTr"), "-o", str(out), "-d", "990",
                          "-c", "3d_fullres", "-f", "all", "-tr", TRAINER, "-device", "cpu",
                          "--disable_tta", "-npp", "1", "-nps", "1"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]
