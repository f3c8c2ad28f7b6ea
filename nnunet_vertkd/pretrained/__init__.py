"""The reference model shipped inside the package: a distilled student and a spine model (docs/pretrained.md).

Layout: two ordinary nnU-Net model folders (``dataset.json``, ``plans.json``, ``fold_all/checkpoint_final.pth``)
whose checkpoints hold only what prediction needs (network weights, trainer name, configuration, mirroring axes
and the plugin's ``vertkd`` entry; no optimizer state, no training log), plus ``model_card.json`` (what was
trained, on which data, for how long, the command that reproduces it):

    nnunet_vertkd/pretrained/student/   VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3 (8-16-32-64, 2 mm, 64^3 patches)
    nnunet_vertkd/pretrained/spine/     VertKDSpineTrainer_cpu4mm   (8-16-32-64, 4 mm)

``vertkd_predict -i IN -o OUT`` without model arguments uses them; from Python::

    from nnunet_vertkd.pretrained import pretrained_predictor
    predictor = pretrained_predictor(device="cpu")
    predictor.predict_from_files("scans/", "out/")

``python -m nnunet_vertkd.pretrained export --vertebra MODEL_FOLDER --spine MODEL_FOLDER`` writes (replaces) the
shipped folders from trained nnU-Net model folders.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import List, Optional

from nnunet_vertkd.model_contract import CHECKPOINT_KEY

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
VERTEBRA_FOLDER = os.path.join(PRETRAINED_DIR, "student")
SPINE_FOLDER = os.path.join(PRETRAINED_DIR, "spine")
FOLD = "all"
CHECKPOINT = "checkpoint_final.pth"
#: checkpoint keys kept in the shipped files (what load_vertebra_model and nnUNetPredictor read)
KEPT_KEYS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes", CHECKPOINT_KEY,
             "current_epoch")


class PretrainedModelMissing(FileNotFoundError):
    """The shipped model files are not in the installed package."""


def _checkpoint(folder: str) -> str:
    return os.path.join(folder, f"fold_{FOLD}", CHECKPOINT)


def available() -> bool:
    return all(os.path.isfile(os.path.join(f, n)) for f in (VERTEBRA_FOLDER, SPINE_FOLDER)
               for n in ("dataset.json", "plans.json", os.path.join(f"fold_{FOLD}", CHECKPOINT)))


def model_folders() -> tuple:
    """(vertebra model folder, spine model folder) of the shipped pair; raises PretrainedModelMissing."""
    if not available():
        raise PretrainedModelMissing(
            f"the shipped reference model is missing under {PRETRAINED_DIR} (student/ and spine/ with dataset.json, "
            f"plans.json and fold_{FOLD}/{CHECKPOINT}); reinstall the package or give a model with -d/-m")
    return VERTEBRA_FOLDER, SPINE_FOLDER


def model_card(folder: str = VERTEBRA_FOLDER) -> dict:
    path = os.path.join(folder, "model_card.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def describe() -> str:
    """One line naming the shipped pair (printed by vertkd_predict and vertkd_demo)."""
    student, spine = model_card(VERTEBRA_FOLDER), model_card(SPINE_FOLDER)
    return (f"the shipped reference model: student {student.get('trainer', '?')} + spine model "
            f"{spine.get('trainer', '?')} (nnunet_vertkd/pretrained, docs/pretrained.md)")


def pretrained_predictor(device="cpu", **kwargs):
    """A ``VertKDPredictor`` initialised with the shipped student and spine model. ``kwargs`` go to
    ``VertKDPredictor`` (use_mirroring, num_threads, settings_overrides, ...)."""
    import torch
    from nnunet_vertkd.inference.predictor import VertKDPredictor
    vertebra, spine = model_folders()
    predictor = VertKDPredictor(device=torch.device(device) if isinstance(device, str) else device, **kwargs)
    predictor.initialize_from_trained_model_folder(vertebra, (FOLD,), CHECKPOINT, spine, (FOLD,), CHECKPOINT)
    return predictor


def training_data(raw_dataset_folder: str) -> dict:
    """What a fold-'all' model saw: every case of ``imagesTr`` with its vertebra labels (nnU-Net numbering),
    and the held-out test cases of ``imagesTs``."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_vertkd.image_io import case_name
    cases = {}
    labels_dir = os.path.join(raw_dataset_folder, "labelsTr")
    for name in sorted(os.listdir(os.path.join(raw_dataset_folder, "imagesTr"))):
        case = case_name(name)[0]
        lab = os.path.join(labels_dir, f"{case}.nii.gz")
        if os.path.isfile(lab):
            cases[case] = " ".join(str(int(v)) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(lab))) if v > 0)
    test = sorted(case_name(n)[0] for n in os.listdir(os.path.join(raw_dataset_folder, "imagesTs"))
                  if n.endswith("_0000.nii.gz")) if os.path.isdir(os.path.join(raw_dataset_folder, "imagesTs")) else []
    out = {"training_cases": cases, "n_training_cases": len(cases)}
    if any(len(v.split()) > 1 or v not in ("", "1") for v in cases.values()):  # a vertebra dataset
        out["n_training_vertebrae"] = int(sum(len(v.split()) for v in cases.values()))
    return {**out,
            "real_training_cases": sorted(c for c in cases if c.startswith("sub-verse")),
            "held_out_test_cases": test}


