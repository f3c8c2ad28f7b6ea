"""One case of vertkd_evaluate: read reference and prediction, check their labels, bring the prediction onto the
reference grid and label space, score it (``metrics.evaluate_case``, ``label_shifts``).

Label rules: reference masks follow the converter's rule (26/27 become background with a warning, any other
value that is not a VerSe vertebra label refuses the file; float masks are rounded with a warning); predictions
must be integer instance masks (non-integer, negative values, or values above ``MAX_PREDICTION_LABEL`` for
overlap matching refuse the file). Every refusal is an ``EvaluationInputError`` naming the case and file.
"""
import os
import sys
from multiprocessing import get_context
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import CentroidFileError, read_centroids, transform_centroids
from nnunet_vertkd.evaluation.case_discovery import EvaluationInputError, prediction_label_kind
from nnunet_vertkd.evaluation.label_shifts import label_shifts
from nnunet_vertkd.evaluation.metrics import evaluate_case
from nnunet_vertkd.image_io import ImageReadError, read_image, scalar_3d_problem
from nnunet_vertkd.interrupts import worker_initializer
from nnunet_vertkd.labels import NNUNET_TO_VERSE, VERSE_TO_NNUNET, classify_verse_labels

#: largest label accepted in a prediction for --match overlap (vertkd_predict writes 1..N, N <= MAX_VERTEBRAE)
MAX_PREDICTION_LABEL = 255
#: a float label further than this from an integer is not a label
LABEL_ROUNDING_TOLERANCE = 1e-3
#: grids agree when spacing (relative), direction and origin (this fraction of the smallest spacing) agree
GRID_SPACING_RTOL = 1e-3
GRID_SPACING_ATOL_MM = 1e-4
GRID_DIRECTION_ATOL = 1e-3
GRID_ORIGIN_FRACTION_OF_SPACING = 0.05


def grid_difference(a: sitk.Image, b: sitk.Image) -> Optional[str]:
    """None when ``b`` lies on ``a``'s voxel grid; else how it differs."""
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} vs reference {a.GetSize()}"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=GRID_SPACING_RTOL, atol=GRID_SPACING_ATOL_MM):
        return f"spacing {b.GetSpacing()} vs reference {a.GetSpacing()}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=GRID_DIRECTION_ATOL):
        return f"direction {b.GetDirection()} vs reference {a.GetDirection()}"
    tol = GRID_ORIGIN_FRACTION_OF_SPACING * min(a.GetSpacing())
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol):
        return f"origin {b.GetOrigin()} vs reference {a.GetOrigin()}"
    return None


def _remap(arr: np.ndarray, mapping: Dict[int, int], what: str) -> np.ndarray:
    out = np.zeros(arr.shape, dtype=np.int32)
    for v in np.unique(arr):
        v = int(v)
        if v == 0:
            continue
        if v not in mapping:
            raise EvaluationInputError(f"{what}: label {v} has no entry in the nnU-Net -> VerSe mapping")
        out[arr == v] = mapping[v]
    return out


def read_labels(path: str, what: str, warnings: Optional[List[str]] = None) -> Tuple[sitk.Image, np.ndarray]:
    """Read a label image (``image_io.read_image``); unreadable, truncated or non-3D files raise
    EvaluationInputError naming the file. Returns the image and its (not yet validated) array ([k, j, i]; float
    arrays are left as they are). Header warnings (no qform/sform) go to ``warnings``."""
    try:
        img, header_warnings = read_image(path)
    except ImageReadError as e:
        raise EvaluationInputError(f"{what}: {e}") from None
    not_3d = scalar_3d_problem(img)
    if not_3d:
        raise EvaluationInputError(f"{what} {path}: not a 3D label image ({not_3d})")
    if warnings is not None:
        warnings.extend(f"{what} {path}: {w}" for w in header_warnings)
    return img, sitk.GetArrayFromImage(img)


def integer_labels(arr: np.ndarray, what: str, warnings: Optional[List[str]]) -> np.ndarray:
    """int32 labels of a mask: NaN/inf always refused; non-integer float values rounded with a warning when
    ``warnings`` is a list (references, as the converter does), refused when it is None (predictions: rounding
    2.5 could merge two instances)."""
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int32)
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"{what}: NaN or infinite values, not a label image")
    rounded = np.rint(arr)  # VerSe masks are sometimes stored as float64
    off = float(np.max(np.abs(arr - rounded))) if arr.size else 0.0
    if off > LABEL_ROUNDING_TOLERANCE:
        values = np.unique(arr[np.abs(arr - rounded) > LABEL_ROUNDING_TOLERANCE])[:5]
        if warnings is None:
            raise EvaluationInputError(f"{what}: non-integer label values {[float(v) for v in values]}: not an "
                                       f"instance mask (rounding could merge two vertebrae)")
        warnings.append(f"{what}: non-integer label values (up to {off:.3g} away) rounded")
    if rounded.size and (rounded.max() > np.iinfo(np.int32).max or rounded.min() < np.iinfo(np.int32).min):
        raise EvaluationInputError(f"{what}: label values out of range")
    return rounded.astype(np.int32)


def check_reference_labels(ref: np.ndarray, what: str, warnings: List[str]) -> np.ndarray:
    """The converter's rule on VerSe labels: 26/27 become background (warning); any other value that is not a
    vertebra label (99, 255, negative ...) means the file is not a VerSe vertebra mask: refused."""
    kept, dropped, unknown = classify_verse_labels(np.unique(ref))
    if unknown:
        raise EvaluationInputError(
            f"{what}: label values {unknown} are not VerSe vertebra labels (1-25, 28; 26/27 are ignored): not a "
            f"vertebra mask (a sub-region mask, a wrong file?)")
    if dropped:
        warnings.append(f"{what}: labels {dropped} (26 sacrum, 27 coccyx) are not vertebrae; set to background")
        ref = np.where(np.isin(ref, dropped), 0, ref).astype(np.int32)
    return ref


