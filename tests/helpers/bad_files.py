"""Broken files as hostile-but-fair users produce them: truncated downloads, hand-edited NIfTI headers."""
import gzip
import struct
from pathlib import Path
from typing import Optional, Sequence


def truncate(src, dst, fraction: float = 0.6) -> str:
    """The first ``fraction`` of ``src``'s bytes (a download that stopped) written to ``dst``."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:int(len(data) * fraction)])
    return str(dst)


def patch_nifti1_header(src, dst, pixdim: Optional[Sequence[float]] = None,
                        codes: Optional[Sequence[int]] = None, srow: Optional[Sequence[Sequence[float]]] = None) -> str:
    """Copy a little-endian NIfTI-1 file (.nii or .nii.gz) with raw header fields replaced: ``pixdim`` (voxel
    sizes 1..3), ``codes`` (qform_code, sform_code), ``srow`` (3 rows of 4). nibabel would "fix" such
    headers on save, so the bytes are edited directly."""
    src, dst = str(src), str(dst)
    raw = gzip.open(src, "rb").read() if src.endswith(".gz") else Path(src).read_bytes()
    b = bytearray(raw)
    assert struct.unpack("<i", b[:4])[0] == 348, "little-endian NIfTI-1 expected"
    if pixdim is not None:
        struct.pack_into("<3f", b, 80, *pixdim)
    if codes is not None:
        struct.pack_into("<2h", b, 252, *codes)
    if srow is not None:
        for r, row in enumerate(srow):
            struct.pack_into("<4f", b, 280 + 16 * r, *row)
    if dst.endswith(".gz"):
        with gzip.open(dst, "wb") as f:
            f.write(bytes(b))
    else:
        Path(dst).write_bytes(bytes(b))
    return dst


def fake_dicom(path) -> str:
    """A file with the DICOM preamble + 'DICM' magic (enough for the input listing to recognise it)."""
    Path(path).write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    return str(path)
