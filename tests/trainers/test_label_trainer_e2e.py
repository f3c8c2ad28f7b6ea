"""The label evidence model end to end: stock nnUNetv2_train -tr VertKDLabelTrainer_debug on a tiny vertebra
dataset, then AnatomicalLabeller (the predictor's label mapping) on one of its scans. About 1-2 minutes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers.tiny_dataset import plan_and_preprocess, write_tiny_vertebra_dataset
from nnunet_vertkd.evaluation.label_shifts import chain_position
from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
from nnunet_vertkd.labels import VERSE_LABELS_CRANIOCAUDAL

DATASET_ID = 993
TRAINER = "VertKDLabelTrainer_debug"


@pytest.mark.slow
def test_label_trainer_and_labeller(nnunet_env):
    env = ensure_ext_trainer_env(dict(nnunet_env))
    raw = write_tiny_vertebra_dataset(Path(env["nnUNet_raw"]), DATASET_ID, spacing_mm=3.0)
    plan_and_preprocess(DATASET_ID, env)
    env["nnUNet_n_proc_DA"] = "0"
    res = subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "all",
                          "-tr", TRAINER, "-device", "cpu"], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    model = Path(env["nnUNet_results"]) / raw.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    ckpt = torch.load(str(model / "fold_all" / "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    meta = ckpt["vertkd"]
    assert meta["role"] == "label" and meta["patch_size"] == [48, 48, 48]
    assert meta["classes_verse"] == VERSE_LABELS_CRANIOCAUDAL and len(meta["label_prior"]) == 26
    report = json.loads((model / "fold_all" / "validation_labels.json").read_text())
    assert report["n_vertebrae"] == 25 and report["n_scans"] == 5

    from nnunet_vertkd.labelling.labeller import AnatomicalLabeller
    labeller = AnatomicalLabeller(str(model), device="cpu")
    ct = sitk.ReadImage(str(raw / "imagesTr" / "tiny002_0000.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / "tiny002.nii.gz")))
    seq = np.zeros_like(seg, dtype=np.int16)
    for i, lab in enumerate(sorted(int(v) for v in np.unique(seg) if v)):
        seq[seg == lab] = i + 1
    record = {}
    out, name = labeller(seq, record, ct)
    assert name == "verse" and out.shape == seq.shape
    decoded = [v["label"] for v in record["labelling"]["vertebrae"]]
    assert len(decoded) == 5 and [v["sequential_label"] for v in record["labelling"]["vertebrae"]] == [1, 2, 3, 4, 5]
    chain = [chain_position(v, with_t13=28 in decoded) for v in decoded]
    assert np.all(np.diff(chain) == 1)  # consecutive along the chain
    for v in record["labelling"]["vertebrae"]:
        assert 0 <= v["probability"] <= 1 and v["runner_up"] != v["label"]
    for seq_label, verse in zip(range(1, 6), decoded):
        assert np.array_equal(out == verse, seq == seq_label)
