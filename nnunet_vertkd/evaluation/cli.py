"""``vertkd_evaluate``: VerSe metrics of predicted vertebra instance masks against a reference.

See docs/evaluation.md for the full description (formats, matching, conventions, output files).
"""
import argparse
import glob
import json
import multiprocessing
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import CentroidFileError, read_centroids
from nnunet_vertkd.evaluation.aggregate import format_table, write_outputs
from nnunet_vertkd.evaluation.metrics import evaluate_case
from nnunet_vertkd.evaluation.label_shifts import label_shifts
from nnunet_vertkd.image_checks import is_nifti, nifti_truncation_problem
from nnunet_vertkd.labels import NNUNET_TO_VERSE, VERSE_TO_NNUNET, classify_verse_labels

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")
# suffixes stripped (repeatedly) from a file stem to get the case id
CASE_SUFFIXES = ("_seg-vert_msk", "_seg-subreg_ctd", "_seg-vert_ctd", "_seg", "_msk", "_ctd", "_ct", "_0000")
VERSE_MASK_PATTERNS = ("*_seg-vert_msk.nii.gz", "*_seg-vert_msk.nii", "*_seg.nii.gz", "*_seg.nii")


class EvaluationInputError(ValueError):
    """Inputs that cannot be evaluated (the message names the case or file)."""


def prediction_label_kind(mask_path: str) -> Optional[str]:
    """'verse', 'sequential', ... from vertkd_predict's {case}_record.json beside the mask; None without one."""
    folder = os.path.dirname(mask_path)
    # vertkd_predict writes {case}.nii.gz and {case}_record.json ({case} may end in _ct, which case_id strips)
    for stem in (strip_ending(os.path.basename(mask_path)), case_id(mask_path)):
        try:
            with open(os.path.join(folder, stem + "_record.json"), encoding="utf-8") as f:
                return json.load(f).get("labels")
        except (OSError, ValueError, AttributeError):
            continue
    return None


def strip_ending(name: str) -> str:
    for e in IMAGE_ENDINGS + (".json",):
        if name.endswith(e):
            return name[: -len(e)]
    return name


def case_id(path: str) -> str:
    """Case identifier of a file: its stem without VerSe (_ct, _seg-vert_msk, _seg, _ctd) and nnU-Net (_0000)
    suffixes, e.g. 'sub-verse500_dir-ax_seg-vert_msk.nii.gz' -> 'sub-verse500_dir-ax'."""
    stem = strip_ending(os.path.basename(path))
    changed = True
    while changed:
        changed = False
        for s in CASE_SUFFIXES:
            if stem.endswith(s) and len(stem) > len(s):
                stem = stem[: -len(s)]
                changed = True
    return stem


def _is_image(name: str) -> bool:
    return name.endswith(IMAGE_ENDINGS)


def _verse_ctd_for(mask_path: str) -> Optional[str]:
    d = os.path.dirname(mask_path)
    c = case_id(mask_path)
    for suffix in ("_seg-subreg_ctd.json", "_seg-vert_ctd.json", "_ctd.json"):
        p = os.path.join(d, c + suffix)
        if os.path.isfile(p):
            return p
    return None


def _find_dataset_json(folder: str) -> Optional[str]:
    for d in (folder, os.path.dirname(os.path.abspath(folder))):
        p = os.path.join(d, "dataset.json")
        if os.path.isfile(p):
            return p
    return None


def _nnunet_mapping(folder: str) -> Tuple[Dict[int, int], str]:
    dj = _find_dataset_json(folder)
    if dj is None:
        return dict(NNUNET_TO_VERSE), "no dataset.json beside or above the labels: package default mapping"
    with open(dj, encoding="utf-8") as f:
        content = json.load(f)
    m = (content.get("vertkd") or {}).get("nnunet_to_verse")
    if not m:
        return dict(NNUNET_TO_VERSE), f"{dj} has no vertkd.nnunet_to_verse: package default mapping"
    return {int(k): int(v) for k, v in m.items()}, f"mapping from {dj}"


def _looks_verse(path: str) -> bool:
    if os.path.isfile(path):
        return os.path.basename(path).endswith(tuple(p[1:] for p in VERSE_MASK_PATTERNS))
    return any(glob.glob(os.path.join(path, "**", p), recursive=True) for p in VERSE_MASK_PATTERNS)


