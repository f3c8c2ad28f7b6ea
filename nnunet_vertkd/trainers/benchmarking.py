"""Benchmark trainer variants: the schedules of ``vertkd_demo --train`` and ``vertkd_benchmark study``.

Like nnU-Net's ``variants/benchmarking``: every class is written out here, so ``git grep`` finds each ``-tr`` name,
and each schedule is defined once, as a mixin of class attributes:

==========  ==========================================  ===========================================
suffix      schedule (vertebra trainers; spine below)   meant for
==========  ==========================================  ===========================================
studyMini   ``_DebugSchedule`` (32^3, 2 x 3), no final   the CI miniatures of the study and the demo
            validation
demo        32^3 (data at 3 mm), 16 x 25                ``vertkd_demo --train`` (2 CPU cores)
studyCPU    32^3 (data at 3 mm), 40 x 25                ``vertkd_benchmark study --scale cpu``
studyGPU    128^3 (data at 1 mm), 8 x 125               ``vertkd_benchmark study --scale gpu`` (an estimate)
==========  ==========================================  ===========================================

Names: ``{paper trainer}_{suffix}`` (e.g. ``VertKDStudentTrainer_T3_studyCPU``) and ``VertKDSpineTrainer_{suffix}``.
Students distil from ``VertKDTeacherTrainer_{suffix}`` (T_S) of the same dataset/plans/fold. All variants switch
off the trainers' iterative final validation (the study and the demo evaluate with ``vertkd_predict`` +
``vertkd_evaluate``) and seed Python/NumPy/torch from ``$VERTKD_STUDY_SEED`` (or ``$VERTKD_SEED``; not seeded when
neither is set) before nnU-Net builds the trainer (``trainers/seeding.py``).
``STUDY_TRAINERS`` maps the paper's experiment ids (Table 2) to the base classes.
"""
from nnunet_vertkd.trainers.seeding import STUDY_SEED_ENV, SeededTrainerMixin
from nnunet_vertkd.trainers.spine import VertKDSpineTrainer
from nnunet_vertkd.trainers.student import (
    VertKDStudentTrainer, VertKDStudentTrainer_T3, VertKDStudentTrainer_T5, VertKDStudentTrainer_logits,
    VertKDStudentTrainer_logitsDistMap, VertKDStudentTrainer_scratch)
from nnunet_vertkd.trainers.teacher import VertKDTeacherTrainer, VertKDTeacherTrainer_noDataProcessing
from nnunet_vertkd.trainers.variants import _DebugSchedule

#: paper id (Table 2) -> base trainer class
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
#: environment variable set per study run: seeds Python, NumPy and torch before nnU-Net's __init__
SEED_ENV = STUDY_SEED_ENV


def trainer_name(paper_id: str, suffix: str) -> str:
    return f"{STUDY_TRAINERS[paper_id].__name__}_{suffix}"


def spine_trainer_name(suffix: str) -> str:
    return f"VertKDSpineTrainer_{suffix}"


def schedule(suffix: str) -> dict:
    """The schedule's class attributes (patch, epochs, iterations, ...) of a suffix, for reports ({} for an
    unknown suffix)."""
    cls = globals().get(trainer_name("T_S", suffix))
    if cls is None:
        return {}
    names = ("patch_size_voxels", "num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch")
    return {n: getattr(cls, n) for n in names}


class _SeedFromEnv(SeededTrainerMixin):
    """Seeded from ``$VERTKD_STUDY_SEED`` / ``$VERTKD_SEED`` when set, so that a study seed changes initial
    weights, sampling and augmentation (single-process data loading); not seeded otherwise."""


# ---------------------------------------------------------------------------------------------- schedules
class _StudyMini(_SeedFromEnv, _DebugSchedule):
    num_val_iterations_per_epoch = 1
    run_final_validation = False


class _StudyMiniSpine(_SeedFromEnv):
    num_epochs = 1
    num_iterations_per_epoch = 2
    num_val_iterations_per_epoch = 1
    save_every = 1


class _Demo(_SeedFromEnv):
    """data converted at 3 mm: 32^3 patches = a 96 mm field of view (paper: 128 mm at 1 mm)"""
    patch_size_voxels = (32, 32, 32)
    num_epochs = 16
    num_iterations_per_epoch = 25
    num_val_iterations_per_epoch = 1
    save_every = 8
    run_final_validation = False


class _DemoSpine(_SeedFromEnv):
    num_epochs = 8
    num_iterations_per_epoch = 20
    num_val_iterations_per_epoch = 1
    save_every = 8


class _StudyCPU(_Demo):
    num_epochs = 40
    save_every = 10


class _StudyCPUSpine(_DemoSpine):
    pass


class _StudyGPU(_SeedFromEnv):
    """an estimate for one H100 in ~30 min (8 trainings in 2 parallel stages); not run yet"""
    patch_size_voxels = (128, 128, 128)
    num_epochs = 8
    num_iterations_per_epoch = 125
    num_val_iterations_per_epoch = 10
    save_every = 5
    run_final_validation = False


class _StudyGPUSpine(_SeedFromEnv):
    num_epochs = 20
    num_iterations_per_epoch = 100
    num_val_iterations_per_epoch = 10
    save_every = 10


# ---------------------------------------------------------------------------------------------- studyMini
class VertKDTeacherTrainer_noDataProcessing_studyMini(_StudyMini, VertKDTeacherTrainer_noDataProcessing):
    """T_B, 'studyMini' schedule."""


class VertKDTeacherTrainer_studyMini(_StudyMini, VertKDTeacherTrainer):
    """T_S, 'studyMini' schedule."""