def check_prediction_labels(pred: np.ndarray, what: str, match: str, pred_labels: str) -> None:
    values = [int(v) for v in np.unique(pred) if v != 0]
    negative = [v for v in values if v < 0]
    if negative:
        raise EvaluationInputError(f"{what}: negative label values {negative[:5]}: not an instance mask")
    if match == "label" and pred_labels == "verse":
        bad = [v for v in values if v not in VERSE_TO_NNUNET]
        if bad:
            raise EvaluationInputError(f"{what}: label values {bad[:5]} are not VerSe vertebra labels (1-25, 28) "
                                       f"for --match label --pred-labels verse")
    elif match in ("overlap", "auto"):  # auto: checked again with "label" when it resolves to label matching
        bad = [v for v in values if v > MAX_PREDICTION_LABEL]
        if bad:
            raise EvaluationInputError(f"{what}: label values {bad[:5]} above {MAX_PREDICTION_LABEL}: not a "
                                       f"vertebra instance mask (vertkd_predict writes 1..N from the top)")


def _read_ctd(path: str, case: str):
    try:
        return read_centroids(path)
    except (CentroidFileError, OSError) as e:
        raise EvaluationInputError(f"case {case}: {e}") from None


def evaluate_pair(job: dict) -> Tuple[str, dict]:
    """Evaluate one case; ``job`` holds case, ref/pred entries ({'mask', 'ctd'}), nnunet_to_verse, match,
    pred_labels, resample_pred, use_centroid_files. Returns (case, result dict)."""
    case = job["case"]
    warnings: List[str] = []
    ref_what = f"case {case}: reference {job['ref']['mask']}"
    ref_img, ref = read_labels(job["ref"]["mask"], f"case {case}: reference", warnings)
    ref = integer_labels(ref, ref_what, warnings)
    if job["nnunet_to_verse"] is not None:
        ref = _remap(ref, job["nnunet_to_verse"], ref_what)
    ref = check_reference_labels(ref, ref_what, warnings)
    spacing = tuple(reversed(ref_img.GetSpacing()))
    ref_ctd = None
    if job["use_centroid_files"] and job["ref"].get("ctd"):
        _, ref_ctd = _read_ctd(job["ref"]["ctd"], case)
        present = {int(v) for v in np.unique(ref)}
        ref_ctd = {k: v for k, v in ref_ctd.items() if k in present}
    note = None
    pred_ctd = None
    if job.get("pred") is None:
        pred = np.zeros_like(ref)
        note = "no prediction"
    else:
        pred_what = f"case {case}: prediction {job['pred']['mask']}"
        pred_img, pred = read_labels(job["pred"]["mask"], f"case {case}: prediction", warnings)
        pred = integer_labels(pred, pred_what, None)
        check_prediction_labels(pred, pred_what, job["match"], job["pred_labels"])
        if job["use_centroid_files"] and job["pred"].get("ctd"):
            _, pred_ctd = _read_ctd(job["pred"]["ctd"], case)
        diff = grid_difference(ref_img, pred_img)
        if diff is not None:
            if not job["resample_pred"]:
                raise EvaluationInputError(
                    f"case {case}: prediction {job['pred']['mask']} is not on the reference grid ({diff}); "
                    "predict on the reference image's grid or pass --resample-pred")
            res = sitk.Resample(pred_img, ref_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            if pred_ctd:
                pred_ctd = transform_centroids(pred_ctd, pred_img, ref_img)
            pred = integer_labels(sitk.GetArrayFromImage(res), pred_what, None)
            note = "resampled"
        if job["pred_labels"] == "nnunet":
            pred = _remap(pred, NNUNET_TO_VERSE, f"prediction {job['pred']['mask']}")
            if pred_ctd:
                pred_ctd = {NNUNET_TO_VERSE[k]: v for k, v in pred_ctd.items() if k in NNUNET_TO_VERSE}
    match = job["match"]
    if match == "auto":  # label matching when vertkd_predict's record says the prediction has VerSe labels
        match = "label" if job.get("pred") and prediction_label_kind(job["pred"]["mask"]) == "verse" else "overlap"
        if match == "label":
            check_prediction_labels(pred, f"case {case}: prediction", match, job["pred_labels"])
    result = evaluate_case(ref, pred, spacing, match=match, ref_centroids=ref_ctd,
                           pred_centroids=pred_ctd, ref_labels="verse")
    if match == "label":
        result.update(label_shifts(ref, pred))
    result["note"] = note
    result["warnings"] = warnings
    result["reference_file"] = job["ref"]["mask"]
    result["prediction_file"] = job["pred"]["mask"] if job.get("pred") else None
    return case, result


def evaluate_pairs(jobs: Sequence[dict], num_processes: int = 1, progress: bool = True) -> Dict[str, dict]:
    """{case: result} of ``evaluate_pair`` for every job; in ``num_processes`` worker processes when > 1 (they
    ignore Ctrl-C and die with this process: ``interrupts.worker_initializer``)."""
    results: Dict[str, dict] = {}
    if num_processes > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(min(num_processes, len(jobs)), initializer=worker_initializer,
                                       initargs=(os.getpid(),)) as pool:
            for case, res in _progress(pool.imap_unordered(evaluate_pair, jobs), len(jobs), progress):
                results[case] = res
    else:
        for case, res in _progress(map(evaluate_pair, jobs), len(jobs), progress):
            results[case] = res
    return results


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc="vertkd_evaluate", unit="case", file=sys.stderr)
    except ImportError:  # pragma: no cover
        return iterable
