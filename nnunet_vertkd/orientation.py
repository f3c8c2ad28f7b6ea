"""Canonical orientation of converted images and where superior/inferior and left/right end up in nnU-Net.

Converted images are stored in ``CANONICAL_ORIENTATION`` (DICOM convention: the letter names where each
voxel axis i, j, k points *to*). "LPI" means the k axis runs from head to feet. SimpleITK (and therefore
nnU-Net's SimpleITKIO) returns arrays indexed [k, j, i], so in a converted image array axis 0 is the
superior-inferior axis with the most superior slice at index 0.

nnU-Net may transpose arrays during preprocessing (``transpose_forward`` in the plans). The functions
below find the axes in nnU-Net's preprocessed space from the orientation stored in dataset.json under
``DATASET_JSON_KEY`` (``nnunet_vertkd.model_contract``) instead of assuming them.
"""
from typing import Sequence, Tuple

import SimpleITK as sitk

from nnunet_vertkd.model_contract import DATASET_JSON_KEY

CANONICAL_ORIENTATION = "LPI"

_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


def orientation_of(image: sitk.Image) -> str:
    """Three-letter DICOM-convention orientation of a SimpleITK image (e.g. 'PIR', 'LPI')."""
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())


def to_canonical(image: sitk.Image, orientation: str = CANONICAL_ORIENTATION) -> sitk.Image:
    """Reorient (permute/flip, no resampling) an image to ``orientation``."""
    return sitk.DICOMOrient(image, orientation)


def _array_axis_of(orientation: str, letters: str) -> Tuple[int, bool]:
    """Numpy axis (SimpleITK array order k, j, i) whose ITK axis points to one of ``letters``.

    Returns (axis, increasing) where increasing tells whether the index grows towards letters[0].
    """
    orientation = orientation.upper()
    for itk_axis, letter in enumerate(orientation):
        if letter in letters:
            return 2 - itk_axis, letter == letters[0]
    raise ValueError(f"orientation {orientation!r} has no axis along {letters}")


def superior_axis(orientation: str, transpose_forward: Sequence[int] = (0, 1, 2)) -> Tuple[int, bool]:
    """Axis of nnU-Net's preprocessed array that runs superior-inferior.

    Returns (axis, superior_at_low_index): ``superior_at_low_index`` is True when index 0 is the most
    superior slice (so "the top" of a patch is its low-index end).
    ``transpose_forward`` is ``plans['transpose_forward']`` (preprocessed axis a = raw axis transpose_forward[a]).
    """
    raw_axis, towards_inferior = _array_axis_of(orientation, "IS")
    return list(transpose_forward).index(raw_axis), towards_inferior


def left_right_axis(orientation: str, transpose_forward: Sequence[int] = (0, 1, 2)) -> int:
    """Axis of nnU-Net's preprocessed array that runs left-right (the only axis it is safe to mirror)."""
    raw_axis, _ = _array_axis_of(orientation, "LR")
    return list(transpose_forward).index(raw_axis)


def orientation_from_dataset_json(dataset_json: dict) -> str:
    """Orientation stored by the converter; images converted by other tools are rejected with a clear error."""
    meta = dataset_json.get(DATASET_JSON_KEY)
    if not meta or "orientation" not in meta:
        raise KeyError(
            f"dataset.json has no '{DATASET_JSON_KEY}.orientation' entry: this dataset was not written by "
            f"vertkd_convert_verse, so the superior-inferior axis is unknown. Convert it with vertkd_convert_verse "
            f"or add \"{DATASET_JSON_KEY}\": {{\"orientation\": \"{CANONICAL_ORIENTATION}\"}} if all images are "
            f"in that orientation.")
    return meta["orientation"]
