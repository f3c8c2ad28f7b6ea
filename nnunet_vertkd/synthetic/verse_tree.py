"""Write synthetic scans as a VerSe release tree.

OUT/01_training, OUT/02_validation, OUT/03_test (about 60/20/20 % of the scans, patients never split
across folders), each with
``rawdata/sub-synNNN/sub-synNNN[_dir-ax|_dir-sag]_ct.nii.gz`` and
``derivatives/sub-synNNN/<stem>_seg-vert_msk.nii.gz`` + ``<stem>_seg-subreg_ctd.json``.
Some patients are scanned in two overlapping parts, stored in one subject as
``sub-synNNN_split-synMMM_ct.nii.gz`` (as VerSe does). OUT/synthetic_manifest.json lists every scan.
"""
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import write_centroids
from nnunet_vertkd.interrupts import worker_initializer
from nnunet_vertkd.orientation import orientation_of

from .anatomy import FOV_KINDS
from .case import ORIENTATIONS, make_case_with_info

SPLIT_FOLDERS = ("01_training", "02_validation", "03_test")
MANIFEST = "synthetic_manifest.json"


@dataclass
class PlannedScan:
    split: str            # split folder name
    subject: str          # "sub-syn001"
    stem: str             # file stem without "_ct", e.g. "sub-syn001_dir-ax"
    patient_seed: tuple   # anatomy seed (shared by the scans of one subject)
    scan_seed: tuple
    fov: str
    orientation: str
    entity: Optional[str]  # None, "dir-ax", "dir-sag" or "split-synMMM"


def split_counts(n: int) -> List[int]:
    """Scans per split folder (training, validation, test): about 60/20/20, each non-empty from n = 3."""
    if n < 3:
        return [n, 0, 0]
    n_val = max(1, int(round(0.2 * n)))
    n_test = max(1, int(round(0.2 * n)))
    return [n - n_val - n_test, n_val, n_test]


def plan_scans(n_cases: int, seed: int) -> List[PlannedScan]:
    """Deterministic plan: which subject, file name, field of view and orientation each scan gets.

    Fields of view and orientations are cycled in a seeded order so a few scans already cover them all;
    the first training subject with room for two scans is a two-part patient (``split-`` entity), later
    ones appear with probability 0.15; ``dir-`` entities are given to about a quarter of the scans.
    """
    rng = np.random.default_rng([int(seed), 7])
    fovs = [FOV_KINDS[i] for i in rng.permutation(len(FOV_KINDS))]
    orients = [ORIENTATIONS[i] for i in rng.permutation(len(ORIENTATIONS))]
    plans: List[PlannedScan] = []
    subject_no, scan_no = 0, 0
    for split, count in zip(SPLIT_FOLDERS, split_counts(n_cases)):
        left = count
        while left > 0:
            subject_no += 1
            subject = f"sub-syn{subject_no:03d}"
            pseed = (int(seed), subject_no)
            two = left >= 2 and n_cases >= 4 and (not any(p.entity and p.entity.startswith("split")
                                                         for p in plans) or rng.random() < 0.15)
            parts = ["upper", "lower"] if two else [None]
            for part in parts:
                scan_no += 1
                if part is None:
                    fov = fovs[(scan_no - 1) % len(fovs)]
                    entity = str(rng.choice(["dir-ax", "dir-sag"])) if rng.random() < 0.25 else None
                else:
                    fov, entity = part, f"split-syn{500 + scan_no:03d}"
                stem = subject + (f"_{entity}" if entity else "")
                plans.append(PlannedScan(split=split, subject=subject, stem=stem, patient_seed=pseed,
                                         scan_seed=(int(seed), subject_no, scan_no), fov=fov,
                                         orientation=orients[(scan_no - 1) % len(orients)], entity=entity))
            left -= len(parts)
    if n_cases >= 2 and not any(p.entity and p.entity.startswith("dir") for p in plans):
        last_single = [p for p in plans if p.entity is None][-1]
        last_single.entity = "dir-ax"
        last_single.stem = f"{last_single.subject}_dir-ax"
    return plans


def _atomic_write_image(image: sitk.Image, path: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".tmp{os.getpid()}_{os.path.basename(path)}")
    sitk.WriteImage(image, tmp, useCompression=True)
    os.replace(tmp, path)


