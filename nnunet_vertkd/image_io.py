"""Image files as every command of the plugin names and reads them: endings, case ids, checked reading.

* ``IMAGE_ENDINGS``: the image files the commands take (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``).
* Case ids from file names, two rules:

  - ``case_name(path)`` -> ``(case, channel)``, nnU-Net's input naming (``vertkd_predict``): the stem without its
    image ending and without a 4-digit channel suffix, ``a_0000.nii.gz`` -> ``("a", 0)``, ``a.nii.gz`` ->
    ``("a", None)``.
  - ``case_id(path)`` -> ``case``, VerSe and nnU-Net names alike (``vertkd_evaluate``, the demo): the stem without
    its ending (an image ending or ``.json``) and without the suffixes ``CASE_SUFFIXES`` (``_ct``,
    ``_seg-vert_msk``, ``_seg``, ``_ctd`` ..., ``_0000``), stripped repeatedly,
    ``sub-verse500_dir-ax_seg-vert_msk.nii.gz`` -> ``sub-verse500_dir-ax``.

* ``read_image(path)`` -> ``(image, warnings)``: SimpleITK's reader plus the file checks of
  ``nnunet_vertkd.image_checks`` that SimpleITK does not make (a truncated ``.nii.gz``, an impossible NIfTI
  header). Problems raise ``ImageReadError`` whose message names the file; each command wraps it in its own error
  type (a skipped case for the converter, a failed case for the predictor, a refused input for the evaluator).
  ``scalar_3d_problem(image)`` says why an image is not a 3D single-channel volume.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence, Tuple

import SimpleITK as sitk

from nnunet_vertkd.image_checks import (assumed_orientation_warning, is_nifti, nifti_header_problems,
                                        nifti_truncation_problem)
from nnunet_vertkd.orientation import orientation_of

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")
#: suffixes stripped (repeatedly) from a file stem by ``case_id``
CASE_SUFFIXES = ("_seg-vert_msk", "_seg-subreg_ctd", "_seg-vert_ctd", "_seg", "_msk", "_ctd", "_ct", "_0000")
_CHANNEL = re.compile(r"_(\d{4})$")
#: longest part of SimpleITK's error text kept in a message
_DETAIL_CHARS = 200


def split_ending(name: str, endings: Sequence[str] = IMAGE_ENDINGS) -> Tuple[str, str]:
    """(stem, ending) of a file name; ending is '' when the name has none of ``endings``."""
    for e in endings:
        if name.endswith(e):
            return name[:-len(e)], e
    return name, ""


def is_image_file_name(name: str) -> bool:
    return bool(split_ending(name)[1])


def case_name(path: str) -> Tuple[str, Optional[int]]:
    """(case, channel) from an nnU-Net input file name: 'a_0000.nii.gz' -> ('a', 0); 'a.nii.gz' -> ('a', None)."""
    stem, _ = split_ending(os.path.basename(path))
    m = _CHANNEL.search(stem)
    if m:
        return stem[:m.start()], int(m.group(1))
    return stem, None


def case_id(path: str) -> str:
    """Case identifier of a VerSe or nnU-Net file: its stem without ``CASE_SUFFIXES``, e.g.
    'sub-verse500_dir-ax_seg-vert_msk.nii.gz' -> 'sub-verse500_dir-ax', 'case_007_0000.nii.gz' -> 'case_007'."""
    stem, _ = split_ending(os.path.basename(path), IMAGE_ENDINGS + (".json",))
    changed = True
    while changed:
        changed = False
        for s in CASE_SUFFIXES:
            if stem.endswith(s) and len(stem) > len(s):
                stem = stem[: -len(s)]
                changed = True
    return stem


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file and the problem."""


def read_image(path: str) -> Tuple[sitk.Image, List[str]]:
    """Read ``path`` with SimpleITK after the file checks SimpleITK skips; returns (image, warnings).

    Raises ``ImageReadError`` for a missing path, a folder, a truncated NIfTI (ITK would fill the missing voxels
    silently), an impossible NIfTI header (zero/negative voxel size, singular sform) and files SimpleITK cannot
    read. Accepted header oddities (no qform/sform) come back as warnings naming the orientation ITK assumed.
    """
    if not os.path.exists(path):
        raise ImageReadError(f"file not found: {path}")
    if not os.path.isfile(path):
        raise ImageReadError(f"not a file: {path}")
    warnings: List[str] = []
    if is_nifti(path):
        problem = nifti_truncation_problem(path)
        if problem:
            raise ImageReadError(f"cannot read {path}: {problem}; SimpleITK would fill the missing voxels silently")
        problems, warnings = nifti_header_problems(path)
        if problems:
            raise ImageReadError(f"{path}: " + "; ".join(problems))
    try:
        image = sitk.ReadImage(path)
        sitk.GetArrayViewFromImage(image)  # forces the pixel data to be there
    except RuntimeError as e:  # SimpleITK's message is long: keep its error line
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "rror" in ln), lines[0] if lines else "")
        raise ImageReadError(f"cannot read {path}: unreadable or truncated file (corrupt or not an image: "
                             f"{detail[:_DETAIL_CHARS]})") from None
    if warnings and image.GetDimension() == 3:
        warnings = [assumed_orientation_warning(w, orientation_of(image)) if "qform" in w else w for w in warnings]
    return image, warnings


def scalar_3d_problem(image: sitk.Image) -> Optional[str]:
    """None for a 3D single-channel image; else what it is instead."""
    dim, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dim != 3:
        return f"expected a 3D volume, got a {dim}D image of size {image.GetSize()}"
    if components != 1:
        return f"expected a single-channel 3D volume, got {components} components per voxel (a 4D or colour image?)"
    return None
