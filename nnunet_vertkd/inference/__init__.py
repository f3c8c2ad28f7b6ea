"""Spine location + iterative top-down vertebra segmentation on nnU-Net's predictor (docs/inference.md).

``segment_vertebrae_iteratively`` / ``IterativeSettings`` (pure loop, numpy only) and ``VertKDPredictor``
(model folders, files) are importable from here; the predictor is imported lazily (it pulls in torch/nnU-Net).
"""
from nnunet_vertkd.inference.iterative import (IterativeResult, IterativeSettings,  # noqa: F401
                                               segment_vertebrae_iteratively)


def __getattr__(name):
    if name == "VertKDPredictor":
        from nnunet_vertkd.inference.predictor import VertKDPredictor
        return VertKDPredictor
    raise AttributeError(name)
