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
"""
import csv
import json
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


def _group_stats(rows: List[dict], case_results: Dict[str, dict]) -> dict:
    """Stats for a group of per-vertebra rows (each row has a 'case' key)."""
    matched = [r for r in rows if r["matched_pred_label"] is not None]
    n = len(rows)
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
    return {
        "n_vertebrae": n,
        "n_scans": len(by_case),
        "n_missing": n - len(matched),
        "dice_pct": mean_std((r["dice"] for r in rows), 100.0),
        "hd_mm": mean_std(r["hd_mm"] for r in matched),
        "assd_ref_to_pred_mm": mean_std(r["assd_ref_to_pred_mm"] for r in matched),
        "assd_pred_to_ref_mm": mean_std(r["assd_pred_to_ref_mm"] for r in matched),
        "failure_rate_pct": (100.0 * sum(bool(r["failed"]) for r in rows) / n) if n else None,
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


def summarize(case_results: Dict[str, dict], extra_info: Optional[dict] = None) -> dict:
    """The summary dict written to summary.json: 'overall', 'regions', 'cases' (+ ``extra_info``)."""
    rows = per_vertebra_rows(case_results)
    overall = _group_stats(rows, case_results)
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
            regions[region] = _group_stats(rr, case_results)
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


def _fmt(ms: Optional[dict], digits: int = 2) -> str:
    if ms is None or ms.get("mean") is None:
        return "–"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def _fmt_num(v: Optional[float], digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def format_table(summary: dict) -> str:
    """Markdown table like the paper's Table 3 (plus the VerSe id.rate and d_mean), overall and per region,
    followed by a per-scan table."""
    head = ("| Group | Scans | Vertebrae | Missing | Dice (%) | HD (mm) | ASSD GT→pred (mm) | ASSD pred→GT (mm) "
            "| Fail (%) | loc.rate (%) | id.rate (%) | d_mean (mm) |")
    sep = "|" + "---|" * 12
    lines = [head, sep]
    groups = [("overall", summary["overall"])] + list(summary["regions"].items())
    for name, g in groups:
        lines.append(f"| {name} | {g['n_scans']} | {g['n_vertebrae']} | {g['n_missing']} | {_fmt(g['dice_pct'])} | "
                     f"{_fmt(g['hd_mm'])} | {_fmt(g['assd_ref_to_pred_mm'])} | {_fmt(g['assd_pred_to_ref_mm'])} | "
                     f"{_fmt_num(g['failure_rate_pct'])} | {_fmt(g['localisation_rate_pct'])} | "
                     f"{_fmt(g['id_rate_pct'])} | {_fmt(g['d_mean_mm'])} |")
    lines.append("")
    lines.append(f"Extra (unmatched) predicted instances: {summary['overall'].get('n_extra', 0)}. "
                 "Dice, failure and the rates count missing vertebrae (Dice 0); HD, ASSD and d_mean average the "
                 "matched ones only. Vertebra metrics: mean ± std over vertebrae; rates, d_mean: over scans. "
                 "loc.rate: centroid closest and within 20 mm (localisation); id.rate: the same with vertebrae "
                 "matched by label (VerSe identification), – when the prediction has sequential labels.")
    if summary["overall"].get("n_scans_labelled"):
        o = summary["overall"]
        lines.append("")
        lines.append(f"Labels: {o['n_scans_with_label_shifts']} of {o['n_scans_labelled']} labelled scan(s) have "
                     f"vertebrae with shifted labels, {o['n_scans_shifted_as_whole']} shifted as a whole "
                     "(shift = predicted minus true level along C1…T12, T13, L1…L6).")
    lines.append("")
    lines.append("| Case | Ref | Pred | Dice (%) | HD (mm) | ASSD GT→pred | ASSD pred→GT | Fail (%) | loc.rate (%) "
                 "| id.rate (%) | d_mean (mm) | Missing | Extra |")
    lines.append("|" + "---|" * 13)
    for case, c in summary["cases"].items():
        pct = (lambda v: None if v is None else 100.0 * v)
        lines.append(f"| {case}{' (' + c['note'] + ')' if c.get('note') else ''} | {c['n_ref']} | {c['n_pred']} | "
                     f"{_fmt_num(pct(c['dice_mean']))} | {_fmt_num(c['hd_mean_mm'])} | "
                     f"{_fmt_num(c['assd_ref_to_pred_mean_mm'])} | {_fmt_num(c['assd_pred_to_ref_mean_mm'])} | "
                     f"{_fmt_num(pct(c['failure_rate']))} | {_fmt_num(pct(c['localisation_rate']))} | "
                     f"{_fmt_num(pct(c['id_rate']))} | "
                     f"{_fmt_num(c['d_mean_mm'])} | {_labels(c['missing'])} | {_labels(c['extra'])} |")
    shifted = [(case, c) for case, c in summary["cases"].items() if c.get("scan_shift") is not None]
    if shifted:
        lines.append("")
        lines.append("| Case | Scan shift | Vertebrae shifted | Shifted as a whole |")
        lines.append("|---|---|---|---|")
        for case, c in shifted:
            lines.append(f"| {case} | {c['scan_shift']:+d} | {c['n_label_shifted']} | "
                         f"{'yes' if c['shifted_as_whole'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _labels(labels: Optional[List[int]]) -> str:
    return ",".join(str(v) for v in labels) if labels else "–"


def write_outputs(out_dir: str, case_results: Dict[str, dict], extra_info: Optional[dict] = None) -> dict:
    """Write summary.json, per_vertebra.csv and summary.md into ``out_dir``; returns the summary dict."""
    import os
    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(case_results, extra_info)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, "per_vertebra.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=PER_VERTEBRA_COLUMNS)
        w.writeheader()
        for row in per_vertebra_rows(case_results):
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in PER_VERTEBRA_COLUMNS})
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write("# vertkd_evaluate summary\n\n")
        f.write(format_table(summary))
    return summary