def find_reference_cases(ref: str, ref_format: str = "auto") -> Tuple[str, Dict[str, dict], Optional[Dict[int, int]], str]:
    """(format, {case: {'mask', 'ctd'}}, nnunet_to_verse mapping or None, note) for a REF file or folder."""
    if not os.path.exists(ref):
        raise EvaluationInputError(f"reference {ref} does not exist")
    fmt = ref_format
    if fmt == "auto":
        fmt = "verse" if _looks_verse(ref) else "nnunet"
    cases: Dict[str, dict] = {}
    if fmt == "verse":
        if os.path.isfile(ref):
            masks = [ref]
        else:
            masks = sorted({p for pat in VERSE_MASK_PATTERNS
                            for p in glob.glob(os.path.join(ref, "**", pat), recursive=True)})
        for m in masks:
            c = case_id(m)
            if c in cases:
                raise EvaluationInputError(f"case {c} appears twice in the reference: {cases[c]['mask']} and {m}")
            cases[c] = {"mask": m, "ctd": _verse_ctd_for(m)}
        return fmt, cases, None, "VerSe labels"
    if fmt == "nnunet":
        folder = os.path.dirname(os.path.abspath(ref)) if os.path.isfile(ref) else ref
        files = [ref] if os.path.isfile(ref) else sorted(
            os.path.join(ref, f) for f in os.listdir(ref) if _is_image(f) and not f.startswith("."))
        for m in files:
            c = case_id(m)
            ctd = os.path.join(os.path.dirname(m), c + "_ctd.json")
            cases[c] = {"mask": m, "ctd": ctd if os.path.isfile(ctd) else None}
        mapping, note = _nnunet_mapping(folder)
        return fmt, cases, mapping, note
    raise EvaluationInputError(f"unknown reference format {ref_format!r} (verse, nnunet or auto)")


def find_prediction_cases(pred: str) -> Dict[str, dict]:
    """{case: {'mask', 'ctd'}} for a PRED file or folder of vertkd_predict outputs ({case}.nii.gz, {case}_ctd.json)."""
    if not os.path.exists(pred):
        raise EvaluationInputError(f"prediction {pred} does not exist")
    # vertkd_predict also writes {case}_spine.nii.gz (spine probability) and hidden temporaries: skipped
    files = [pred] if os.path.isfile(pred) else sorted(
        os.path.join(pred, f) for f in os.listdir(pred)
        if _is_image(f) and not f.startswith(".") and strip_ending(f).split("_")[-1] != "spine")
    cases = {}
    for m in files:
        c = case_id(m)
        if c in cases:
            raise EvaluationInputError(f"case {c} has two predictions: {cases[c]['mask']} and {m}")
        ctd = os.path.join(os.path.dirname(m), c + "_ctd.json")
        cases[c] = {"mask": m, "ctd": ctd if os.path.isfile(ctd) else None}
    return cases


def _grid_difference(a: sitk.Image, b: sitk.Image) -> Optional[str]:
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} vs reference {a.GetSize()}"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-3, atol=1e-4):
        return f"spacing {b.GetSpacing()} vs reference {a.GetSpacing()}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-3):
        return f"direction {b.GetDirection()} vs reference {a.GetDirection()}"
    tol = 0.05 * min(a.GetSpacing())
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


def _read_labels(path: str, what: str = "mask") -> Tuple[sitk.Image, np.ndarray]:
    """Read a label image; unreadable, truncated or non-3D files raise EvaluationInputError naming the file.
    Returns the image and its (not yet validated) array ([k, j, i]; float arrays are left as they are)."""
    if is_nifti(path):
        problem = nifti_truncation_problem(path)
        if problem:
            raise EvaluationInputError(f"{what} {path}: cannot read it: {problem}")
    try:
        img = sitk.ReadImage(path)
        arr = sitk.GetArrayFromImage(img)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "rror" in ln), lines[0] if lines else "")
        raise EvaluationInputError(f"{what} {path}: cannot read it (corrupt or not an image: {detail[:200]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationInputError(f"{what} {path}: not a 3D label image (dimension {img.GetDimension()}, "
                                   f"{img.GetNumberOfComponentsPerPixel()} components)")
    return img, arr


def _integer_labels(arr: np.ndarray, what: str, warnings: Optional[List[str]]) -> np.ndarray:
    """int32 labels of a mask: NaN/inf always refused; non-integer float values rounded with a warning when
    ``warnings`` is a list (references, as the converter does), refused when it is None (predictions: rounding
    2.5 could merge two instances)."""
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int32)
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"{what}: NaN or infinite values, not a label image")
    rounded = np.rint(arr)  # VerSe masks are sometimes stored as float64
    off = float(np.max(np.abs(arr - rounded))) if arr.size else 0.0
    if off > 1e-3:
        values = np.unique(arr[np.abs(arr - rounded) > 1e-3])[:5]
        if warnings is None:
            raise EvaluationInputError(f"{what}: non-integer label values {[float(v) for v in values]}: not an "
                                       f"instance mask (rounding could merge two vertebrae)")
        warnings.append(f"{what}: non-integer label values (up to {off:.3g} away) rounded")
    if rounded.size and (rounded.max() > np.iinfo(np.int32).max or rounded.min() < np.iinfo(np.int32).min):
        raise EvaluationInputError(f"{what}: label values out of range")
    return rounded.astype(np.int32)


