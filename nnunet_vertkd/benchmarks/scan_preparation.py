"""The scan of the whole-scan measurements: which one, and brought to the converter's canonical grid.

``prepare_scan`` does what ``vertkd_convert_verse`` does to a case (``nnunet_vertkd.dataset_conversion``): reorient
to LPI, resample to an isotropic spacing on a grid that keeps the physical extent (CT linear, mask nearest
neighbour) and remap VerSe labels to the consecutive nnU-Net labels -- with the converter's own functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

#: CT value outside the scan after resampling (air)
AIR_HU = -1024.0
DEFAULT_SCAN_CASE = "sub-verse005"
WHOLE_SPINE_SEED = 1


def verse_mask_to_nnunet(mask, mask_path: str, warnings: Optional[List[str]] = None):
    """A VerSe vertebra mask (SimpleITK image) with its labels remapped to the consecutive nnU-Net labels
    (``vertkd_convert_verse``'s ``mask_to_nnunet_labels``: rounds, drops 26/27, refuses unknown labels)."""
    import SimpleITK as sitk
    from nnunet_vertkd.dataset_conversion.case_conversion import mask_to_nnunet_labels
    labels = mask_to_nnunet_labels(sitk.GetArrayFromImage(mask), mask_path, [] if warnings is None else warnings)
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(mask)
    return out


def prepare_scan(scan: Path, mask: Optional[Path], out_dir: Path, spacing_mm: float = 1.0) -> dict:
    """Reorient the scan (and mask) to LPI and resample to ``spacing_mm`` isotropic, as vertkd_convert_verse does;
    masks are remapped VerSe -> consecutive nnU-Net labels. Returns {"image", "mask"|None, "original",
    "size_1mm", "spacing_mm", "n_vertebrae"}."""
    import numpy as np
    import SimpleITK as sitk
    from nnunet_vertkd.dataset_conversion.case_conversion import resample, target_grid
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, orientation_of, to_canonical

    out_dir.mkdir(parents=True, exist_ok=True)
    img = sitk.ReadImage(str(scan))
    original = {"file": scan.name, "size": list(img.GetSize()), "spacing_mm": [round(s, 4) for s in img.GetSpacing()],
                "orientation": orientation_of(img)}
    ct = to_canonical(img, CANONICAL_ORIENTATION)
    grid = target_grid(ct, spacing_mm)
    image_path = out_dir / "bench_0000.nii.gz"
    sitk.WriteImage(resample(ct, grid, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32), str(image_path))
    mask_path, n_vertebrae = None, None
    if mask is not None:
        labels = to_canonical(verse_mask_to_nnunet(sitk.ReadImage(str(mask)), str(mask)), CANONICAL_ORIENTATION)
        labels = resample(labels, grid, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        mask_path = out_dir / "bench.nii.gz"
        sitk.WriteImage(labels, str(mask_path))
        n_vertebrae = int(np.count_nonzero(np.unique(sitk.GetArrayViewFromImage(labels))))
    return {"image": str(image_path), "mask": str(mask_path) if mask_path else None, "original": original,
            "size_1mm": list(grid.GetSize()), "spacing_mm": spacing_mm, "n_vertebrae": n_vertebrae}


def synthetic_scan(out_dir: Path, seed: int = 0, scale: float = 0.5) -> Optional[dict]:
    """One synthetic VerSe case (as vertkd_make_synthetic writes it); None when none was written."""
    from nnunet_vertkd.image_io import case_id
    from nnunet_vertkd.synthetic.verse_tree import write_synthetic_verse
    write_synthetic_verse(str(out_dir), 1, seed=seed, scale=scale)
    for ct in sorted(out_dir.rglob("*_ct.nii.gz")):
        stem = case_id(ct.name)
        masks = list(out_dir.rglob(f"{stem}_seg-vert_msk.nii.gz"))
        if masks:
            return {"scan": ct, "mask": masks[0]}
    return None


def default_scan() -> Optional[dict]:
    """The real sample sub-verse005 (lumbar, 1 mm) when the repository's ../shared/data/verse_sample exists."""
    from nnunet_vertkd.benchmarks.pipeline import real_sample_dir
    root = real_sample_dir()
    if root is None:
        return None
    ct = list(root.rglob(f"{DEFAULT_SCAN_CASE}_ct.nii.gz"))
    mask = list(root.rglob(f"{DEFAULT_SCAN_CASE}_seg-vert_msk.nii.gz"))
    return {"scan": ct[0], "mask": mask[0]} if ct and mask else None


def whole_spine_scan(out_dir: Path, seed: int = WHOLE_SPINE_SEED, variant: str = "normal") -> dict:
    """A synthetic whole spine (C1-L5 for "normal"), adult size (scale 1.0), 1 mm isotropic, as VerSe files."""
    import SimpleITK as sitk
    from nnunet_vertkd.synthetic.case import make_case
    out_dir.mkdir(parents=True, exist_ok=True)
    ct, mask, _ = make_case(seed, scale=1.0, fov="whole", spacing="iso1", variant=variant)
    ct_path, mask_path = out_dir / "whole_spine_ct.nii.gz", out_dir / "whole_spine_seg-vert_msk.nii.gz"
    sitk.WriteImage(ct, str(ct_path))
    sitk.WriteImage(mask, str(mask_path))
    return {"scan": ct_path, "mask": mask_path,
            "description": f"synthetic whole spine (make_case({seed}, scale=1.0, fov='whole', spacing='iso1', "
                           f"variant='{variant}'))"}
