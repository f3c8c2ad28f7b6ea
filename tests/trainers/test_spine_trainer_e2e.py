"""Spine step trainer end to end with stock nnU-Net: nnUNetv2_train -tr VertKDSpineTrainer_debug on a tiny spine
dataset, then the stock nnUNetv2_predict on the resulting model folder. About 2 minutes on 2 CPU cores."""
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
from nnunet_vertkd.trainers.network import SPINE_FEATURES, VertKDUNet, count_parameters
from helpers.tiny_dataset import plan_and_preprocess, write_tiny_spine_dataset

DATASET_ID = 991
TRAINER = "VertKDSpineTrainer_debug"


@pytest.mark.slow
def test_spine_trainer_and_stock_predictor(nnunet_env, tmp_path):
    env = ensure_ext_trainer_env(dict(nnunet_env))
    raw = write_tiny_spine_dataset(Path(env["nnUNet_raw"]), DATASET_ID)
    plan_and_preprocess(DATASET_ID, env)
    bin_dir = Path(sys.executable).parent
    res = subprocess.run([str(bin_dir / "nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "all", "-tr", TRAINER,
                          "-device", "cpu"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    model = Path(env["nnUNet_results"]) / raw.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    ckpt = torch.load(str(model / "fold_all" / "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["vertkd"]["role"] == "spine" and ckpt["vertkd"]["features"] == list(SPINE_FEATURES)
    assert tuple(ckpt["inference_allowed_mirroring_axes"]) == (2,)  # left-right only
    assert sum(v.numel() for k, v in ckpt["network_weights"].items() if "running" not in k
               and "num_batches" not in k) == count_parameters(VertKDUNet(1, 2, SPINE_FEATURES))
    assert (model / "fold_all" / "validation" / "summary.json").is_file()  # nnU-Net's own validation

    out = tmp_path / "pred"
    res = subprocess.run([str(bin_dir / "nnUNetv2_predict"), "-i", str(raw / "imagesTr"), "-o", str(out), "-d",
                          str(DATASET_ID), "-c", "3d_fullres", "-f", "all", "-tr", TRAINER, "-device", "cpu",
                          "-npp", "1", "-nps", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    pred = sitk.ReadImage(str(out / "tiny000.nii.gz"))
    ref = sitk.ReadImage(str(raw / "labelsTr" / "tiny000.nii.gz"))
    assert pred.GetSize() == ref.GetSize() and pred.GetDirection() == ref.GetDirection()
