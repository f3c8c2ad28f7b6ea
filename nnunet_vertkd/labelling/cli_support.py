"""``vertkd_predict``'s label options: ``--labels verse|sequential`` and where the label model comes from.

    --labels verse        (default) VerSe labels (1-24, 25 = L6, 28 = T13) from the label model and the decoder
    --labels sequential   the paper's numbering 1..N from the top
    --label-model FOLDER  a VertKDLabelTrainer model folder (nnU-Net layout: plans.json, dataset.json, fold_X/)
    --label-dataset ID    ... or found under $nnUNet_results like -d (with --label-tr / --label-p / --label-c)
    --label-f FOLD ...    folds of the label model (default: every fold with the checkpoint)

Without a label model (none given, none shipped) ``--labels verse`` falls back to sequential labels with a
message, and the record says ``"labels": "sequential"``.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

#: the label model shipped with the package (written by ``python -m nnunet_vertkd.labelling.pretrained``)
SHIPPED_LABEL_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_model")


def add_label_arguments(p) -> None:
    p.add_argument("--labels", default="verse", choices=["verse", "sequential"],
                   help="vertebra labels of the outputs: verse (default; VerSe numbering 1-24, 25 = L6, 28 = T13, "
                        "decoded for the whole scan from the label model) or sequential (1..N from the top, the "
                        "paper's numbering). See docs/labelling.md")
    p.add_argument("--label-model", metavar="MODEL_FOLDER",
                   help="label model folder (VertKDLabelTrainer*); default: --label-dataset, else the shipped one")
    p.add_argument("--label-dataset", metavar="ID", help="dataset of the label model under $nnUNet_results")
    p.add_argument("--label-tr", default="VertKDLabelTrainer", help="label model trainer (default: %(default)s)")
    p.add_argument("--label-p", default="nnUNetPlans", help="label model plans (default: %(default)s)")
    p.add_argument("--label-c", default="3d_fullres", help="label model configuration (default: %(default)s)")
    p.add_argument("--label-f", nargs="+", default=None, metavar="FOLD", help="label model folds (default: all)")


def label_model_folder(args, resolve) -> Optional[str]:
    """The label model folder the options name (``resolve`` = vertkd_predict's resolve_model_folder), the shipped
    one, or None."""
    if args.label_model or args.label_dataset:
        return resolve(args.label_dataset, args.label_tr, args.label_p, args.label_c, args.label_model, "label")
    if os.path.isfile(os.path.join(SHIPPED_LABEL_MODEL, "plans.json")):
        return SHIPPED_LABEL_MODEL
    return None


def make_label_mapping(args, device: str, resolve, use_mirroring: bool = True):
    """None (sequential labels) or an ``AnatomicalLabeller``."""
    if args.labels == "sequential":
        return None
    folder = label_model_folder(args, resolve)
    if folder is None:
        print("vertkd_predict: no label model (--label-model / --label-dataset, none shipped): writing sequential "
              "labels 1..N from the top", file=sys.stderr)
        return None
    from nnunet_vertkd.labelling.labeller import AnatomicalLabeller, LabelModelError
    folds = None if not args.label_f else [f if f == "all" else int(f) for f in args.label_f]
    try:
        return AnatomicalLabeller(folder, folds, device=device, mirroring=use_mirroring)
    except LabelModelError as e:
        from nnunet_vertkd.command_line import InputError
        raise InputError(str(e)) from None


def shipped_label_mapping(device: str = "cpu", use_mirroring: bool = True):
    """The shipped label model as a label mapping, or None when the package has none."""
    if not os.path.isfile(os.path.join(SHIPPED_LABEL_MODEL, "plans.json")):
        return None
    from nnunet_vertkd.labelling.labeller import AnatomicalLabeller
    return AnatomicalLabeller(SHIPPED_LABEL_MODEL, device=device, mirroring=use_mirroring)


def labels_line(info: dict) -> str:
    """'T10 0.98, T11 0.97, ... [flags]' from a record's ``labelling`` entry."""
    parts = [f"{v['name']} {v['probability']:.2f}" for v in info.get("vertebrae", [])]
    flags = f" [{', '.join(info['flags'])}]" if info.get("flags") else ""
    return ", ".join(parts) + flags
