"""``vertkd_evaluate``: VerSe metrics of predicted vertebra instance masks against a reference.

Argument parsing and the run; the work is done beside the metrics: ``case_discovery`` (which files, paired by
case), ``case_evaluation`` (one case), ``aggregate`` (pooling), ``report`` (files and the printed table).
See docs/evaluation.md for the full description (formats, matching, conventions, output files).
Exit status (``nnunet_vertkd.command_line``): 0 done, 2 inputs that cannot be evaluated, 130 interrupted.
"""
import argparse
import os
import sys
from typing import List, Optional

from nnunet_vertkd.command_line import add_processes_option, add_progress_option, command
from nnunet_vertkd.evaluation.case_discovery import EvaluationInputError, find_prediction_cases, find_reference_cases
from nnunet_vertkd.evaluation.case_evaluation import evaluate_pairs
from nnunet_vertkd.evaluation.report import run_report, write_outputs
from nnunet_vertkd.image_io import case_id  # noqa: F401 (imported from here by earlier versions)

PROG = "vertkd_evaluate"
OUTPUT_FOLDER_NAME = "vertkd_evaluation"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
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
    add_processes_option(p, default=1)
    add_progress_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed table")
    return p


def run(args) -> dict:
    """Evaluate ``args`` (``build_parser``'s namespace); writes the output files and returns the summary."""
    fmt, ref_cases, mapping, map_note = find_reference_cases(args.ref, args.ref_format)
    if not ref_cases:
        raise EvaluationInputError(f"no reference masks found in {args.ref} (format {fmt})")
    pred_cases = find_prediction_cases(args.pred)
    if os.path.isfile(args.ref) and os.path.isfile(args.pred):  # one file each: paired whatever their names
        (rc,) = ref_cases
        pred_cases = {rc: next(iter(pred_cases.values()))}
    out = args.output or (os.path.join(args.pred, OUTPUT_FOLDER_NAME) if os.path.isdir(args.pred)
                          else os.path.join(os.path.dirname(os.path.abspath(args.pred)), OUTPUT_FOLDER_NAME))
    jobs = [{"case": c, "ref": ref_cases[c], "pred": pred_cases.get(c), "nnunet_to_verse": mapping,
             "match": args.match, "pred_labels": args.pred_labels, "resample_pred": args.resample_pred,
             "use_centroid_files": not args.centroids_from_masks} for c in sorted(ref_cases)]
    results = evaluate_pairs(jobs, args.num_processes,
                             progress=not (args.quiet or args.disable_progress_bar))
    info = {"settings": {"reference": os.path.abspath(args.ref), "prediction": os.path.abspath(args.pred),
                         "ref_format": fmt, "label_mapping": map_note, "match": args.match,
                         "pred_labels": args.pred_labels, "resample_pred": args.resample_pred,
                         "centroids_from_masks": args.centroids_from_masks},
            "missing_predictions": sorted(c for c in ref_cases if c not in pred_cases),
            "unreferenced_predictions": sorted(c for c in pred_cases if c not in ref_cases),
            "output": os.path.abspath(out)}
    summary = write_outputs(out, results, info)
    if not args.quiet:
        print(run_report(summary, results, out))
    return summary


@command(PROG, interrupted="the output files of this run may be incomplete")
def main(argv: Optional[List[str]] = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
