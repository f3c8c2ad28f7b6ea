"""Conversion report: ``conversion_report.json`` in the vertebra dataset folder and a printed summary.

The JSON holds no timestamps, so re-running the same conversion gives the same file.
"""
from typing import List, Optional, Sequence

from .case_conversion import CaseResult
from .verse_discovery import SPLITS, Skipped

REPORT_NAME = "conversion_report.json"


def build_report(*, roots: Sequence[str], settings: dict, results: Sequence[CaseResult],
                 discovery_skipped: Sequence[Skipped], notes: Sequence[str], split_notes: Sequence[str],
                 removed_stale: Sequence[str]) -> dict:
    converted = sorted((r for r in results if r.converted), key=lambda r: r.case_id)
    skipped = [{"case": s.case_id, "reason": s.reason, "files": list(s.files)} for s in discovery_skipped]
    skipped += [{"case": r.case_id, "reason": r.reason, "files": [p for p in r.inputs.values() if p]}
                for r in results if not r.converted]
    skipped.sort(key=lambda s: s["case"])
    counts = {split: sum(1 for r in converted if r.split == split) for split in SPLITS}
    counts.update({"converted": len(converted), "skipped": len(skipped)})
    return {
        "roots": list(roots),
        "settings": settings,
        "counts": counts,
        "converted": [{
            "case": r.case_id, "patient": r.patient, "split": r.split, "inputs": r.inputs,
            "verse_labels": r.verse_labels, "centroids_source": r.centroids_source, "shape_kji": r.shape_kji,
            "files": r.files, "warnings": r.warnings} for r in converted],
        "skipped": skipped,
        "notes": list(notes),
        "split_notes": list(split_notes),
        "removed_stale_files": list(removed_stale),
    }


def summary_lines(report: dict, report_path: Optional[str] = None) -> List[str]:
    c = report["counts"]
    lines = [f"Converted {c['converted']} case(s): {c['training']} training, {c['validation']} validation, "
             f"{c['test']} test. Skipped {c['skipped']}."]
    for s in report["skipped"]:
        lines.append(f"  SKIPPED {s['case']}: {s['reason']}")
        for path in s["files"]:
            lines.append(f"      {path}")
    warned = [r for r in report["converted"] if r["warnings"]]
    for r in warned:
        for w in r["warnings"]:
            lines.append(f"  warning {r['case']}: {w}")
    for n in report["notes"] + report["split_notes"]:
        lines.append(f"  note: {n}")
    for path in report["removed_stale_files"]:
        lines.append(f"  removed stale file from an earlier run: {path}")
    if report_path:
        lines.append(f"Report: {report_path}")
    return lines
