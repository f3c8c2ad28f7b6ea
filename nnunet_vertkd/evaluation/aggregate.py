"""Summaries of ``evaluate_case`` results: per scan, per region (cervical/thoracic/lumbar) and overall.

Statistics follow the paper's Table 3 (mean ± std) and the VerSe benchmark:

* Vertebra-level metrics (Dice, HD, ASSD GT→pred, ASSD pred→GT, failure rate) are pooled over vertebrae:
  Dice and failure over **all** reference vertebrae (a missing vertebra has Dice 0 and is a failure), HD and
  ASSD over the **matched** vertebrae only (VerSe'20 convention for missing predictions).
* Scan-level metrics (loc.rate, id.rate, d_mean) are computed per scan and then averaged over scans (VerSe
  reports the mean over the scans of a set). For a region, a scan's rates/d_mean use only its vertebrae of
  that region, and scans without vertebrae of that region are left out. loc.rate is the localisation rate
  (centroid closest and within 20 mm, vertebrae matched by overlap or label); id.rate, VerSe's identification
  rate, exists only when the prediction is matched by label (``metrics`` module docstring).
* std is the population standard deviation (``numpy.std``, ddof=0); ``n`` says how many values entered.
  Percentages (Dice, failure, id.rate) are reported in %, distances in mm.

This module is the one place where metrics are pooled: ``summarize`` (vertkd_evaluate's summary.json) and
``pool_vertebrae`` (the vertebra-level part, also for rows read back from per_vertebra.csv with
``rows_from_csv``, as the distillation study does). ``report`` writes and prints the results.
"""
import math
from typing import Dict, Iterable, List, Optional

import numpy as np

from nnunet_vertkd.labels import REGIONS, VERSE_LABEL_NAMES

PER_VERTEBRA_COLUMNS = ["case", "label", "name", "region", "matched_pred_label", "dice", "hd_mm",
                        "assd_ref_to_pred_mm", "assd_pred_to_ref_mm", "failed", "centroid_distance_mm",
                        "localised", "identified"]


def mean_std(values: Iterable[Optional[float]], scale: float = 1.0) -> dict:
    """{'mean', 'std', 'n'} of the finite values (None/nan/inf skipped), multiplied by ``scale``."""
    vals = [float(v) * scale for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}


def pool_vertebrae(rows: Iterable[dict]) -> dict:
    """Vertebra-level pooling of per-vertebra rows (as ``per_vertebra_rows`` gives them, or read back from
    per_vertebra.csv with ``rows_from_csv``): Dice (%) and failure rate over all reference vertebrae (a missing
    vertebra counts with Dice 0 and as a failure), HD and ASSD (mm) over the matched ones."""
    rows = list(rows)
    matched = [r for r in rows if r.get("matched_pred_label") is not None]
    n = len(rows)
    return {
        "n_vertebrae": n,
        "n_missing": n - len(matched),
        "dice_pct": mean_std((0.0 if r.get("dice") is None else r["dice"] for r in rows), 100.0),
        "hd_mm": mean_std(r.get("hd_mm") for r in matched),
        "assd_ref_to_pred_mm": mean_std(r.get("assd_ref_to_pred_mm") for r in matched),
        "assd_pred_to_ref_mm": mean_std(r.get("assd_pred_to_ref_mm") for r in matched),
        "failure_rate_pct": (100.0 * sum(bool(r.get("failed")) for r in rows) / n) if n else None,
    }


