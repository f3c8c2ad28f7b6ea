"""Finding and loading the teacher of a distillation run.

Order of precedence:
1. ``$VERTKD_TEACHER`` (``TEACHER_ENV``): a checkpoint file, a fold folder holding checkpoint_final.pth /
   checkpoint_best.pth, or a model folder ({Trainer}__{plans}__{configuration}) holding fold_{F}/.
2. The plans key ``"vertkd_teacher"`` (``PLANS_KEY``, top level of the plans file given with -p), same forms.
3. The default: the model trained by ``teacher_trainer_name`` (class attribute of the student; default
   ``VertKDTeacherTrainer``) on the same dataset, plans and configuration, same fold:
   $nnUNet_results/{dataset}/{teacher_trainer_name}__{plans}__{configuration}/fold_{F}/checkpoint_final.pth,
   else checkpoint_best.pth in the same folder.
A missing teacher raises ``TeacherNotFoundError`` naming every path looked at and how to fix it.

The teacher network is rebuilt from its own checkpoint: the trainer class named in it
(``ext_trainers_path.find_trainer_class``: the plugin's classes, then nnU-Net's lookup incl. ``nnUNet_extTrainer``),
its plans and configuration (``init_args``), with deep supervision off; it is frozen (requires_grad False) and in
eval mode.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

from nnunet_vertkd.ext_trainers_path import find_trainer_class  # noqa: F401  (re-exported)

from nnunet_vertkd.model_contract import CHECKPOINT_KEY, PLANS_KEY

TEACHER_ENV = "VERTKD_TEACHER"
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
DEFAULT_TEACHER_TRAINER = "VertKDTeacherTrainer"


class TeacherNotFoundError(FileNotFoundError):
    pass


def default_teacher_fold_folder(nnunet_results: str, dataset_name: str, teacher_trainer_name: str,
                                plans_name: str, configuration: str, fold) -> Path:
    return (Path(nnunet_results) / dataset_name / f"{teacher_trainer_name}__{plans_name}__{configuration}"
            / f"fold_{fold}")


def checkpoint_in(folder: Path) -> Optional[Path]:
    """checkpoint_final.pth in ``folder``, else checkpoint_best.pth, else None."""
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _candidates(folder: Path, fold) -> List[Path]:
    return [folder / name for name in CHECKPOINT_NAMES] + [folder / f"fold_{fold}" / n for n in CHECKPOINT_NAMES]


def find_teacher_checkpoint(nnunet_results: Optional[str], dataset_name: str, plans_name: str, configuration: str,
                            fold, teacher_trainer_name: str = DEFAULT_TEACHER_TRAINER,
                            environ: Optional[dict] = None, plans_teacher: Optional[str] = None) -> Path:
    """Path of the teacher checkpoint (see the module docstring). ``plans_teacher``: the plans' "vertkd_teacher"
    value, if any. Raises ``TeacherNotFoundError``."""
    environ = os.environ if environ is None else environ
    train_cmd = (f"nnUNetv2_train {dataset_name} {configuration} {fold} -tr {teacher_trainer_name} "
                 f"-p {plans_name}")
    override = environ.get(TEACHER_ENV, "").strip()
    source = TEACHER_ENV
    if not override and plans_teacher:
        override, source = str(plans_teacher).strip(), f"plans key '{PLANS_KEY}'"
    if override:
        p = Path(override).expanduser()
        if p.is_file():
            return p
        if p.is_dir():
            for c in _candidates(p, fold):
                if c.is_file():
                    return c
        looked = [str(p)] + ([str(c) for c in _candidates(p, fold)] if p.is_dir() else [])
        raise TeacherNotFoundError(
            f"{source}={override} does not point to a teacher checkpoint. Looked for: {', '.join(looked)}. "
            f"Set {TEACHER_ENV} (or the plans key '{PLANS_KEY}') to a checkpoint file (e.g. .../fold_{fold}/checkpoint_final.pth), a fold folder or a "
            f"model folder containing fold_{fold}/, or unset it to use the default teacher ({train_cmd}).")
    if not nnunet_results:
        raise TeacherNotFoundError(
            f"nnUNet_results is not set, so the default teacher ({teacher_trainer_name}) cannot be found. Set "
            f"nnUNet_results or point {TEACHER_ENV} to the teacher's checkpoint file.")
    folder = default_teacher_fold_folder(nnunet_results, dataset_name, teacher_trainer_name, plans_name,
                                         configuration, fold)
    found = checkpoint_in(folder)
    if found is not None:
        return found
    raise TeacherNotFoundError(
        f"No teacher found for distillation: looked for {folder / CHECKPOINT_NAMES[0]} (and {CHECKPOINT_NAMES[1]}). "
        f"Train the teacher first with\n    {train_cmd}\nor point {TEACHER_ENV} to an existing teacher "
        f"checkpoint (file, fold folder or model folder), e.g.\n    export {TEACHER_ENV}=/path/to/"
        f"{teacher_trainer_name}__{plans_name}__{configuration}/fold_{fold}/checkpoint_final.pth")


def load_teacher_network(checkpoint_path, device: torch.device) -> Tuple[nn.Module, dict]:
    """(frozen eval-mode network on ``device``, info dict) rebuilt from the teacher's own checkpoint."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    checkpoint = torch.load(str(checkpoint_path), map_location="cpu", weights_only=False)
    trainer_name = checkpoint["trainer_name"]
    init_args = checkpoint["init_args"]
    cls = find_trainer_class(trainer_name)
    plans_manager = PlansManager(init_args["plans"])
    configuration_manager = plans_manager.get_configuration(init_args["configuration"])
    dataset_json = init_args["dataset_json"]
    num_inputs = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    num_heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = cls.build_network_architecture(plans_manager, configuration_manager, num_inputs, num_heads, False)
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in checkpoint["network_weights"].items()}
    network.load_state_dict(state)
    network.to(device)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    info = {"checkpoint": str(checkpoint_path), "trainer_name": trainer_name,
            "epoch": int(checkpoint.get("current_epoch", -1)), CHECKPOINT_KEY: checkpoint.get(CHECKPOINT_KEY)}
    return network, info
