"""nnU-Net trainers of the plugin. Every class exported here is found by stock nnU-Net via nnUNet_extTrainer."""
from nnunet_vertkd.trainers.placeholder import VertKDPlaceholderTrainer  # noqa: F401
