"""The ``dataset.json`` of the benchmarks' temporary datasets and model folders.

Written by nnU-Net's own ``generate_dataset_json``; the plugin's metadata (kind, orientation, spacing) goes under
the plugin's key, as ``vertkd_convert_verse`` writes it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

from nnunet_vertkd.model_contract import DATASET_JSON_KEY
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION

CT_CHANNELS = {"0": "CT"}
NIFTI_ENDING = ".nii.gz"
GENERATED_LICENCE = "none: a temporary dataset or stand-in model written by nnunet_vertkd's benchmarks"
GENERATED_BY = "nnunet_vertkd.benchmarks"


def write_dataset_json(folder: Union[str, Path], labels: Dict[str, int], kind: str, num_training: int = 1,
                       spacing_mm: Optional[float] = None) -> Path:
    """``folder/dataset.json`` of a CT dataset (one channel, .nii.gz) whose images are in the canonical orientation;
    ``kind`` is "vertebrae" or "spine". Returns the file."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    meta = {"kind": kind, "orientation": CANONICAL_ORIENTATION}
    if spacing_mm is not None:
        meta["spacing_mm"] = float(spacing_mm)
    Path(folder).mkdir(parents=True, exist_ok=True)
    generate_dataset_json(str(folder), dict(CT_CHANNELS), dict(labels), num_training, NIFTI_ENDING,
                          license=GENERATED_LICENCE, converted_by=GENERATED_BY, **{DATASET_JSON_KEY: meta})
    return Path(folder) / "dataset.json"
