"""Teacher trainers (paper: T_S, T_B) and a teacher with nnU-Net's planned topology."""
from nnunet_vertkd.trainers.network import TEACHER_FEATURES
from nnunet_vertkd.trainers.vertkd_trainer import VertKDTrainerBase


class VertKDTeacherTrainer(VertKDTrainerBase):
    """T_S: paper teacher (16-32-64-128, ~1.46 M parameters) with the problem-specific data processing
    (region-balanced resampling + memory cleaning)."""
    features = TEACHER_FEATURES
    use_data_processing = True


class VertKDTeacherTrainer_noDataProcessing(VertKDTeacherTrainer):
    """T_B: the same teacher without resampling and memory cleaning."""
    use_data_processing = False


class VertKDTeacherTrainer_nnUNetTopology(VertKDTeacherTrainer):
    """Teacher with the architecture nnU-Net planned for the dataset (e.g. PlainConvUNet) plus the memory
    channel (2 inputs, 1 output), nnU-Net's planned patch size and deep supervision (Lessmann loss per output)."""
    network_topology = "nnunet_planned"
    features = None
    patch_size_voxels = None
    enable_deep_supervision = True
