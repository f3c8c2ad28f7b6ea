"""splits_final.json for the converted datasets: the official VerSe split plus a patient-grouped cross-validation.

* fold 0: official training scans vs official validation scans. A patient with scans in both official sets
  (possible when VerSe'19 and VerSe'20 folders are mixed) is moved entirely to the training side, so no
  patient is ever on both sides.
* folds 1-4: 4-fold cross-validation over training + validation, grouped by patient (all scans of a patient
  in the same validation fold), patients assigned greedily to balance the number of scans, deterministic
  (fixed seed).

Degenerate inputs get a usable file and a note: without official validation scans fold 0 repeats fold 1;
with fewer than 4 patients the CV folds repeat; with a single patient train = val = all scans.
Test scans (imagesTs) are never in the splits.
"""
import json
import os
import random
from typing import Dict, List, Sequence, Tuple

from .verse_discovery import TRAIN, VALIDATION

N_CV_FOLDS = 4
SPLIT_SEED = 12345


def make_splits(cases: Sequence[Tuple[str, str, str]], n_cv_folds: int = N_CV_FOLDS,
                seed: int = SPLIT_SEED) -> Tuple[List[Dict[str, List[str]]], List[str]]:
    """``cases``: (case_id, patient, official split) for training and validation scans.

    Returns (splits in nnU-Net's splits_final.json format: 1 + n_cv_folds dicts {"train", "val"}, notes).
    """
    notes: List[str] = []
    cases = sorted((c, p, s) for c, p, s in cases if s in (TRAIN, VALIDATION))
    if not cases:
        return [], ["no training or validation scans: no splits written"]
    by_patient: Dict[str, List[str]] = {}
    for case_id, patient, _ in cases:
        by_patient.setdefault(patient, []).append(case_id)
    patients = sorted(by_patient)

    # folds 1..n: patient-grouped CV
    if len(patients) == 1:
        all_cases = [c for c, _, _ in cases]
        cv = [{"train": list(all_cases), "val": list(all_cases)} for _ in range(n_cv_folds)]
        notes.append(f"only one patient ({patients[0]}): cross-validation impossible, folds 1-{n_cv_folds} "
                     "use all scans for both training and validation")
    else:
        n_groups = min(n_cv_folds, len(patients))
        if n_groups < n_cv_folds:
            notes.append(f"only {len(patients)} patients: {n_groups} distinct cross-validation folds, "
                         f"folds {n_groups + 1}-{n_cv_folds} repeat them")
        order = list(patients)
        random.Random(seed).shuffle(order)
        rank = {p: i for i, p in enumerate(order)}
        groups: List[List[str]] = [[] for _ in range(n_groups)]
        sizes = [0] * n_groups
        for patient in sorted(patients, key=lambda p: (-len(by_patient[p]), rank[p])):
            g = min(range(n_groups), key=lambda i: (sizes[i], i))
            groups[g].append(patient)
            sizes[g] += len(by_patient[patient])
        cv = []
        for k in range(n_cv_folds):
            val_patients = set(groups[k % n_groups])
            cv.append({"train": sorted(c for c, p, _ in cases if p not in val_patients),
                       "val": sorted(c for c, p, _ in cases if p in val_patients)})

    # fold 0: official split, patient-grouped
    val_patients = {p for _, p, s in cases if s == VALIDATION}
    train_patients = {p for _, p, s in cases if s == TRAIN}
    both = sorted(val_patients & train_patients)
    if both:
        notes.append(f"patients {both} have scans in both official training and validation: all their scans "
                     "are on the training side of fold 0")
    fold0 = {"train": sorted(c for c, p, _ in cases if p in train_patients),
             "val": sorted(c for c, p, _ in cases if p not in train_patients)}
    if not fold0["val"] or not fold0["train"]:
        notes.append("no official " + ("validation" if not fold0["val"] else "training")
                     + " scans: fold 0 repeats fold 1 (patient-grouped)")
        fold0 = dict(cv[0])
    return [fold0] + cv, notes


def write_json_atomic(path: str, content) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
