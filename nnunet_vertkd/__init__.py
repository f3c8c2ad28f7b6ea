"""nnunet_vertkd: iterative vertebra segmentation with knowledge distillation, as an nnU-Net v2 plugin.

Data flows through the sub-packages in this order:
VerSe folder -> ``dataset_conversion`` -> nnU-Net raw datasets -> ``trainers`` -> checkpoints ->
``inference`` -> instance masks + centroids -> ``evaluation``.
"""
__version__ = "0.1.0"
