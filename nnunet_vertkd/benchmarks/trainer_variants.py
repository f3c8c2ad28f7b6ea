"""Trainer variants (class attributes only) used by ``vertkd_demo`` and ``vertkd_benchmark study``.

Names: ``{base trainer}_{suffix}``, e.g. ``VertKDStudentTrainer_T3_studyCPU``. Students distil from
``VertKDTeacherTrainer_{suffix}`` trained on the same dataset/plans/fold (``teacher_trainer_name``).
The plugin's ``nnUNet_extTrainer`` folder (``vertkd_trainer_dir``) re-exports them, so the stock
``nnUNetv2_train`` and ``vertkd_predict`` find them like every other trainer of the plugin.

Schedules (one epoch = ``num_iterations_per_epoch`` batches of 1 patch):

==========  ===============  ==========================  =========================================
suffix      patch (voxels)   epochs x iterations          meant for
==========  ===============  ==========================  =========================================
studyMini   32^3             2 x 3                        the CI miniature of the study (tests)
demo        SCALES["demo"]   see SCALES                   vertkd_demo (2 CPU cores, ~15 min in all)
studyCPU    SCALES[...]      see SCALES                   vertkd_benchmark study --scale cpu
studyGPU    128^3            see SCALES                   vertkd_benchmark study --scale gpu (H100)
==========  ===============  ==========================  =========================================
"""
import os
import random

import numpy as np
import torch

from nnunet_vertkd.trainers import (
    VertKDSpineTrainer, VertKDStudentTrainer, VertKDStudentTrainer_T3, VertKDStudentTrainer_T5,
    VertKDStudentTrainer_logits, VertKDStudentTrainer_logitsDistMap, VertKDStudentTrainer_scratch,
    VertKDTeacherTrainer, VertKDTeacherTrainer_noDataProcessing)

#: paper id -> base trainer class (issue 3 / METHOD.md Table 2)
STUDY_TRAINERS = {
    "T_B": VertKDTeacherTrainer_noDataProcessing,
    "T_S": VertKDTeacherTrainer,
    "S_S": VertKDStudentTrainer_scratch,
    "S_T3": VertKDStudentTrainer_T3,
    "S_T4": VertKDStudentTrainer,
    "S_T5": VertKDStudentTrainer_T5,
    "S_L": VertKDStudentTrainer_logits,
    "S_LW": VertKDStudentTrainer_logitsDistMap,
}
TEACHER_IDS = ("T_B", "T_S")
#: the teacher every distilled student uses (paper: T_S)
DISTILLATION_TEACHER_ID = "T_S"

_SMALL_FRAGMENTS = {"MIN_START_FRAGMENT_VOXELS": 20, "MIN_CONTINUE_FRAGMENT_VOXELS": 10,
                    "MAX_ITERATIONS_PER_VERTEBRA": 3, "MAX_VERTEBRAE": 8}

#: class attributes per suffix (vertebra trainers); "spine" holds the spine trainer's
SCALES = {
    "studyMini": {"patch_size_voxels": (32, 32, 32), "num_epochs": 2, "num_iterations_per_epoch": 3,
                  "num_val_iterations_per_epoch": 1, "save_every": 1, "run_final_validation": False,
                  "validation_iterative_overrides": _SMALL_FRAGMENTS,
                  "spine": {"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1,
                            "save_every": 1}},
    # demo and studyCPU: data converted at 3 mm, 32^3 patches = a 96 mm field of view (paper: 128 mm at 1 mm)
    "demo": {"patch_size_voxels": (32, 32, 32), "num_epochs": 16, "num_iterations_per_epoch": 25,
             "num_val_iterations_per_epoch": 1, "save_every": 8, "run_final_validation": False,
             "spine": {"num_epochs": 8, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 1,
                       "save_every": 8}},
    "studyCPU": {"patch_size_voxels": (32, 32, 32), "num_epochs": 40, "num_iterations_per_epoch": 25,
                 "num_val_iterations_per_epoch": 1, "save_every": 10, "run_final_validation": False,
                 "spine": {"num_epochs": 8, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 1,
                           "save_every": 8}},
    # studyGPU: an estimate for one H100 in ~30 min (8 trainings in 2 parallel stages); not run yet
    "studyGPU": {"patch_size_voxels": (128, 128, 128), "num_epochs": 8, "num_iterations_per_epoch": 125,
                 "num_val_iterations_per_epoch": 10, "save_every": 5, "run_final_validation": False,
                 "spine": {"num_epochs": 20, "num_iterations_per_epoch": 100, "num_val_iterations_per_epoch": 10,
                           "save_every": 10}},
}


#: environment variable read by every variant: seeds Python, NumPy and torch before nnU-Net's __init__
SEED_ENV = "VERTKD_STUDY_SEED"


class _SeedFromEnv:
    """Seeds random / numpy / torch from $VERTKD_STUDY_SEED (if set) before the trainer is built, so that a
    study seed changes initial weights, sampling and augmentation (single-process data loading)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        seed = os.environ.get(SEED_ENV, "").strip()
        if seed:
            random.seed(int(seed))
            np.random.seed(int(seed))
            torch.manual_seed(int(seed))
        super().__init__(plans, configuration, fold, dataset_json, device)


def trainer_name(paper_id: str, suffix: str) -> str:
    return f"{STUDY_TRAINERS[paper_id].__name__}_{suffix}"


def spine_trainer_name(suffix: str) -> str:
    return f"VertKDSpineTrainer_{suffix}"


def _make_variants():
    made = {}
    for suffix, attrs in SCALES.items():
        vert_attrs = {k: v for k, v in attrs.items() if k != "spine"}
        for paper_id, base in STUDY_TRAINERS.items():
            name = f"{base.__name__}_{suffix}"
            body = dict(vert_attrs)
            if paper_id not in TEACHER_IDS:
                body["teacher_trainer_name"] = f"{STUDY_TRAINERS[DISTILLATION_TEACHER_ID].__name__}_{suffix}"
            body["__doc__"] = f"{paper_id} ({base.__name__}) with the '{suffix}' schedule: {vert_attrs}"
            body["__module__"] = __name__
            made[name] = type(name, (_SeedFromEnv, base), body)
        name = spine_trainer_name(suffix)
        made[name] = type(name, (_SeedFromEnv, VertKDSpineTrainer), {**attrs["spine"], "__module__": __name__,
                                                         "__doc__": f"spine trainer, '{suffix}' schedule"})
    return made


_VARIANTS = _make_variants()
globals().update(_VARIANTS)
__all__ = sorted(_VARIANTS)
