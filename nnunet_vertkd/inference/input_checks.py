"""Checks on input CT images before inference; each failure is a ``RejectedCaseError`` naming the case.

Rejected (the batch goes on with the next case, nothing is written for this one):
missing, unreadable or truncated file; impossible NIfTI header (zero/negative voxel size, singular sform; read
by ``nnunet_vertkd.image_io.read_image`` with the checks of ``nnunet_vertkd.image_checks``); not a 3D scalar
image (2D, 4D, vector/RGB, or a 3D image with a single slice); empty image; constant image; NaN or infinite
voxels; absurd spacing (< ``MIN_SPACING_MM`` or > ``MAX_SPACING_MM`` on any axis); a singular or
non-orthonormal direction matrix; intensities that are not Hounsfield units (maximum < ``MIN_MAX_HU``, or all
values in [0, 1] or [0, 255]); and, later in the pipeline, no spine found.
Warned about (recorded under "input_warnings"): no qform/sform in a NIfTI header (the assumed orientation is
named), intensities without air or above 10000.
"""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.image_checks import (MAX_SPACING_MM, MIN_SIZE_VOXELS, MIN_SPACING_MM,  # noqa: F401
                                        geometry_problems, is_nifti)
from nnunet_vertkd.image_io import ImageReadError, scalar_3d_problem
from nnunet_vertkd.image_io import read_image as read_checked_image

#: a CT in HU always holds bone (> 100 HU); a lower maximum means another unit or an empty scan
MIN_MAX_HU = 100.0
#: metadata key under which read_image keeps the accepted header oddities of an image
WARNINGS_KEY = "vertkd_input_warnings"


class RejectedCaseError(ValueError):
    """One case that cannot be segmented; ``str(e)`` names the case and the reason. The batch goes on with the next
    case (unlike ``nnunet_vertkd.command_line.InputError``: bad usage of a command, which stops it with exit 2)."""

    def __init__(self, case: str, reason: str):
        super().__init__(f"{case}: {reason}")
        self.case = case
        self.reason = reason


def read_image(path: str, case: str) -> sitk.Image:
    """Read ``path`` (``nnunet_vertkd.image_io.read_image``); missing, unreadable or truncated files and impossible
    NIfTI headers become RejectedCaseError. Accepted header oddities (no qform/sform) are kept with the image
    (``header_warnings``)."""
    try:
        image, warnings = read_checked_image(path)
    except ImageReadError as e:
        raise RejectedCaseError(case, str(e)) from None
    check_nifti_nans(path, case)
    if warnings:
        image.SetMetaData(WARNINGS_KEY, json.dumps(warnings))
    return image


def header_warnings(image: sitk.Image) -> list:
    """Warnings ``read_image`` attached to the image (accepted header oddities, e.g. no qform/sform)."""
    if image.HasMetaDataKey(WARNINGS_KEY):
        return list(json.loads(image.GetMetaData(WARNINGS_KEY)))
    return []


def check_nifti_nans(path: str, case: str) -> None:
    """SimpleITK's NIfTI reader turns NaN voxels into 0 silently; look at the stored values of float NIfTI."""
    if not is_nifti(path):
        return
    try:
        import nibabel
        img = nibabel.load(path)
        if not np.issubdtype(img.get_data_dtype(), np.floating):
            return
        data = np.asanyarray(img.dataobj)
    except Exception:  # unreadable for nibabel but readable for SimpleITK: leave it to the other checks
        return
    n_nan = int(np.isnan(data).sum())
    if n_nan:
        raise RejectedCaseError(case, f"{n_nan} NaN voxels: the image is corrupt or not a CT")


def check_geometry(image: sitk.Image, case: str) -> None:
    not_3d = scalar_3d_problem(image)
    if not_3d:
        raise RejectedCaseError(case, not_3d)
    size = image.GetSize()
    if min(size) == 0:
        raise RejectedCaseError(case, f"empty image (size {size})")
    problems = geometry_problems(size, image.GetSpacing(), image.GetDirection())
    if problems:
        raise RejectedCaseError(case, "; ".join(problems))


def check_intensities(array: np.ndarray, case: str) -> None:
    if array.size == 0:
        raise RejectedCaseError(case, "empty image (no voxels)")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise RejectedCaseError(case, f"unsupported voxel type {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        n_nan = int(np.isnan(array).sum())
        if n_nan:
            raise RejectedCaseError(case, f"{n_nan} NaN voxels: the image is corrupt or not a CT")
        n_inf = int(np.isinf(array).sum())
        if n_inf:
            raise RejectedCaseError(case, f"{n_inf} infinite voxels: the image is corrupt or not a CT")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise RejectedCaseError(case, f"constant image (every voxel is {lo:g}): nothing to segment")
    if lo >= 0 and hi <= 1:
        raise RejectedCaseError(case, f"intensities in [{lo:g}, {hi:g}] look normalised to [0, 1], not Hounsfield "
                                      f"units; give the CT in HU")
    if lo >= 0 and hi <= 255:
        raise RejectedCaseError(case, f"intensities in [{lo:g}, {hi:g}] look like an 8-bit picture, not Hounsfield "
                                      f"units; give the CT in HU")
    if hi < MIN_MAX_HU:
        raise RejectedCaseError(case, f"maximum intensity {hi:g} < {MIN_MAX_HU:g}: no bone in Hounsfield units, so "
                                      f"this is not a CT in HU (or it is empty)")


def intensity_warnings(array: np.ndarray) -> list:
    """Accepted but suspicious intensities (recorded in the case record under "input_warnings")."""
    lo, hi = float(array.min()), float(array.max())
    warnings = []
    if lo >= 0:
        warnings.append(f"minimum intensity {lo:g} >= 0: no air in HU (-1000); if the values are stored without "
                        f"the rescale offset (HU = value - 1024), convert them first")
    if hi > 10000:
        warnings.append(f"maximum intensity {hi:g} > 10000 HU: metal or a wrong rescale slope")
    return warnings


def check_image(image: sitk.Image, case: str) -> np.ndarray:
    """All checks on an in-memory image; returns a read-only view of its array ([k, j, i]), valid while the
    image lives."""
    check_geometry(image, case)
    array = sitk.GetArrayViewFromImage(image)
    check_intensities(array, case)
    return array


def load_and_check(path: str, case: str) -> sitk.Image:
    image = read_image(path, case)
    check_image(image, case)
    return image