def case_paths(out: str, plan: PlannedScan) -> Dict[str, str]:
    root = os.path.join(out, plan.split)
    raw = os.path.join(root, "rawdata", plan.subject)
    der = os.path.join(root, "derivatives", plan.subject)
    return {"ct": os.path.join(raw, f"{plan.stem}_ct.nii.gz"),
            "mask": os.path.join(der, f"{plan.stem}_seg-vert_msk.nii.gz"),
            "ctd": os.path.join(der, f"{plan.stem}_seg-subreg_ctd.json")}


def write_case(out: str, plan: PlannedScan, scale: float, spacing: Optional[str] = None) -> dict:
    """Generate and write one planned scan; returns its record (paths relative to ``out``)."""
    t0 = time.time()
    acquisition = {"dir-ax": "ax", "dir-sag": "sag"}.get(plan.entity or "")
    ct, mask, centroids, info = make_case_with_info(plan.scan_seed, scale=scale, fov=plan.fov,
                                                    orientation=plan.orientation, spacing=spacing,
                                                    patient_seed=plan.patient_seed, acquisition=acquisition)
    paths = case_paths(out, plan)
    for p in paths.values():
        os.makedirs(os.path.dirname(p), exist_ok=True)
    _atomic_write_image(ct, paths["ct"])
    _atomic_write_image(mask, paths["mask"])
    write_centroids(paths["ctd"], list(orientation_of(ct)), centroids)
    record = dict(asdict(plan), **{k: os.path.relpath(v, out) for k, v in paths.items()}, **info)
    record["seconds"] = round(time.time() - t0, 2)
    return record


def _write_case_star(args):
    return write_case(*args)


def check_output_dir(out: str, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; with it, remove only what this tool writes there."""
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite (overwrite=True) to replace "
                                  f"its {', '.join(SPLIT_FOLDERS)} folders")
        for name in SPLIT_FOLDERS:
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        if os.path.exists(os.path.join(out, MANIFEST)):
            os.remove(os.path.join(out, MANIFEST))
    elif os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"{out} exists and is not a folder")


def iter_write(out: str, plans: Sequence[PlannedScan], scale: float, num_processes: int = 1,
               spacing: Optional[str] = None) -> Iterator[dict]:
    """Write the planned scans, yielding records in plan order (parallel with ``num_processes`` > 1)."""
    jobs = [(out, p, scale, spacing) for p in plans]
    if num_processes <= 1:
        for job in jobs:
            yield _write_case_star(job)
        return
    # workers ignore Ctrl-C (this process stops them) and die with this process
    with ProcessPoolExecutor(max_workers=num_processes, initializer=worker_initializer,
                             initargs=(os.getpid(),)) as ex:
        yield from ex.map(_write_case_star, jobs)


def write_synthetic_verse(out: str, n_cases: int, seed: int = 0, scale: float = 1.0, num_processes: int = 1,
                          overwrite: bool = False, spacing: Optional[str] = None, progress: bool = False) -> List[dict]:
    """Write ``n_cases`` synthetic scans as a VerSe tree under ``out``; returns one record per scan.

    ``spacing`` forces one spacing kind ("iso1", "thick3", "inplane08") instead of the default mix.
    Identical arguments give identical image arrays.
    """
    if n_cases < 1:
        raise ValueError("n_cases must be >= 1")
    if scale <= 0:
        raise ValueError("scale must be > 0")
    check_output_dir(out, overwrite)
    os.makedirs(out, exist_ok=True)
    for name in SPLIT_FOLDERS:
        os.makedirs(os.path.join(out, name, "rawdata"), exist_ok=True)
        os.makedirs(os.path.join(out, name, "derivatives"), exist_ok=True)
    plans = plan_scans(n_cases, seed)
    it = iter_write(out, plans, scale, num_processes, spacing)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=len(plans), desc="synthetic scans", unit="scan")
    records = list(it)
    manifest = {"generator": "nnunet_vertkd.synthetic", "seed": seed, "scale": scale,
                "n_cases": n_cases, "spacing": spacing, "cases": records}
    tmp = os.path.join(out, f".tmp{os.getpid()}_{MANIFEST}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, default=_json_default)
    os.replace(tmp, os.path.join(out, MANIFEST))
    return records


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
