"""Re-exports of the plugin's trainer classes for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports every module of the folder named by ``nnUNet_extTrainer`` and looks for the trainer class
by name. The classes themselves live in ``nnunet_vertkd.trainers``; this folder only re-exports them.
"""
from nnunet_vertkd.trainers import *  # noqa: F401,F403
