"""Step 1 (spine location) trainer: plain nnU-Net 2-class segmentation on the spine dataset with the paper's
small U-Net (8-16-32-64). Standard nnU-Net data pipeline, loss (Dice + CE with deep supervision) and validation,
except that mirroring (training and test time) is restricted to the left-right axis. Works with the stock
nnUNetPredictor (the network builder is a classmethod with nnU-Net 2.8.1's signature)."""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_vertkd.trainers.common import apply_class_settings, orientation_axes, save_checkpoint_with_vertkd
from nnunet_vertkd.trainers.network import SPINE_FEATURES, VertKDUNet, deep_supervision_scales


class VertKDSpineTrainer(nnUNetTrainer):
    vertkd_role = "spine"
    features = SPINE_FEATURES
    num_epochs = 300  # paper: 300 epochs
    num_iterations_per_epoch = 250
    num_val_iterations_per_epoch = 50
    enable_deep_supervision = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_class_settings(self)
        self.superior_axis, self.superior_at_low_index, self.left_right_axis = orientation_axes(
            dataset_json, self.plans_manager)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True):
        return VertKDUNet(num_input_channels, num_output_channels, cls.features,
                          deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        return deep_supervision_scales(len(self.features)) if self.enable_deep_supervision else None

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        mirror_axes = (self.left_right_axis,)
        self.inference_allowed_mirroring_axes = mirror_axes
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    def save_checkpoint(self, filename: str) -> None:
        entry = {"role": self.vertkd_role, "patch_size": [int(p) for p in self.configuration_manager.patch_size],
                 "features": list(self.features), "superior_axis": int(self.superior_axis),
                 "superior_at_low_index": bool(self.superior_at_low_index),
                 "left_right_axis": int(self.left_right_axis),
                 "spacing_mm": [float(s) for s in self.configuration_manager.spacing]}
        save_checkpoint_with_vertkd(self, filename, entry)
