"""nnU-Net's default plans for the benchmark scan: a temporary one-case dataset planned by nnU-Net's own
``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment`` (ExperimentPlanner, 3d_fullres)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from nnunet_vertkd.benchmarks.dataset_json import write_dataset_json
from nnunet_vertkd.benchmarks.pipeline import console_script

PLANNING_DATASET_ID = 990
PLANNING_DATASET_NAME = f"Dataset{PLANNING_DATASET_ID}_VertKDBenchmark"
CONFIGURATION = "3d_fullres"
#: without a reference mask, voxels above this stand in for the foreground (only the fingerprint's intensities)
BONE_THRESHOLD_HU = 150
OUTPUT_TAIL_CHARS = 3000


def nnunet_env(workdir: Path) -> dict:
    """The environment of a private nnU-Net installation under ``workdir`` (raw, preprocessed, results)."""
    from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        p = workdir / name
        p.mkdir(parents=True, exist_ok=True)
        env[name] = str(p)
    env["nnUNet_compile"] = "false"
    env.pop("nnUNet_n_proc_DA", None)  # 0 crashes the planner
    return ensure_ext_trainer_env(env)


def _write_planning_dataset(prepared: dict, raw: Path) -> None:
    import numpy as np
    import SimpleITK as sitk
    from nnunet_vertkd.labels import nnunet_dataset_labels
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    shutil.copy(prepared["image"], raw / "imagesTr" / "bench_0000.nii.gz")
    if prepared.get("mask"):
        shutil.copy(prepared["mask"], raw / "labelsTr" / "bench.nii.gz")
    else:
        img = sitk.ReadImage(prepared["image"])
        lab = sitk.GetImageFromArray((sitk.GetArrayFromImage(img) > BONE_THRESHOLD_HU).astype(np.uint8))
        lab.CopyInformation(img)
        sitk.WriteImage(lab, str(raw / "labelsTr" / "bench.nii.gz"))
    write_dataset_json(raw, nnunet_dataset_labels(), "vertebrae", spacing_mm=prepared["spacing_mm"])


def make_default_plans(prepared: dict, workdir: Path, log=print) -> Path:
    """nnU-Net's default plans (ExperimentPlanner, 3d_fullres) for a one-case dataset made of the prepared scan
    (``scan_preparation.prepare_scan``), by nnU-Net's own console scripts. Returns the plans file."""
    env = nnunet_env(workdir)
    _write_planning_dataset(prepared, Path(env["nnUNet_raw"]) / PLANNING_DATASET_NAME)
    for cmd in (["nnUNetv2_extract_fingerprint", "-d", str(PLANNING_DATASET_ID), "-np", "1"],
                ["nnUNetv2_plan_experiment", "-d", str(PLANNING_DATASET_ID)]):
        log("$ " + " ".join(cmd))
        cmd = [console_script(cmd[0])] + cmd[1:]
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stdout[-OUTPUT_TAIL_CHARS:]}")
    plans = Path(env["nnUNet_preprocessed"]) / PLANNING_DATASET_NAME / "nnUNetPlans.json"
    if not plans.is_file():
        raise RuntimeError(f"nnU-Net planning wrote no {plans}")
    return plans


def load_plans(plans_file: str):
    """(PlansManager, ConfigurationManager of 3d_fullres) of a plans file."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm = PlansManager(load_json(plans_file))
    return pm, pm.get_configuration(CONFIGURATION)


def plan_summary(plans_file: str) -> dict:
    """Patch size, spacing and architecture of the plans' 3d_fullres configuration (for the report)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    cfg = load_json(plans_file)["configurations"][CONFIGURATION]
    arch = cfg["architecture"]
    return {"patch_size": cfg.get("patch_size"), "spacing": cfg.get("spacing"),
            "architecture": arch["network_class_name"],
            "features_per_stage": arch["arch_kwargs"].get("features_per_stage"),
            "n_stages": arch["arch_kwargs"].get("n_stages")}
