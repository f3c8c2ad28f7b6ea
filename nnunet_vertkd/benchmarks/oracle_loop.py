"""``vertkd_benchmark oracle``: the iterative loop driven by a perfect network on real and synthetic spines.

For every VerSe mask given (default: the real samples of ``../shared/data/verse_sample`` when present) and for
whole-spine synthetic scans (C1-L5, a T13 and an L6 case, ``--synthetic N``), the loop runs with
``nnunet_vertkd.inference.oracle.OraclePredictor`` at each spacing (``--spacings``, with the 128 mm field of view
of the paper), with both start signals (``gt``: the ground-truth union; ``coarse``: that union through a 4 mm
grid, a perfect spine model) and three acceptance rules (``N_CONVERGENCE_CENTRES`` 3, the paper's; 2; 2 or a fragment complete in its patch,
``ACCEPT_COMPLETE_FRAGMENT``). It
prints one table row per run: vertebrae annotated, found in order or not, stop reason, network calls and calls
per vertebra. No network runs: this measures the loop, in seconds.
"""
from __future__ import annotations

import argparse
import glob
import os
import time
from typing import List

import SimpleITK as sitk

from nnunet_vertkd.benchmarks.pipeline import real_sample_dir
from nnunet_vertkd.inference.iterative import IterativeSettings
from nnunet_vertkd.inference.oracle import labels_from_verse_mask, run_oracle

SYNTHETIC_VARIANTS = ("normal", "T13", "L6")
#: (N_CONVERGENCE_CENTRES, ACCEPT_COMPLETE_FRAGMENT): the paper's rule, two centres, two centres or a complete fragment
ACCEPTANCE_RULES = ((3, False), (2, False), (2, True))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("masks", nargs="*", help="VerSe vertebra masks (default: every *_msk.nii.gz of the real samples "
                                            "in ../shared/data/verse_sample, when present)")
    p.add_argument("--synthetic", type=int, default=3, metavar="N",
                   help="whole-spine synthetic scans to add (normal, T13, L6, ...; default 3; 0 = none)")
    p.add_argument("--spacings", type=float, nargs="+", default=[1.0, 2.0], metavar="MM",
                   help="loop spacings in mm (default: 1 2); the patch is 128 mm wide at every spacing")
    p.add_argument("--out", help="also write the table to this Markdown file")


def _cases(args) -> List[tuple]:
    masks = list(args.masks)
    if not masks and real_sample_dir() is not None:
        masks = sorted(glob.glob(os.path.join(real_sample_dir(), "*", "derivatives", "*", "*_msk.nii.gz")))
    cases = [(os.path.basename(m).split("_")[0], sitk.ReadImage(m)) for m in masks]
    if args.synthetic:
        from nnunet_vertkd.synthetic.case import make_case
        for i in range(args.synthetic):
            variant = SYNTHETIC_VARIANTS[i % len(SYNTHETIC_VARIANTS)]
            _, mask, _ = make_case(1 + i, scale=1.0, fov="whole", spacing="iso1", variant=variant)
            cases.append((f"synthetic whole spine {1 + i} ({variant})", mask))
    return cases


def run(args) -> int:
    lines = ["| case | spacing (mm) | start | centres | vertebrae | all found in order | stop | calls | calls / vertebra | mean Dice % |",
             "|---|---:|---|---:|---:|---|---|---:|---:|---:|"]
    print(lines[0])
    print(lines[1])
    t0 = time.perf_counter()
    failures = 0
    for name, mask in _cases(args):
        for spacing in args.spacings:
            labels = labels_from_verse_mask(mask, spacing)
            for start in ("gt", "coarse"):
                for n, complete in ACCEPTANCE_RULES:
                    s = IterativeSettings(N_CONVERGENCE_CENTRES=n, ACCEPT_COMPLETE_FRAGMENT=complete
                                          ).scaled_to_spacing((spacing,) * 3)
                    r = run_oracle(labels, start, spacing_mm=spacing, settings=s)
                    failures += not r.found_all_in_order
                    line = (f"| {name} | {spacing:g} | {start} | {n}{' or complete' if complete else ''} | {len(r.labels_true)} | "
                            f"{'yes' if r.found_all_in_order else 'NO: ' + str(r.labels_found)} | "
                            f"{r.result.stop_reason} | {r.result.n_network_calls} | {r.calls_per_vertebra:.2f} | "
                            f"{100 * r.mean_dice(labels):.2f} |")
                    lines.append(line)
                    print(line, flush=True)
    summary = f"{failures} run(s) missed a vertebra; {time.perf_counter() - t0:.0f} s"
    print(summary)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n" + summary + "\n")
    return 1 if failures else 0