class VertKDStudentTrainer_scratch_studyMini(_StudyMini, VertKDStudentTrainer_scratch):
    """S_S, 'studyMini' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyMini"


class VertKDStudentTrainer_T3_studyMini(_StudyMini, VertKDStudentTrainer_T3):
    """S_T3, 'studyMini' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyMini"


class VertKDStudentTrainer_studyMini(_StudyMini, VertKDStudentTrainer):
    """S_T4, 'studyMini' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyMini"


class VertKDStudentTrainer_T5_studyMini(_StudyMini, VertKDStudentTrainer_T5):
    """S_T5, 'studyMini' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyMini"


class VertKDStudentTrainer_logits_studyMini(_StudyMini, VertKDStudentTrainer_logits):
    """S_L, 'studyMini' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyMini"


class VertKDStudentTrainer_logitsDistMap_studyMini(_StudyMini, VertKDStudentTrainer_logitsDistMap):
    """S_LW, 'studyMini' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyMini"


class VertKDSpineTrainer_studyMini(_StudyMiniSpine, VertKDSpineTrainer):
    """Spine model, 'studyMini' schedule."""


# ---------------------------------------------------------------------------------------------- demo
class VertKDTeacherTrainer_noDataProcessing_demo(_Demo, VertKDTeacherTrainer_noDataProcessing):
    """T_B, 'demo' schedule."""


class VertKDTeacherTrainer_demo(_Demo, VertKDTeacherTrainer):
    """T_S, 'demo' schedule."""


class VertKDStudentTrainer_scratch_demo(_Demo, VertKDStudentTrainer_scratch):
    """S_S, 'demo' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_demo"


class VertKDStudentTrainer_T3_demo(_Demo, VertKDStudentTrainer_T3):
    """S_T3, 'demo' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_demo"


class VertKDStudentTrainer_demo(_Demo, VertKDStudentTrainer):
    """S_T4, 'demo' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_demo"


class VertKDStudentTrainer_T5_demo(_Demo, VertKDStudentTrainer_T5):
    """S_T5, 'demo' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_demo"


class VertKDStudentTrainer_logits_demo(_Demo, VertKDStudentTrainer_logits):
    """S_L, 'demo' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_demo"


class VertKDStudentTrainer_logitsDistMap_demo(_Demo, VertKDStudentTrainer_logitsDistMap):
    """S_LW, 'demo' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_demo"


class VertKDSpineTrainer_demo(_DemoSpine, VertKDSpineTrainer):
    """Spine model, 'demo' schedule."""


# ---------------------------------------------------------------------------------------------- studyCPU
class VertKDTeacherTrainer_noDataProcessing_studyCPU(_StudyCPU, VertKDTeacherTrainer_noDataProcessing):
    """T_B, 'studyCPU' schedule."""


class VertKDTeacherTrainer_studyCPU(_StudyCPU, VertKDTeacherTrainer):
    """T_S, 'studyCPU' schedule."""


class VertKDStudentTrainer_scratch_studyCPU(_StudyCPU, VertKDStudentTrainer_scratch):
    """S_S, 'studyCPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyCPU"


class VertKDStudentTrainer_T3_studyCPU(_StudyCPU, VertKDStudentTrainer_T3):
    """S_T3, 'studyCPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyCPU"


class VertKDStudentTrainer_studyCPU(_StudyCPU, VertKDStudentTrainer):
    """S_T4, 'studyCPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyCPU"


class VertKDStudentTrainer_T5_studyCPU(_StudyCPU, VertKDStudentTrainer_T5):
    """S_T5, 'studyCPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyCPU"


class VertKDStudentTrainer_logits_studyCPU(_StudyCPU, VertKDStudentTrainer_logits):
    """S_L, 'studyCPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyCPU"


class VertKDStudentTrainer_logitsDistMap_studyCPU(_StudyCPU, VertKDStudentTrainer_logitsDistMap):
    """S_LW, 'studyCPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyCPU"


class VertKDSpineTrainer_studyCPU(_StudyCPUSpine, VertKDSpineTrainer):
    """Spine model, 'studyCPU' schedule."""


# ---------------------------------------------------------------------------------------------- studyGPU
class VertKDTeacherTrainer_noDataProcessing_studyGPU(_StudyGPU, VertKDTeacherTrainer_noDataProcessing):
    """T_B, 'studyGPU' schedule."""


class VertKDTeacherTrainer_studyGPU(_StudyGPU, VertKDTeacherTrainer):
    """T_S, 'studyGPU' schedule."""


class VertKDStudentTrainer_scratch_studyGPU(_StudyGPU, VertKDStudentTrainer_scratch):
    """S_S, 'studyGPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyGPU"


class VertKDStudentTrainer_T3_studyGPU(_StudyGPU, VertKDStudentTrainer_T3):
    """S_T3, 'studyGPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyGPU"


class VertKDStudentTrainer_studyGPU(_StudyGPU, VertKDStudentTrainer):
    """S_T4, 'studyGPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyGPU"


class VertKDStudentTrainer_T5_studyGPU(_StudyGPU, VertKDStudentTrainer_T5):
    """S_T5, 'studyGPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyGPU"


class VertKDStudentTrainer_logits_studyGPU(_StudyGPU, VertKDStudentTrainer_logits):
    """S_L, 'studyGPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyGPU"


class VertKDStudentTrainer_logitsDistMap_studyGPU(_StudyGPU, VertKDStudentTrainer_logitsDistMap):
    """S_LW, 'studyGPU' schedule."""
    teacher_trainer_name = "VertKDTeacherTrainer_studyGPU"


class VertKDSpineTrainer_studyGPU(_StudyGPUSpine, VertKDSpineTrainer):
    """Spine model, 'studyGPU' schedule."""


__all__ = sorted(n for n in dir() if n.startswith("VertKD") and n.rsplit("_", 1)[-1] in
                 ("studyMini", "demo", "studyCPU", "studyGPU"))
