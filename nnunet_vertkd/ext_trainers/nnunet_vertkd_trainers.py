"""Re-exports of the plugin's trainer classes for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports every module of the folder named by ``nnUNet_extTrainer`` and looks for the trainer class
by name. The classes themselves live in ``nnunet_vertkd.trainers`` (the paper's trainers and their short
variants) and ``nnunet_vertkd.benchmarks.trainer_variants`` (the schedules of ``vertkd_demo`` and
``vertkd_benchmark study``); this folder only re-exports them, so one folder serves every model the plugin
trains.
"""
from nnunet_vertkd.trainers import *  # noqa: F401,F403
from nnunet_vertkd.benchmarks.trainer_variants import *  # noqa: F401,F403
