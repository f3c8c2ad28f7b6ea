"""nnU-Net trainers of the plugin. Every class exported here is found by stock nnU-Net via nnUNet_extTrainer
(``nnunet_vertkd/ext_trainers`` re-exports this module). See docs/trainers.md."""
from nnunet_vertkd.trainers.vertkd_trainer import VertKDTrainerBase  # noqa: F401
from nnunet_vertkd.trainers.teacher import (  # noqa: F401
    VertKDTeacherTrainer, VertKDTeacherTrainer_nnUNetTopology, VertKDTeacherTrainer_noDataProcessing)
from nnunet_vertkd.trainers.student import (  # noqa: F401
    VertKDStudentTrainer, VertKDStudentTrainer_T3, VertKDStudentTrainer_T5, VertKDStudentTrainer_logits,
    VertKDStudentTrainer_logitsDistMap, VertKDStudentTrainer_scratch)
from nnunet_vertkd.trainers.spine import VertKDSpineTrainer  # noqa: F401
from nnunet_vertkd.trainers.variants import (  # noqa: F401
    VertKDSpineTrainer_5epochs, VertKDSpineTrainer_debug, VertKDStudentTrainer_5epochs, VertKDStudentTrainer_debug,
    VertKDStudentTrainer_logitsDistMap_debug, VertKDStudentTrainer_logits_debug, VertKDStudentTrainer_scratch_debug,
    VertKDTeacherTrainer_5epochs, VertKDTeacherTrainer_debug, VertKDTeacherTrainer_nnUNetTopology_debug,
    VertKDTeacherTrainer_noDataProcessing_debug)
from nnunet_vertkd.trainers.cpu_recipe import (  # noqa: F401
    VertKDSpineTrainer_cpu4mm, VertKDStudentTrainer_cpu2mm, VertKDStudentTrainer_cpu2mm_realFT,
    VertKDStudentTrainer_cpu2mm_realFT2, VertKDStudentTrainer_cpu2mm_realFT3, VertKDStudentTrainer_cpu2mm_realFT_long,
    VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3, VertKDStudentTrainer_cpu2mm_realFT_long_kd,
    VertKDStudentTrainer_cpu2mm_realFT_long2,
    VertKDTeacherTrainer_cpu2mm_realFT2, VertKDTeacherTrainer_cpu2mm_realFT_long,
    VertKDStudentTrainer_scratch_cpu2mm, VertKDTeacherTrainer_cpu2mm, VertKDTeacherTrainer_cpu2mm_realFT)
from nnunet_vertkd.trainers.multi_teacher import (  # noqa: F401
    VertKDStudentTrainer_multiTeacher, VertKDStudentTrainer_multiTeacher_cpu2mm, VertKDStudentTrainer_multiTeacher_debug,
    VertKDStudentTrainer_multiTeacher_equalWeights, VertKDStudentTrainer_multiTeacher_klOnly,
    VertKDStudentTrainer_multiTeacher_printedWeights)
from nnunet_vertkd.trainers.label_classifier import (  # noqa: F401
    VertKDLabelTrainer, VertKDLabelTrainer_cpu, VertKDLabelTrainer_debug)
from nnunet_vertkd.trainers.benchmarking import *  # noqa: F401,F403  (every class written out there)

__all__ = [name for name in dir() if name.startswith("VertKD")]