def training_run(model_folder: str, fold: str = FOLD) -> dict:
    """Epochs, iterations and wall time of a training, from its checkpoint and nnU-Net training log."""
    import glob
    from datetime import datetime
    info = {}
    logs = sorted(glob.glob(os.path.join(model_folder, f"fold_{fold}", "training_log_*.txt")))
    stamps = []
    for log in logs:
        with open(log, encoding="utf-8") as f:
            for line in f:
                try:
                    stamps.append(datetime.strptime(line[:26], "%Y-%m-%d %H:%M:%S.%f"))
                except ValueError:
                    continue
    if stamps:
        info["training_started"] = min(stamps).isoformat(timespec="seconds")
        info["training_wall_time_min"] = round((max(stamps) - min(stamps)).total_seconds() / 60.0, 1)
    return info


def portable_paths(value):
    """``value`` with every absolute path in it (nested dicts / lists) made machine-independent: the part from the
    nnU-Net dataset folder (``DatasetNNN_Name/...``) on, as ``$nnUNet_results/DatasetNNN_Name/...``, else the
    file name. Shipped files must not carry the paths of the machine that trained them."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_paths(v) for v in value)
    if isinstance(value, str) and os.path.isabs(value):
        parts = value.replace("\\", "/").split("/")
        for i, part in enumerate(parts):
            if part.startswith("Dataset") and "_" in part:
                return "/".join(["$nnUNet_results"] + parts[i:])
        return parts[-1]
    return value


def export_model(model_folder: str, dest: str, fold: str = FOLD, checkpoint_name: str = CHECKPOINT,
                 card: Optional[dict] = None, raw_dataset_folder: Optional[str] = None) -> str:
    """Copy a trained nnU-Net model folder into ``dest`` with a slim checkpoint (``KEPT_KEYS`` only, as
    ``fold_all/checkpoint_final.pth``) and ``model_card.json`` (``card`` plus what the checkpoint, the training
    log and, when given, the raw dataset tell: cases and vertebrae seen, epochs, patches, wall time)."""
    import torch
    src = os.path.join(model_folder, f"fold_{fold}", checkpoint_name)
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    slim = {k: portable_paths(ckpt[k]) for k in KEPT_KEYS if k in ckpt and k != "network_weights"}
    slim["network_weights"] = {k.replace("_orig_mod.", "", 1): v.detach().clone().contiguous()
                               for k, v in ckpt["network_weights"].items()}
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.join(dest, f"fold_{FOLD}"))
    for name in ("dataset.json", "plans.json"):
        shutil.copy(os.path.join(model_folder, name), os.path.join(dest, name))
    torch.save(slim, _checkpoint(dest))
    info = dict(card or {})
    info.setdefault("trainer", ckpt.get("trainer_name"))
    info["epochs_trained"] = ckpt.get("current_epoch")
    try:
        from nnunet_vertkd.inference.model_loading import find_trainer_class
        trainer_class = find_trainer_class(ckpt["trainer_name"])
        info["iterations_per_epoch"] = int(trainer_class.num_iterations_per_epoch)
        info["training_patches_seen"] = int(trainer_class.num_iterations_per_epoch) * int(ckpt.get("current_epoch") or 0) \
            * int(getattr(trainer_class, "batch_size", 1) or 1)
        info["patch_size_voxels"] = list(getattr(trainer_class, "patch_size_voxels", None) or []) or None
    except Exception:  # an unknown trainer: the card just has less
        pass
    info.update(training_run(model_folder, fold))
    if raw_dataset_folder:
        info.update(training_data(raw_dataset_folder))
    info["configuration"] = (ckpt.get("init_args") or {}).get("configuration")
    info["parameters"] = int(sum(v.numel() for v in slim["network_weights"].values()))
    info[CHECKPOINT_KEY] = slim.get(CHECKPOINT_KEY)
    info = portable_paths(info)
    with open(os.path.join(dest, "model_card.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, default=str)
    return dest


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnunet_vertkd.pretrained",
                                description="Write the shipped reference model from trained nnU-Net model folders.")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="slim checkpoints + model cards into nnunet_vertkd/pretrained")
    e.add_argument("--vertebra", required=True, help="vertebra (student) model folder (…/Trainer__plans__config)")
    e.add_argument("--spine", required=True, help="spine model folder")
    e.add_argument("--vertebra-raw", help="raw nnU-Net dataset folder of the vertebra model (cases for the card)")
    e.add_argument("--spine-raw", help="raw nnU-Net dataset folder of the spine model")
    e.add_argument("--card", help="JSON file with extra model-card fields (data seen, command, timings)")
    e.add_argument("--out", default=PRETRAINED_DIR, help="destination (default: the package's pretrained folder)")
    args = p.parse_args(argv)
    card = {}
    if args.card:
        with open(args.card, encoding="utf-8") as f:
            card = json.load(f)
    for src, name, raw in ((args.vertebra, "student", args.vertebra_raw), (args.spine, "spine", args.spine_raw)):
        dest = export_model(src, os.path.join(args.out, name), card=card.get(name, {}), raw_dataset_folder=raw)
        size = os.path.getsize(_checkpoint(dest)) / 1e6
        print(f"{name}: {src} -> {dest} ({size:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
