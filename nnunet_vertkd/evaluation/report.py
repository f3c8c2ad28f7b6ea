"""vertkd_evaluate's outputs: summary.json, per_vertebra.csv and summary.md in the output folder, and the
printed table (the paper's Table 3 layout plus VerSe's id.rate and d_mean, overall, per region and per scan).
The numbers come from ``aggregate.summarize``."""
import csv
import json
import os
from typing import Dict, List, Optional

from nnunet_vertkd.evaluation.aggregate import PER_VERTEBRA_COLUMNS, per_vertebra_rows, summarize

SUMMARY_JSON = "summary.json"
PER_VERTEBRA_CSV = "per_vertebra.csv"
SUMMARY_MD = "summary.md"


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
    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(case_results, extra_info)
    with open(os.path.join(out_dir, SUMMARY_JSON), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, PER_VERTEBRA_CSV), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=PER_VERTEBRA_COLUMNS)
        w.writeheader()
        for row in per_vertebra_rows(case_results):
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in PER_VERTEBRA_COLUMNS})
    with open(os.path.join(out_dir, SUMMARY_MD), "w", encoding="utf-8") as f:
        f.write("# vertkd_evaluate summary\n\n")
        f.write(format_table(summary))
    return summary


def run_report(summary: dict, results: Dict[str, dict], out_dir: str) -> str:
    """What vertkd_evaluate prints after a run: the table, cases without prediction or reference, the warnings
    of every case and where the files are."""
    lines = [format_table(summary)]
    missing, unreferenced = summary.get("missing_predictions") or [], summary.get("unreferenced_predictions") or []
    if missing:
        lines.append(f"No prediction for {len(missing)} reference case(s) (counted as all vertebrae missing): "
                     f"{', '.join(missing)}")
    if unreferenced:
        lines.append(f"Predictions without reference (ignored): {', '.join(unreferenced)}")
    for case in sorted(results):
        lines += [f"warning: {w}" for w in results[case].get("warnings") or []]
    lines.append(f"Wrote {os.path.join(out_dir, SUMMARY_JSON)}, {PER_VERTEBRA_CSV} and {SUMMARY_MD}")
    return "\n".join(lines)
