"""A tiny nnU-Net raw vertebra dataset for trainer tests (no dependency on the synthetic generator).

Each case is a 48 x 40 x 40 (k, j, i) CT volume in LPI orientation (array axis 0 = superior -> inferior, index
0 most superior, as written by vertkd_convert_verse) with 4-6 stacked box-shaped "vertebrae" along axis 0
inside a soft-tissue cylinder. Labels are consecutive cranio-caudal nnU-Net labels (1 = C1 ... 26 = L6); the
cases start at different levels so that cervical, thoracic and lumbar targets all occur.
"""
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.labels import nnunet_dataset_labels
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY

SHAPE_KJI = (48, 40, 40)
#: first nnU-Net label of each case (cervical, cervico-thoracic, thoracic, thoraco-lumbar, lumbar)
DEFAULT_FIRST_LABELS = (3, 6, 12, 18, 21)


def make_case(first_label: int, n_vertebrae: int, rng: np.random.Generator):
    """(ct_kji float32 HU, seg_kji uint8) of one synthetic case."""
    k, j, i = SHAPE_KJI
    ct = np.full(SHAPE_KJI, -1000.0, dtype=np.float32)
    kk, jj, ii = np.meshgrid(np.arange(k), np.arange(j), np.arange(i), indexing="ij")
    body = (jj - j / 2) ** 2 + (ii - i / 2) ** 2 < (0.45 * i) ** 2
    ct[body] = 40.0
    seg = np.zeros(SHAPE_KJI, dtype=np.uint8)
    height = (k - 4) // n_vertebrae
    top = 2
    for n in range(n_vertebrae):
        label = first_label + n
        if label > 26:
            break
        z0, z1 = top + n * height, top + (n + 1) * height - 2  # 2-slice "disc" between vertebrae
        half_w = 6 + n  # vertebrae grow towards caudal, like real ones
        cj, ci = j // 2 + 3, i // 2
        box = (kk >= z0) & (kk < z1) & (np.abs(jj - cj) <= half_w * 0.8) & (np.abs(ii - ci) <= half_w)
        seg[box] = label
        ct[box] = 300.0 + 100.0 * rng.random()
    ct += rng.normal(0, 20, size=ct.shape).astype(np.float32)
    return ct, seg


def _to_image(arr_kji: np.ndarray, spacing_mm: float) -> sitk.Image:
    # LPI: i points to L (+x in LPS), j to P (+y), k to I (-z), so index 0 of axis k is the most superior slice
    img = sitk.GetImageFromArray(arr_kji)
    img.SetSpacing((spacing_mm,) * 3)
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    return img


def write_tiny_vertebra_dataset(nnunet_raw: Path, dataset_id: int = 990, first_labels: Sequence[int] =
                                DEFAULT_FIRST_LABELS, n_vertebrae: int = 5, seed: int = 0,
                                spacing_mm: float = 1.0) -> Path:
    """Write Dataset{id}_TinyVert under ``nnunet_raw`` and return its folder."""
    rng = np.random.default_rng(seed)
    folder = Path(nnunet_raw) / f"Dataset{dataset_id:03d}_TinyVert"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for c, first in enumerate(first_labels):
        ct, seg = make_case(first, n_vertebrae, rng)
        case = f"tiny{c:03d}"
        sitk.WriteImage(_to_image(ct, spacing_mm), str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(_to_image(seg, spacing_mm), str(folder / "labelsTr" / f"{case}.nii.gz"))
    dataset_json: Dict = {
        "channel_names": {"0": "CT"},
        "labels": nnunet_dataset_labels(),
        "numTraining": len(first_labels),
        "file_ending": ".nii.gz",
        DATASET_JSON_KEY: {"kind": "vertebrae", "orientation": CANONICAL_ORIENTATION, "spacing_mm": spacing_mm},
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def plan_and_preprocess(dataset_id: int, env: dict) -> None:
    """Run the stock ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np 1`` with ``env``."""
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    env = dict(env)
    if env.get("nnUNet_n_proc_DA") == "0":  # the planner calls torch.set_num_threads(n_proc_DA), which needs >= 1
        env["nnUNet_n_proc_DA"] = "1"
    subprocess.run([str(exe), "-d", str(dataset_id), "-c", "3d_fullres", "-np", "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    write_tiny_vertebra_dataset(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 990)


def write_tiny_spine_dataset(nnunet_raw: Path, dataset_id: int = 991, first_labels: Sequence[int] =
                             DEFAULT_FIRST_LABELS, n_vertebrae: int = 5, seed: int = 0,
                             spacing_mm: float = 1.0) -> Path:
    """Spine dataset of the same tiny cases: label 1 = union of the vertebrae (dataset.json kind "spine")."""
    rng = np.random.default_rng(seed)
    folder = Path(nnunet_raw) / f"Dataset{dataset_id:03d}_TinySpine"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for c, first in enumerate(first_labels):
        ct, seg = make_case(first, n_vertebrae, rng)
        case = f"tiny{c:03d}"
        sitk.WriteImage(_to_image(ct, spacing_mm), str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(_to_image((seg > 0).astype(np.uint8), spacing_mm), str(folder / "labelsTr" / f"{case}.nii.gz"))
    dataset_json: Dict = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "spine": 1},
        "numTraining": len(first_labels),
        "file_ending": ".nii.gz",
        DATASET_JSON_KEY: {"kind": "spine", "orientation": CANONICAL_ORIENTATION, "spacing_mm": spacing_mm},
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
