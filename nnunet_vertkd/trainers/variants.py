"""Short-schedule variants for tests and demos (configuration as data: class attributes only)."""
from nnunet_vertkd.trainers.spine import VertKDSpineTrainer
from nnunet_vertkd.trainers.student import (
    VertKDStudentTrainer, VertKDStudentTrainer_logits, VertKDStudentTrainer_logitsDistMap,
    VertKDStudentTrainer_scratch)
from nnunet_vertkd.trainers.teacher import (
    VertKDTeacherTrainer, VertKDTeacherTrainer_nnUNetTopology, VertKDTeacherTrainer_noDataProcessing)


class _DebugSchedule:
    """Tiny CPU-friendly schedule: 32^3 patches, 2 epochs x 3 iterations, iterative validation with small
    fragment thresholds so that the tiny test vertebrae (~500 voxels) count."""
    patch_size_voxels = (32, 32, 32)
    num_epochs = 2
    num_iterations_per_epoch = 3
    num_val_iterations_per_epoch = 2
    save_every = 1
    validation_iterative_overrides = {"MIN_START_FRAGMENT_VOXELS": 20, "MIN_CONTINUE_FRAGMENT_VOXELS": 10,
                                      "MAX_ITERATIONS_PER_VERTEBRA": 3, "MAX_VERTEBRAE": 8}


class _FiveEpochs:
    num_epochs = 5


class VertKDTeacherTrainer_debug(_DebugSchedule, VertKDTeacherTrainer):
    pass


class VertKDTeacherTrainer_noDataProcessing_debug(_DebugSchedule, VertKDTeacherTrainer_noDataProcessing):
    pass


class VertKDStudentTrainer_debug(_DebugSchedule, VertKDStudentTrainer):
    teacher_trainer_name = "VertKDTeacherTrainer_debug"


class VertKDStudentTrainer_scratch_debug(_DebugSchedule, VertKDStudentTrainer_scratch):
    pass


class VertKDStudentTrainer_logits_debug(_DebugSchedule, VertKDStudentTrainer_logits):
    teacher_trainer_name = "VertKDTeacherTrainer_debug"


class VertKDStudentTrainer_logitsDistMap_debug(_DebugSchedule, VertKDStudentTrainer_logitsDistMap):
    teacher_trainer_name = "VertKDTeacherTrainer_debug"


class VertKDSpineTrainer_debug(VertKDSpineTrainer):
    num_epochs = 2
    num_iterations_per_epoch = 3
    num_val_iterations_per_epoch = 2
    save_every = 1


class VertKDTeacherTrainer_5epochs(_FiveEpochs, VertKDTeacherTrainer):
    pass


class VertKDStudentTrainer_5epochs(_FiveEpochs, VertKDStudentTrainer):
    teacher_trainer_name = "VertKDTeacherTrainer_5epochs"


class VertKDSpineTrainer_5epochs(_FiveEpochs, VertKDSpineTrainer):
    pass


class VertKDTeacherTrainer_nnUNetTopology_debug(_DebugSchedule, VertKDTeacherTrainer_nnUNetTopology):
    pass
