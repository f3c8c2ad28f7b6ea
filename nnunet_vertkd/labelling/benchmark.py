"""Measure the anatomical labels on annotated scans, with perfect instances (the labelling alone).

    python -m nnunet_vertkd.labelling.benchmark --label-model MODEL_FOLDER --data VERSE_ROOT [VERSE_ROOT ...] \
        --out OUT [--only-split 03_test] [--exclude sub-verse012]

For every scan of a VerSe tree (CT + ``_seg-vert_msk`` + optional ``_ctd.json``) the reference mask is turned into
what the loop would give with a perfect network: the same instances, numbered 1..N from the top (the oracle of
``nnunet_vertkd.inference.oracle``). The label model and the decoder name them (``AnatomicalLabeller.label``),
the centroids are the vertebral-body centres of ``body_centre``, and the scan is scored like ``vertkd_evaluate``
with label matching (VerSe's id.rate against the reference centroids: the ``_ctd.json`` file when there is one,
else the reference mask's centres of mass; ``--ref-centroids body``: the body centres of the reference mask, for
synthetic scans whose centroid files are centres of mass) plus the label shifts. Writes OUT/labels_benchmark.json and
OUT/labels_benchmark.md (per scan: true and decoded labels, probabilities, flags, id.rate, shift, d_mean).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import read_centroids
from nnunet_vertkd.command_line import (InputError, add_device_option, add_processes_option, add_threads_option,
                                        command)
from nnunet_vertkd.evaluation.label_shifts import label_shifts
from nnunet_vertkd.evaluation.metrics import evaluate_case
from nnunet_vertkd.image_io import case_id
from nnunet_vertkd.labelling.body_centre import body_centroids
from nnunet_vertkd.labels import VERSE_LABEL_NAMES, VERSE_TO_NNUNET


def find_scans(roots: List[str]) -> List[dict]:
    """[{case, ct, mask, ctd, split}] of every VerSe scan (CT with a vertebra mask) under the roots."""
    scans = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for f in sorted(files):
                if not f.endswith("_seg-vert_msk.nii.gz"):
                    continue
                stem = case_id(f)
                mask = os.path.join(dirpath, f)
                ct_dir = dirpath.replace(os.sep + "derivatives" + os.sep, os.sep + "rawdata" + os.sep)
                ct = os.path.join(ct_dir, stem + "_ct.nii.gz")
                if not os.path.isfile(ct):
                    continue
                ctd = os.path.join(dirpath, stem + "_seg-subreg_ctd.json")
                parts = os.path.normpath(dirpath).split(os.sep)
                split = next((p for p in parts if p[:2] in ("01", "02", "03") or "test" in p or "training" in p), "")
                scans.append({"case": stem, "ct": ct, "mask": mask, "ctd": ctd if os.path.isfile(ctd) else None,
                              "split": split})
    return sorted(scans, key=lambda s: s["case"])


def oracle_instances(mask_kji: np.ndarray) -> (np.ndarray, List[int]):
    """Reference VerSe mask -> instances 1..N from the top (cranio-caudal order of the labels) and the true labels
    in that order."""
    labels = sorted((int(v) for v in np.unique(mask_kji) if int(v) in VERSE_TO_NNUNET), key=VERSE_TO_NNUNET.get)
    lut = np.zeros(max([0] + [int(v) for v in np.unique(mask_kji)]) + 1, dtype=np.int16)
    for i, lab in enumerate(labels):
        lut[lab] = i + 1
    return lut[mask_kji], labels


def label_scan(labeller, scan: dict, ref_centroids: str = "file") -> dict:
    ct = sitk.ReadImage(scan["ct"])
    mask_img = sitk.ReadImage(scan["mask"])
    ref = np.rint(sitk.GetArrayFromImage(mask_img)).astype(np.int16)
    ref[~np.isin(ref, list(VERSE_TO_NNUNET))] = 0
    inst, truth = oracle_instances(ref)
    t = time.perf_counter()
    labelled, info = labeller.label(inst, ct)
    seconds = time.perf_counter() - t
    spacing_kji = tuple(ct.GetSpacing()[::-1])
    pred_ctd = body_centroids(labelled, spacing_kji)
    ref_ctd = None
    if ref_centroids == "body":  # like for like (synthetic centroid files are centres of mass)
        ref_ctd = body_centroids(ref, spacing_kji)
    elif scan["ctd"]:
        _, ref_ctd = read_centroids(scan["ctd"])
        ref_ctd = {k: v for k, v in ref_ctd.items() if k in set(truth)}
    res = evaluate_case(ref, labelled, spacing_kji, match="label", ref_centroids=ref_ctd, pred_centroids=pred_ctd)
    shifts = label_shifts(ref, labelled)
    decoded = [v["label"] for v in info["vertebrae"]]
    return {"case": scan["case"], "split": scan["split"], "truth": truth, "decoded": decoded,
            "truth_names": [VERSE_LABEL_NAMES[v] for v in truth],
            "decoded_names": [VERSE_LABEL_NAMES[v] for v in decoded],
            "probabilities": [v["probability"] for v in info["vertebrae"]],
            "runner_up": [v["runner_up_name"] for v in info["vertebrae"]],
            "evidence_argmax": [VERSE_LABEL_NAMES[v["evidence_label"]] for v in info["vertebrae"]],
            "flags": info.get("flags", []), "sequence_probability": info.get("sequence_probability"),
            "n_right": int(sum(a == b for a, b in zip(truth, decoded))), "n": len(truth),
            "id_rate": res["id_rate"], "d_mean_mm": res["d_mean_mm"], "reference_centroids":
                "body centres of the reference mask" if ref_centroids == "body" else
                "ctd file" if scan["ctd"] else "mask centres of mass",
            "scan_shift": shifts["scan_shift"], "shifted_as_whole": shifts["shifted_as_whole"],
            "transitional": bool(set(truth) & {25, 28}), "seconds": round(seconds, 3)}


def summarise(rows: List[dict]) -> dict:
    if not rows:
        return {"n_scans": 0}
    n = sum(r["n"] for r in rows)
    ids = [r["id_rate"] for r in rows if r["id_rate"] is not None]
    dm = [r["d_mean_mm"] for r in rows if r["d_mean_mm"] is not None]
    return {"n_scans": len(rows), "n_vertebrae": n,
            "id_rate_pct_mean": 100.0 * float(np.mean(ids)) if ids else None,
            "label_accuracy_pct": 100.0 * sum(r["n_right"] for r in rows) / max(1, n),
            "scans_all_right": sum(r["n_right"] == r["n"] for r in rows),
            "scans_shifted_as_whole": sum(bool(r["shifted_as_whole"]) for r in rows),
            "d_mean_mm_mean": float(np.mean(dm)) if dm else None,
            "flagged_low_confidence": sum("low_confidence" in r["flags"] for r in rows),
            "wrong_and_flagged": sum(r["n_right"] < r["n"] and "low_confidence" in r["flags"] for r in rows),
            "wrong": sum(r["n_right"] < r["n"] for r in rows)}


def markdown(summary: dict, rows: List[dict]) -> str:
    s = summary["overall"]
    lines = [f"Label model: `{summary['label_model']}`", "",
             f"{s['n_scans']} scans, {s['n_vertebrae']} vertebrae: id.rate {s['id_rate_pct_mean']:.1f} % (mean over "
             f"scans), labels right {s['label_accuracy_pct']:.1f} %, scans with every label right "
             f"{s['scans_all_right']}/{s['n_scans']}, shifted as a whole {s['scans_shifted_as_whole']}, d_mean "
             f"{s['d_mean_mm_mean']:.2f} mm; wrong scans flagged low-confidence: {s['wrong_and_flagged']}/{s['wrong']}",
             ""]
    t = summary.get("transitional") or {}
    if t.get("n_scans"):
        lines += [f"Scans with a T13 or an L6: {t['n_scans']} scans, {t['n_vertebrae']} vertebrae: id.rate "
                  f"{t['id_rate_pct_mean']:.1f} %, labels right {t['label_accuracy_pct']:.1f} %, every label right "
                  f"{t['scans_all_right']}/{t['n_scans']}, shifted as a whole {t['scans_shifted_as_whole']}", ""]
    lines += ["| case | truth | decoded | min p | id.rate | shift | d_mean (mm) | flags |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['truth_names'][0]}–{r['truth_names'][-1]} ({r['n']}) | "
                     f"{' '.join(r['decoded_names'])} | {min(r['probabilities']):.2f} | "
                     f"{100 * r['id_rate']:.0f} % | {r['scan_shift']:+d} | "
                     f"{r['d_mean_mm']:.1f} | {', '.join(r['flags']) or '–'} |")
    return "\n".join(lines) + "\n"


_WORKER = {}


def _init_worker(label_model, folds, checkpoint, device, threads, ref_centroids):
    import torch
    torch.set_num_threads(max(1, threads))
    from nnunet_vertkd.labelling.labeller import AnatomicalLabeller
    _WORKER["labeller"] = AnatomicalLabeller(label_model, folds, checkpoint, device=device)
    _WORKER["ref_centroids"] = ref_centroids


def _label_in_worker(scan: dict) -> dict:
    return label_scan(_WORKER["labeller"], scan, _WORKER["ref_centroids"])


PROG = "python -m nnunet_vertkd.labelling.benchmark"


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label-model", required=True, help="VertKDLabelTrainer model folder")
    p.add_argument("--data", nargs="+", required=True, help="VerSe tree(s) with CT, masks and centroid files")
    p.add_argument("--out", required=True)
    p.add_argument("--only-split", default=None, help="only scans whose path has this split folder (e.g. 03_test)")
    p.add_argument("--cases", nargs="+", default=None, help="only these case names")
    p.add_argument("--folds", nargs="+", default=None)
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--ref-centroids", choices=("file", "body"), default="file",
                   help="reference centroids: the _ctd.json files (VerSe: body centres; else mask centres of mass), "
                        "or the body centres of the reference masks (like for like, for synthetic scans whose "
                        "centroid files are centres of mass)")
    add_device_option(p)
    add_threads_option(p, default=1)
    add_processes_option(p, what="scans labelled in parallel processes")
    args = p.parse_args(argv)
    if not os.path.isdir(args.label_model):
        raise InputError(f"--label-model {args.label_model}: model folder does not exist")
    for root in args.data:
        if not os.path.isdir(root):
            raise InputError(f"--data {root}: folder does not exist")
    if args.threads < 1 or args.num_processes < 1:
        raise InputError("--threads and -np must be at least 1")
    import torch
    torch.set_num_threads(max(1, args.threads))
    scans = find_scans(args.data)
    if args.only_split:
        scans = [s for s in scans if s["split"] == args.only_split]
    if args.cases:
        scans = [s for s in scans if s["case"] in set(args.cases)]
    if not scans:
        raise InputError(f"no scans (CT with a _seg-vert_msk mask) found under {' '.join(args.data)}"
                         + (f" in split {args.only_split}" if args.only_split else "")
                         + (f" among cases {' '.join(args.cases)}" if args.cases else ""))
    rows = []
    init = (args.label_model, args.folds, args.checkpoint, args.device, args.threads, args.ref_centroids)
    if args.num_processes > 1:
        import multiprocessing
        pool = multiprocessing.get_context("spawn").Pool(args.num_processes, _init_worker, init)
        results = pool.imap(_label_in_worker, scans)
    else:
        _init_worker(*init)
        results = map(_label_in_worker, scans)
    for r in results:
        rows.append(r)
        print(f"{r['case']}: truth {' '.join(r['truth_names'])} | decoded {' '.join(r['decoded_names'])} | "
              f"id.rate {100 * r['id_rate']:.0f} % shift {r['scan_shift']:+d} d_mean {r['d_mean_mm']:.1f} mm "
              f"{r['flags']}", flush=True)
    summary = {"label_model": os.path.basename(os.path.normpath(args.label_model)),
               "overall": summarise(rows),
               "transitional": summarise([r for r in rows if r["transitional"]]),
               "cases": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "labels_benchmark.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = markdown(summary, rows)
    with open(os.path.join(args.out, "labels_benchmark.md"), "w") as f:
        f.write(md)
    print(md)
    return 0



def write_variant_scans(out: str, seed: int = 2024, scale: float = 1.0,
                        fovs=("whole", "lumbar", "thoracolumbar", "anywhere"),
                        variants=("normal", "T13", "L6"), orientation: str = "LPS") -> List[str]:
    """Held-out synthetic scans for the labelling benchmark, every field of view with every variant (normal, T13,
    L6), written as a VerSe tree (OUT/rawdata, OUT/derivatives, centroid files = mask centres of mass)."""
    from nnunet_vertkd.centroids import write_centroids
    from nnunet_vertkd.synthetic import make_case_with_info
    from nnunet_vertkd.orientation import orientation_of
    cases = []
    k = 0
    for fov in fovs:
        for variant in variants:
            k += 1
            case = f"sub-lab{k:03d}"
            ct, mask, ctd, _ = make_case_with_info((seed, k), scale=scale, fov=fov, variant=variant,
                                                   orientation=orientation, spacing="iso1")
            os.makedirs(os.path.join(out, "rawdata", case), exist_ok=True)
            os.makedirs(os.path.join(out, "derivatives", case), exist_ok=True)
            sitk.WriteImage(ct, os.path.join(out, "rawdata", case, f"{case}_ct.nii.gz"))
            sitk.WriteImage(mask, os.path.join(out, "derivatives", case, f"{case}_seg-vert_msk.nii.gz"))
            write_centroids(os.path.join(out, "derivatives", case, f"{case}_seg-subreg_ctd.json"),
                            list(orientation_of(ct)), ctd)
            cases.append(case)
    return cases


if __name__ == "__main__":
    sys.exit(main())
