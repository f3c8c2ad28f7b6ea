"""The label model shipped inside the package (``nnunet_vertkd/labelling/pretrained_model``).

An ordinary nnU-Net model folder (``dataset.json``, ``plans.json``, ``fold_F/checkpoint_final.pth``) whose
checkpoint holds only what ``AnatomicalLabeller`` reads (network weights, trainer name, configuration, the
``vertkd`` entry), plus ``model_card.json``. ``vertkd_predict`` uses it when no label model is given.

    python -m nnunet_vertkd.labelling.pretrained --model MODEL_FOLDER --fold 0 [--note TEXT]

writes (replaces) the shipped folder from a trained VertKDLabelTrainer model folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import List, Optional

import torch

from nnunet_vertkd.labelling.cli_support import SHIPPED_LABEL_MODEL
from nnunet_vertkd.model_contract import CHECKPOINT_KEY

KEPT_KEYS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes", CHECKPOINT_KEY,
             "current_epoch")


def export(model_folder: str, fold: str, out: str = SHIPPED_LABEL_MODEL, note: str = "") -> str:
    src = os.path.join(model_folder, f"fold_{fold}", "checkpoint_final.pth")
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if (ckpt.get(CHECKPOINT_KEY) or {}).get("role") != "label":
        raise SystemExit(f"{src} is not a label model")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, f"fold_{fold}"))
    for name in ("plans.json", "dataset.json"):
        shutil.copy(os.path.join(model_folder, name), os.path.join(tmp, name))
    slim = {k: ckpt[k] for k in KEPT_KEYS if k in ckpt}
    torch.save(slim, os.path.join(tmp, f"fold_{fold}", "checkpoint_final.pth"))
    card = {"trainer": ckpt.get("trainer_name"), "fold": fold, "epochs": ckpt.get("current_epoch"),
            "source": os.path.basename(os.path.normpath(model_folder)), "note": note}
    val = os.path.join(model_folder, f"fold_{fold}", "validation_labels.json")
    if os.path.isfile(val):
        with open(val) as f:
            v = json.load(f)
        card["validation"] = {k: v[k] for k in ("n_vertebrae", "n_scans", "classifier_accuracy", "decoded_accuracy",
                                                 "n_scans_all_right")}
    with open(os.path.join(tmp, "model_card.json"), "w") as f:
        json.dump(card, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnunet_vertkd.labelling.pretrained", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="trained VertKDLabelTrainer model folder")
    p.add_argument("--fold", default="0")
    p.add_argument("--out", default=SHIPPED_LABEL_MODEL)
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    print(export(args.model, args.fold, args.out, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
