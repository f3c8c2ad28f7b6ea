"""Re-exports of the demo/study trainer variants for nnU-Net's ``nnUNet_extTrainer`` lookup (the pipeline adds
this folder next to the plugin's own ``nnunet_vertkd/ext_trainers``)."""
from nnunet_vertkd.benchmarks.trainer_variants import *  # noqa: F401,F403