def _check_reference_labels(ref: np.ndarray, what: str, warnings: List[str]) -> np.ndarray:
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


#: largest label accepted in a prediction for --match overlap (vertkd_predict writes 1..N, N <= MAX_VERTEBRAE)
MAX_PREDICTION_LABEL = 255


def _check_prediction_labels(pred: np.ndarray, what: str, match: str, pred_labels: str) -> None:
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


def _transform_centroids(ctd: Dict[int, tuple], src: sitk.Image, dst: sitk.Image) -> Dict[int, tuple]:
    out = {}
    for lab, xyz in ctd.items():
        phys = src.TransformContinuousIndexToPhysicalPoint([float(c) for c in xyz])
        out[lab] = tuple(dst.TransformPhysicalPointToContinuousIndex(phys))
    return out


def _read_ctd(path: str, case: str):
    try:
        return read_centroids(path)
    except (CentroidFileError, OSError) as e:
        raise EvaluationInputError(f"case {case}: {e}") from None


def evaluate_pair(job: dict) -> Tuple[str, dict]:
    """Evaluate one case; ``job`` holds case, ref/pred entries, settings. Returns (case, result dict)."""
    case = job["case"]
    warnings: List[str] = []
    ref_what = f"case {case}: reference {job['ref']['mask']}"
    ref_img, ref = _read_labels(job["ref"]["mask"], f"case {case}: reference")
    ref = _integer_labels(ref, ref_what, warnings)
    if job["nnunet_to_verse"] is not None:
        ref = _remap(ref, job["nnunet_to_verse"], ref_what)
    ref = _check_reference_labels(ref, ref_what, warnings)
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
        pred_img, pred = _read_labels(job["pred"]["mask"], f"case {case}: prediction")
        pred = _integer_labels(pred, pred_what, None)
        _check_prediction_labels(pred, pred_what, job["match"], job["pred_labels"])
        if job["use_centroid_files"] and job["pred"].get("ctd"):
            _, pred_ctd = _read_ctd(job["pred"]["ctd"], case)
        diff = _grid_difference(ref_img, pred_img)
        if diff is not None:
            if not job["resample_pred"]:
                raise EvaluationInputError(
                    f"case {case}: prediction {job['pred']['mask']} is not on the reference grid ({diff}); "
                    "predict on the reference image's grid or pass --resample-pred")
            res = sitk.Resample(pred_img, ref_img,
                                sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            if pred_ctd:
                pred_ctd = _transform_centroids(pred_ctd, pred_img, ref_img)
            pred = _integer_labels(sitk.GetArrayFromImage(res), pred_what, None)
            note = "resampled"
        if job["pred_labels"] == "nnunet":
            pred = _remap(pred, NNUNET_TO_VERSE, f"prediction {job['pred']['mask']}")
            if pred_ctd:
                pred_ctd = {NNUNET_TO_VERSE[k]: v for k, v in pred_ctd.items() if k in NNUNET_TO_VERSE}
    match = job["match"]
    if match == "auto":  # label matching when vertkd_predict's record says the prediction has VerSe labels
        match = "label" if job.get("pred") and prediction_label_kind(job["pred"]["mask"]) == "verse" else "overlap"
        if match == "label":
            _check_prediction_labels(pred, f"case {case}: prediction", match, job["pred_labels"])
    result = evaluate_case(ref, pred, spacing, match=match, ref_centroids=ref_ctd,
                           pred_centroids=pred_ctd, ref_labels="verse")
    if match == "label":
        result.update(label_shifts(ref, pred))
    result["note"] = note
    result["warnings"] = warnings
    result["reference_file"] = job["ref"]["mask"]
    result["prediction_file"] = job["pred"]["mask"] if job.get("pred") else None
    return case, result


def _progress(iterable, total):
    try:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc="vertkd_evaluate", unit="case", file=sys.stderr)
    except ImportError:  # pragma: no cover
        return iterable


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vertkd_evaluate",
        description="VerSe metrics of predicted vertebra instance masks: per vertebra Dice, Hausdorff distance, "
                    "ASSD GT->pred and pred->GT, failure (Dice < 50%); per scan identification rate and d_mean "
                    "(VerSe: predicted centroid closest and < 20 mm); summaries per scan, region and overall. "
                    "Writes OUT/summary.json, OUT/per_vertebra.csv, OUT/summary.md and prints the table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-ref", "--ref", required=True,
                   help="reference: a VerSe tree/folder (*_seg-vert_msk.nii.gz or *_seg.nii.gz + *_ctd.json, "
                        "searched recursively), an nnU-Net labelsTr/labelsTs folder (dataset.json beside or above "
                        "it), or a single mask file")
    p.add_argument("-pred", "--pred", required=True,
                   help="predictions: folder of {case}.nii.gz instance masks (+ {case}_ctd.json) as written by "
                        "vertkd_predict, or a single file (paired with a single REF file)")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: PRED/vertkd_evaluation, or beside a single PRED file)")
    p.add_argument("--ref-format", choices=("auto", "verse", "nnunet"), default="auto",
                   help="reference format; auto = verse when *_seg-vert_msk / *_seg masks are found")
    p.add_argument("--match", choices=("auto", "overlap", "label"), default="auto",
                   help="pair predicted instances with reference vertebrae by a one-to-one overlap assignment, or "
                        "by label (only when the prediction carries anatomical labels: VerSe's id.rate, and label "
                        "shifts per scan); auto = label when vertkd_predict's {case}_record.json says "
                        "labels = verse, overlap otherwise")
    p.add_argument("--pred-labels", choices=("verse", "nnunet"), default="verse",
                   help="label space of the prediction for --match label: VerSe labels, or consecutive nnU-Net "
                        "labels (1=C1 ... 26=L6) remapped to VerSe")
    p.add_argument("--resample-pred", action="store_true",
                   help="resample (nearest neighbour) predictions that are not on the reference grid instead of "
                        "stopping with an error")
    p.add_argument("--centroids-from-masks", action="store_true",
                   help="ignore *_ctd.json files and compute all centroids as mask centres of mass")
    p.add_argument("--num-processes", "-np", type=int, default=1, help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed table")
    return p


def run(args) -> dict:
    fmt, ref_cases, mapping, map_note = find_reference_cases(args.ref, args.ref_format)
    if not ref_cases:
        raise EvaluationInputError(f"no reference masks found in {args.ref} (format {fmt})")
    pred_cases = find_prediction_cases(args.pred)
    single = os.path.isfile(args.ref) and os.path.isfile(args.pred)
    if single:
        (rc,) = ref_cases
        pred_cases = {rc: next(iter(pred_cases.values()))}
    out = args.output or (os.path.join(args.pred, "vertkd_evaluation") if os.path.isdir(args.pred)
                          else os.path.join(os.path.dirname(os.path.abspath(args.pred)), "vertkd_evaluation"))
    missing_predictions = sorted(c for c in ref_cases if c not in pred_cases)
    unreferenced = sorted(c for c in pred_cases if c not in ref_cases)
    jobs = [{"case": c, "ref": ref_cases[c], "pred": pred_cases.get(c), "nnunet_to_verse": mapping,
             "match": args.match, "pred_labels": args.pred_labels, "resample_pred": args.resample_pred,
             "use_centroid_files": not args.centroids_from_masks} for c in sorted(ref_cases)]
    results: Dict[str, dict] = {}
    if args.num_processes > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(args.num_processes, len(jobs))) as pool:
            it = pool.imap_unordered(evaluate_pair, jobs)
            for case, res in (it if args.quiet else _progress(it, len(jobs))):
                results[case] = res
    else:
        it = map(evaluate_pair, jobs)
        for case, res in (it if args.quiet else _progress(it, len(jobs))):
            results[case] = res
    info = {"settings": {"reference": os.path.abspath(args.ref), "prediction": os.path.abspath(args.pred),
                         "ref_format": fmt, "label_mapping": map_note, "match": args.match,
                         "pred_labels": args.pred_labels, "resample_pred": args.resample_pred,
                         "centroids_from_masks": args.centroids_from_masks},
            "missing_predictions": missing_predictions, "unreferenced_predictions": unreferenced,
            "output": os.path.abspath(out)}
    summary = write_outputs(out, results, info)
    if not args.quiet:
        print(format_table(summary))
        if missing_predictions:
            print(f"No prediction for {len(missing_predictions)} reference case(s) (counted as all vertebrae "
                  f"missing): {', '.join(missing_predictions)}")
        if unreferenced:
            print(f"Predictions without reference (ignored): {', '.join(unreferenced)}")
        for case in sorted(results):
            for w in results[case].get("warnings") or []:
                print(f"warning: {w}")
        print(f"Wrote {os.path.join(out, 'summary.json')}, per_vertebra.csv and summary.md")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except EvaluationInputError as e:
        print(f"vertkd_evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
