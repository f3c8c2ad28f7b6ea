"""Input image rules shared by the converter, the predictor and the evaluator.

SimpleITK reads several broken files without complaint, so these checks look at the files themselves:

* **Truncated NIfTI** (``nifti_truncation_problem``): ITK fills the missing voxels of a truncated ``.nii.gz``
  silently. The gzip stream must be complete and hold at least ``vox_offset`` + all voxel bytes promised by
  the header (NIfTI-1 and NIfTI-2).
* **Impossible geometry in the NIfTI header** (``nifti_header_problems``): ITK reads ``pixdim`` 0 as 1 mm and
  takes the absolute value of a negative ``pixdim`` (mirroring an axis), so the raw header is checked:
  zero, negative or non-finite voxel sizes, and a singular sform matrix (``sform_code`` > 0) are refused.
  A header without qform and sform (both codes 0) is accepted with a warning: the orientation is unknown
  and ITK assumes one (named in the warning and in the report/record).
* **Impossible geometry of any image** (``geometry_problems``): spacing outside
  [``MIN_SPACING_MM``, ``MAX_SPACING_MM``], a singular or non-orthonormal direction matrix, fewer than
  ``MIN_SIZE_VOXELS`` voxels along an axis (a single slice).

Every function returns messages instead of raising, so each caller wraps them in its own error type.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 20.0
#: smallest size (voxels) along any axis of a 3D scan
MIN_SIZE_VOXELS = 2
#: |det(direction)| and the columns' norms must be within this of 1
DIRECTION_TOLERANCE = 1e-3

_CHUNK = 1 << 22


def is_nifti(path: str) -> bool:
    return str(path).endswith((".nii", ".nii.gz"))


def _read_nifti(path: str, need_total: bool) -> Tuple[bytes, int]:
    """(first 540 bytes of the uncompressed stream, total uncompressed size or -1); raises OSError/EOFError/
    zlib.error on unreadable or truncated gzip streams."""
    opener = gzip.open if str(path).endswith(".gz") else open
    head, total = b"", 0
    with opener(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK if need_total else 540 - len(head))
            if not chunk:
                break
            if len(head) < 540:
                head += chunk[:540 - len(head)]
            total += len(chunk)
            if not need_total and len(head) >= 540:
                break
    return head, total if need_total else -1


class _Header:
    """The fields of a NIfTI-1 or NIfTI-2 header that matter here."""

    def __init__(self, dims, bitpix, pixdim, vox_offset, qform_code, sform_code, srow):
        self.dims, self.bitpix, self.pixdim, self.vox_offset = dims, bitpix, pixdim, vox_offset
        self.qform_code, self.sform_code, self.srow = qform_code, sform_code, srow

    def data_bytes(self) -> int:
        n = int(np.prod([max(1, int(d)) for d in self.dims[1:self.dims[0] + 1]], dtype=np.int64))
        return int(self.vox_offset) + n * int(self.bitpix) // 8


def _parse_header(head: bytes) -> Optional[_Header]:
    for e in "<>":
        if len(head) >= 348 and struct.unpack(e + "i", head[:4])[0] == 348:
            dims = struct.unpack(e + "8h", head[40:56])
            if not 1 <= dims[0] <= 7:
                continue
            return _Header(dims, struct.unpack(e + "h", head[72:74])[0], struct.unpack(e + "8f", head[76:108]),
                           struct.unpack(e + "f", head[108:112])[0], *struct.unpack(e + "2h", head[252:256]),
                           np.array(struct.unpack(e + "12f", head[280:328]), dtype=float).reshape(3, 4))
        if len(head) >= 540 and struct.unpack(e + "i", head[:4])[0] == 540:
            dims = struct.unpack(e + "8q", head[16:80])
            if not 1 <= dims[0] <= 7:
                continue
            return _Header(dims, struct.unpack(e + "h", head[14:16])[0], struct.unpack(e + "8d", head[104:168]),
                           struct.unpack(e + "q", head[168:176])[0], *struct.unpack(e + "2i", head[344:352]),
                           np.array(struct.unpack(e + "12d", head[400:496]), dtype=float).reshape(3, 4))
    return None


def nifti_truncation_problem(path: str) -> Optional[str]:
    """None when ``path`` (.nii / .nii.gz) is complete; else why not (truncated, corrupt stream, no header)."""
    try:
        head, total = _read_nifti(path, need_total=True)
    except (OSError, EOFError, zlib.error) as e:
        return f"unreadable or truncated file ({e})"
    header = _parse_header(head)
    if header is None:
        return f"unreadable or truncated file ({total} bytes, no NIfTI header)"
    if header.bitpix > 0 and total < header.data_bytes():
        return (f"unreadable or truncated file ({total} bytes of image data, the header promises "
                f"{header.data_bytes()})")
    return None


def nifti_header_problems(path: str) -> Tuple[List[str], List[str]]:
    """(problems, warnings) from the raw NIfTI header (see the module docstring). Unparsable headers give no
    message here: the truncation check and the reader report those."""
    try:
        head, _ = _read_nifti(path, need_total=False)
    except (OSError, EOFError, zlib.error):
        return [], []
    h = _parse_header(head)
    if h is None:
        return [], []
    problems, warnings = [], []
    n_spatial = min(3, h.dims[0])
    sizes = [float(p) for p in h.pixdim[1:1 + n_spatial]]
    if any(not np.isfinite(s) or s <= 0 for s in sizes):
        problems.append(f"impossible voxel size in the NIfTI header (pixdim {tuple(round(s, 4) for s in sizes)}): "
                        f"zero, negative or not a number (ITK would read 0 as 1 mm and mirror a negative axis)")
    if h.sform_code > 0:
        m = h.srow[:, :3]
        if not np.all(np.isfinite(m)):
            problems.append("the NIfTI sform matrix holds non-finite values")
        else:
            norms = np.linalg.norm(m, axis=0)
            det = abs(float(np.linalg.det(m)))
            if np.any(norms <= 0) or det <= 1e-3 * float(np.prod(norms)):
                problems.append(f"singular direction: the NIfTI sform matrix {np.round(m, 4).tolist()} maps two "
                                f"voxel axes onto the same direction (no valid orientation)")
    if h.qform_code <= 0 and h.sform_code <= 0:
        warnings.append("no qform/sform in the NIfTI header (both codes 0): the orientation is unknown")
    return problems, warnings


def geometry_problems(size: Sequence[int], spacing: Sequence[float], direction: Sequence[float]) -> List[str]:
    """Problems of a 3D image's grid (size, spacing in mm, direction cosines as 9 numbers, row-major)."""
    problems = []
    if min(size) < MIN_SIZE_VOXELS:
        problems.append(f"expected a 3D CT volume, got size {tuple(size)} (a single slice is a 2D image)")
    if any(not np.isfinite(s) or s < MIN_SPACING_MM or s > MAX_SPACING_MM for s in spacing):
        problems.append(f"absurd voxel spacing {tuple(round(float(s), 4) for s in spacing)} mm: expected between "
                        f"{MIN_SPACING_MM} and {MAX_SPACING_MM} mm on every axis (wrong header?)")
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if (not np.all(np.isfinite(d)) or abs(abs(float(np.linalg.det(d))) - 1) > DIRECTION_TOLERANCE
            or not np.allclose(d.T @ d, np.eye(3), atol=DIRECTION_TOLERANCE)):
        problems.append(f"singular or non-orthonormal direction matrix {np.round(d, 4).tolist()}: no valid "
                        f"orientation")
    return problems


def assumed_orientation_warning(warning: str, orientation: str) -> str:
    """The header warning with the orientation that was assumed."""
    return (f"{warning}; assumed {orientation} (ITK's default for such files: voxel axes i, j, k pointing to "
            f"{', '.join(orientation)}). Check that head and feet are not swapped")


def folder_is_writable(folder: str) -> bool:
    """True when a file can be created in the existing ``folder`` (tried: os.access is wrong for root and some
    mounts). Used by the converter and the predictor before any work starts."""
    probe = os.path.join(folder, f".vertkd_write_test{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
        return True
    except OSError:
        return False
