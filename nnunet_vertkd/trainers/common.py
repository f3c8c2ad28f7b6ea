"""Pieces shared by the vertebra and spine trainers: orientation of the preprocessed arrays, class-attribute
settings, and checkpoints carrying the plugin's 'vertkd' entry (``nnunet_vertkd.model_contract``)."""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np
import torch
from torch._dynamo import OptimizedModule

from nnunet_vertkd.model_contract import CHECKPOINT_KEY
from nnunet_vertkd.orientation import left_right_axis, orientation_from_dataset_json, superior_axis

#: nnU-Net sets these as instance attributes in nnUNetTrainer.__init__; our trainers declare them as class
#: attributes and re-apply them after nnU-Net's __init__ (so a subclass changes a setting with one line).
NNUNET_INSTANCE_SETTINGS = ("initial_lr", "weight_decay", "num_epochs", "num_iterations_per_epoch",
                            "num_val_iterations_per_epoch", "enable_deep_supervision", "save_every",
                            "oversample_foreground_percent")


def apply_class_settings(trainer, names: Iterable[str] = NNUNET_INSTANCE_SETTINGS) -> None:
    """Copy class attributes that nnU-Net's __init__ shadowed with instance attributes back onto the instance."""
    for name in names:
        for klass in type(trainer).__mro__:
            if klass.__name__ == "nnUNetTrainer":
                break
            if name in vars(klass):
                setattr(trainer, name, vars(klass)[name])
                break


def orientation_axes(dataset_json: dict, plans_manager) -> Tuple[int, bool, int]:
    """(superior_axis, superior_at_low_index, left_right_axis) of nnU-Net's preprocessed arrays, from the
    dataset's orientation (dataset.json 'vertkd.orientation') and the plans' transpose_forward."""
    orientation = orientation_from_dataset_json(dataset_json)
    transpose_forward = plans_manager.transpose_forward
    si_axis, sup_low = superior_axis(orientation, transpose_forward)
    return int(si_axis), bool(sup_low), int(left_right_axis(orientation, transpose_forward))


def unwrap_network(trainer):
    mod = trainer.network.module if trainer.is_ddp else trainer.network
    if isinstance(mod, OptimizedModule):
        mod = mod._orig_mod
    return mod


def save_checkpoint_with_vertkd(trainer, filename: str, vertkd_entry: dict, extra: dict = None) -> None:
    """nnU-Net's checkpoint (same keys as nnUNetTrainer.save_checkpoint) plus 'vertkd' (plus ``extra`` keys, e.g.
    the multi-teacher student's training-only feature adapters)."""
    if trainer.local_rank != 0:
        return
    if trainer.disable_checkpointing:
        trainer.print_to_log_file("No checkpoint written, checkpointing is disabled")
        return
    checkpoint = {
        "network_weights": unwrap_network(trainer).state_dict(),
        "optimizer_state": trainer.optimizer.state_dict(),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": trainer.__class__.__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
        CHECKPOINT_KEY: vertkd_entry,
    }
    if extra:
        checkpoint.update(extra)
    torch.save(checkpoint, filename)


def to_builtin(x):
    """JSON/pickle-friendly copy (numpy scalars/arrays -> python)."""
    if isinstance(x, dict):
        return {k: to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_builtin(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x
