"""Tiny VerSe-format trees for converter tests (box-shaped "vertebrae", a few thousand voxels per image)."""
import json
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import centroids_from_mask

SHAPE_KJI = (30, 24, 20)  # LPI array: superior-inferior, posterior-anterior... (k, j, i)


def lpi_arrays(labels: Sequence[int] = (20, 21, 22), shape_kji: Tuple[int, int, int] = SHAPE_KJI):
    """CT (int16) and VerSe mask (uint8) arrays in LPI [k, j, i]: one box per label, top-down along k."""
    ct = np.full(shape_kji, -1000, dtype=np.int16)
    k, j, i = np.meshgrid(*[np.arange(s) for s in shape_kji], indexing="ij")
    ct += (3 * k + 2 * j + i).astype(np.int16)  # a gradient, so flips and transposes are visible
    mask = np.zeros(shape_kji, dtype=np.uint8)
    step = max(3, (shape_kji[0] - 2) // max(1, len(labels)))
    for n, lab in enumerate(labels):
        k0 = 1 + n * step
        mask[k0:k0 + step - 1, 6:shape_kji[1] - 6, 5:shape_kji[2] - 5] = lab
    ct[mask > 0] += 1400
    return ct, mask


def image_from_lpi(arr_kji: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(10.0, -20.0, 30.0),
                   orientation: str = "LPI") -> sitk.Image:
    """Image built in LPI (spacing per LPI axis i, j, k) and stored reoriented to ``orientation``."""
    img = sitk.GetImageFromArray(arr_kji)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # LPI
    return sitk.DICOMOrient(img, orientation)


def case_paths(root: Path, split_folder: str, stem: str, naming: str = "bids") -> Dict[str, Path]:
    base = Path(root) / split_folder if split_folder else Path(root)
    if naming == "bids":
        sub = stem.split("_")[0]
        return {"ct": base / "rawdata" / sub / f"{stem}_ct.nii.gz",
                "mask": base / "derivatives" / sub / f"{stem}_seg-vert_msk.nii.gz",
                "ctd": base / "derivatives" / sub / f"{stem}_seg-subreg_ctd.json"}
    return {"ct": base / f"{stem}.nii.gz", "mask": base / f"{stem}_seg.nii.gz", "ctd": base / f"{stem}_ctd.json"}


def write_case(root: Path, split_folder: str, stem: str, *, naming: str = "bids", orientation: str = "PIR",
               spacing=(1.0, 1.0, 1.0), labels: Sequence[int] = (20, 21, 22), write_ct: bool = True,
               write_mask: bool = True, ctd: Optional[str] = "json", mask_dtype=np.uint8,
               mask_array: Optional[np.ndarray] = None, shape_kji=SHAPE_KJI,
               mask_origin_shift=(0.0, 0.0, 0.0)) -> Dict[str, Path]:
    """Write one case. ctd: 'json' (with direction), 'nodir' (old format without direction) or None."""
    paths = case_paths(root, split_folder, stem, naming)
    ct, mask = lpi_arrays(labels, shape_kji)
    if mask_array is not None:
        mask = mask_array
    ct_img = image_from_lpi(ct, spacing, orientation=orientation)
    origin = tuple(o + s for o, s in zip((10.0, -20.0, 30.0), mask_origin_shift))
    mask_img = image_from_lpi(mask.astype(mask_dtype), spacing, origin=origin, orientation=orientation)
    for key in ("ct", "mask", "ctd"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
    if write_ct:
        sitk.WriteImage(ct_img, str(paths["ct"]), useCompression=True)
    if write_mask:
        sitk.WriteImage(mask_img, str(paths["mask"]), useCompression=True)
    if ctd and write_mask:
        stored = sitk.GetArrayFromImage(mask_img).astype(np.int64)
        cents = centroids_from_mask(stored)
        entries = [{"direction": list(orientation)}] if ctd == "json" else []
        entries += [{"label": int(lab), "X": x, "Y": y, "Z": z} for lab, (x, y, z) in sorted(cents.items())]
        entries.append({"label": 7, "X": float("nan"), "Y": float("nan"), "Z": float("nan")})
        paths["ctd"].write_text(json.dumps(entries))
    return paths


def tree_checksums(root: Path) -> Dict[str, Tuple[int, float, bytes]]:
    """Path -> (size, mtime, content) of every file, to prove the input folders were not modified."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime, open(p, "rb").read())
    return out


def convert_trees(roots, dirs: Dict[str, Path], dataset_id: int = 501, **kw):
    """``convert_verse`` of ``roots`` into the raw/preprocessed/results folders of the ``converter_dirs`` fixture,
    quietly unless the caller asks otherwise."""
    from nnunet_vertkd.dataset_conversion.convert_verse import convert_verse
    kw.setdefault("progress", False)
    kw.setdefault("verbose", False)
    return convert_verse([str(r) for r in roots], dataset_id, nnunet_raw=str(dirs["raw"]),
                         nnunet_preprocessed=str(dirs["pre"]), nnunet_results=str(dirs["res"]), **kw)
