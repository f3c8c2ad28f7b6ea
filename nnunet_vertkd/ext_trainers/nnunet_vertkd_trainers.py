"""Re-exports of the plugin's trainer classes for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports every module of the folder named by ``nnUNet_extTrainer`` and looks for the trainer class
by name. The classes themselves live in ``nnunet_vertkd.trainers`` (the paper's trainers, the CPU recipe, the
multi-teacher students, the labeller, the debug variants and, in ``trainers/benchmarking.py``, the schedules of
``vertkd_demo --train`` and ``vertkd_benchmark study``); this folder only re-exports them, so one folder serves
every model the plugin trains.
"""
from nnunet_vertkd.trainers import *  # noqa: F401,F403