def _group_stats(rows: List[dict]) -> dict:
    """Stats for a group of per-vertebra rows (each row has a 'case' key): ``pool_vertebrae`` plus the scan-level
    rates and d_mean averaged over the scans of the group."""
    per_scan_loc, per_scan_id, per_scan_d = [], [], []
    by_case: Dict[str, List[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    for case, rs in by_case.items():
        per_scan_loc.append(sum(bool(r.get("localised")) for r in rs) / len(rs))
        if all(r.get("identified") is not None for r in rs):
            per_scan_id.append(sum(bool(r["identified"]) for r in rs) / len(rs))
        d = [r["centroid_distance_mm"] for r in rs if r["centroid_distance_mm"] is not None]
        if d:
            per_scan_d.append(float(np.mean(d)))
    vertebrae = pool_vertebrae(rows)
    n = vertebrae["n_vertebrae"]
    return {
        "n_vertebrae": n,
        "n_scans": len(by_case),
        **{k: v for k, v in vertebrae.items() if k != "n_vertebrae"},
        "localisation_rate_pct": mean_std(per_scan_loc, 100.0),
        "id_rate_pct": mean_std(per_scan_id, 100.0),
        "d_mean_mm": mean_std(per_scan_d),
        "localised_pooled_pct": (100.0 * sum(bool(r.get("localised")) for r in rows) / n) if n else None,
    }


def per_vertebra_rows(case_results: Dict[str, dict]) -> List[dict]:
    """Flat rows (one per reference vertebra of every scan) with the columns ``PER_VERTEBRA_COLUMNS``."""
    rows = []
    for case in sorted(case_results):
        for r in case_results[case]["per_vertebra"]:
            row = {"case": case, "name": VERSE_LABEL_NAMES.get(r["label"], str(r["label"]))
                   if r.get("region") else str(r["label"])}
            row.update({k: r.get(k) for k in PER_VERTEBRA_COLUMNS if k not in ("case", "name")})
            rows.append(row)
    return rows


_INTEGER_COLUMNS = ("label", "matched_pred_label")
_NUMBER_COLUMNS = ("dice", "hd_mm", "assd_ref_to_pred_mm", "assd_pred_to_ref_mm", "centroid_distance_mm")
_FLAG_COLUMNS = ("failed", "localised", "identified")


def rows_from_csv(rows: Iterable[dict]) -> List[dict]:
    """Rows read from per_vertebra.csv (``csv.DictReader``: all strings) back as ``per_vertebra_rows`` wrote them:
    '' -> None, numbers -> int/float (non-finite -> None), 'True'/'False' -> bool."""
    def number(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None

    out = []
    for r in rows:
        row = dict(r)
        for k in _INTEGER_COLUMNS:
            v = number(row.get(k))
            row[k] = None if v is None else int(v)
        for k in _NUMBER_COLUMNS:
            row[k] = number(row.get(k))
        for k in _FLAG_COLUMNS:
            v = str(row.get(k) or "").strip().lower()
            row[k] = None if v == "" else v in ("true", "1", "yes")
        out.append(row)
    return out


def summarize(case_results: Dict[str, dict], extra_info: Optional[dict] = None) -> dict:
    """The summary dict written to summary.json: 'overall', 'regions', 'cases' (+ ``extra_info``)."""
    rows = per_vertebra_rows(case_results)
    overall = _group_stats(rows)
    overall["n_scans"] = len(case_results)
    overall["n_extra"] = sum(len(r["extra"]) for r in case_results.values())
    overall["scan_dice_pct"] = mean_std((r["dice_mean"] for r in case_results.values()), 100.0)
    labelled = [r for r in case_results.values() if r.get("scan_shift") is not None]  # label matching only
    overall["n_scans_labelled"] = len(labelled)
    overall["n_scans_shifted_as_whole"] = sum(bool(r.get("shifted_as_whole")) for r in labelled)
    overall["n_scans_with_label_shifts"] = sum(r.get("n_label_shifted", 0) > 0 for r in labelled)
    regions = {}
    for region in REGIONS:
        rr = [r for r in rows if r["region"] == region]
        if rr:
            regions[region] = _group_stats(rr)
    cases = {}
    for case in sorted(case_results):
        res = case_results[case]
        cases[case] = {k: res.get(k) for k in ("n_ref", "n_pred", "n_localised", "localisation_rate",
                                                "n_identified", "id_rate", "d_mean_mm",
                                                "dice_mean", "hd_mean_mm", "assd_ref_to_pred_mean_mm",
                                                "assd_pred_to_ref_mean_mm", "failure_rate", "missing",
                                                "extra", "match", "note", "warnings", "scan_shift",
                                                "n_label_shifted", "shifted_as_whole", "label_shifts")}
    summary = {"overall": overall, "regions": regions, "cases": cases}
    if extra_info:
        summary.update(extra_info)
    return _json_safe(summary)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
