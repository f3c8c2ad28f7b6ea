"""Spine location + iterative top-down vertebra segmentation on nnU-Net's predictor."""
