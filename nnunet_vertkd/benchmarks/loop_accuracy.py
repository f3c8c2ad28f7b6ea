"""``vertkd_benchmark loop``: network calls against accuracy for a trained model.

For every scan (the real VerSe samples with a CT in ../shared/data/verse_sample, and ``--synthetic N`` new
synthetic scans, seeds 900.., never trained on) and every combination of ``--centres`` (N_CONVERGENCE_CENTRES)
and ``--mirroring``, the trained vertebra model (``-m``; default: the shipped student) and spine model
(``--spine-m``; default: the shipped one) segment the scan end to end in a child process (``whole_scan.child_e2e``).
Table: calls, calls per vertebra found, vertebrae found, Dice per reference vertebra (mean; a missed vertebra
counts 0), seconds; and per setting the totals over all scans. Which scans were in the model's training data
is the caller's to state (the shipped model's card says it)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from nnunet_vertkd.command_line import InputError, add_threads_option

SYNTHETIC_SEED_START = 900


def add_loop_arguments(p) -> None:
    p.add_argument("-m", dest="model", default=None, help="vertebra model folder (fold_all); default: the shipped student")
    p.add_argument("--spine-m", dest="spine_model", default=None, help="spine model folder; default: the shipped one")
    p.add_argument("--centres", nargs="+", type=int, default=[3, 2], help="N_CONVERGENCE_CENTRES values (default 3 2)")
    p.add_argument("--mirroring", nargs="+", choices=("off", "on"), default=["off", "on"],
                   help="test-time mirroring (default: off on)")
    p.add_argument("--accept-complete", nargs="+", choices=("off", "on"), default=["off"],
                   help="ACCEPT_COMPLETE_FRAGMENT values: accept a fragment complete in its patch at once "
                        "(default: off)")
    p.add_argument("--backend", default="auto", help="inference backend (default: auto)")
    p.add_argument("--synthetic", type=int, default=3, help="synthetic scans to add (default 3)")
    p.add_argument("--no-real", action="store_true", help="leave out the real samples")
    p.add_argument("--real", nargs="+", default=None, metavar="CASE",
                   help="only these real samples (e.g. sub-verse012, held out of the shipped model's training)")
    add_threads_option(p)
    p.add_argument("--out", default=None, help="also write the table (Markdown) and the rows (JSON next to it)")
    p.add_argument("--note", default=None, help="free text for the report (machine load, checkpoint)")


def loop_scans(args, work: Path) -> list:
    """(name, CT, mask) of the real samples (``--real``, unless ``--no-real``) and ``--synthetic`` whole spines."""
    from nnunet_vertkd.benchmarks.pipeline import real_sample_dir
    from nnunet_vertkd.benchmarks.scan_preparation import whole_spine_scan
    from nnunet_vertkd.image_io import case_id
    scans = []
    root = str(real_sample_dir() or "")
    if not args.no_real and root:
        for ct in sorted(glob.glob(os.path.join(root, "*", "rawdata", "*", "*_ct.nii.gz"))):
            case = case_id(ct)
            masks = glob.glob(os.path.join(root, "*", "derivatives", case, "*_msk.nii.gz"))
            if masks and (not args.real or case in args.real):
                scans.append((case, ct, masks[0]))
    for i in range(args.synthetic):
        s = whole_spine_scan(work / f"syn{i}", seed=SYNTHETIC_SEED_START + i, variant="normal")
        scans.append((f"synthetic whole spine {SYNTHETIC_SEED_START + i}", str(s["scan"]), str(s["mask"])))
    return scans


def _rules(args) -> list:
    """(N_CONVERGENCE_CENTRES, ACCEPT_COMPLETE_FRAGMENT) pairs to run."""
    return [(n, c == "on") for c in getattr(args, "accept_complete", ["off"]) for n in args.centres]


def _rule_name(n: int, complete: bool) -> str:
    return f"{n} or complete" if complete else str(n)


def totals_lines(rows: list, args) -> list:
    """The totals table: per setting (centres, mirroring) over all scans."""
    lines = ["", "Totals over the scans:", "",
             "| centres | mirroring | calls | vertebrae found | reference vertebrae | Dice mean (all reference vertebrae) | "
             "Dice ≥ 0.5 | seconds |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for mirror in args.mirroring:
        for n, complete in _rules(args):
            sel = [r for r in rows if r["mirror"] == mirror and r["centres"] == n and r["complete"] == complete]
            dice = [d for r in sel for d in r["dice_per_vertebra"]]
            lines.append(f"| {_rule_name(n, complete)} | {mirror} | {sum(r['n_network_calls'] for r in sel)} | "
                         f"{sum(r['n_vertebrae_found'] for r in sel)} | {len(dice)} | "
                         f"{(sum(dice) / len(dice) if dice else 0):.3f} | "
                         f"{sum(r['n_matched_dice_50'] for r in sel)} | "
                         f"{sum(min(r['seconds_per_scan']) for r in sel):.1f} |")
    return lines


def run_loop(args, argv=None) -> int:
    from nnunet_vertkd.benchmarks.child_process import run_child
    from nnunet_vertkd.benchmarks.machine import cores_available, describe_machine, machine_info
    model, spine = args.model, args.spine_model
    if model is None or spine is None:
        from nnunet_vertkd import pretrained
        m, s = pretrained.model_folders()
        model, spine = model or m, spine or s
    for folder in (args.model, args.spine_model):
        if folder and not os.path.isdir(folder):
            raise InputError(f"{folder}: model folder does not exist")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    threads = args.threads or cores_available()
    work = Path(tempfile.mkdtemp(prefix="vertkd_loop_"))
    scans = loop_scans(args, work)
    rows = []
    head = ("| scan | centres | mirroring | calls | calls / vertebra found | found / reference | Dice mean | "
            "vertebrae Dice ≥ 0.5 | s / scan |")
    lines = [head, "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    print(head, flush=True)
    for name, ct, mask in scans:
        for mirror in args.mirroring:
            for n, complete in _rules(args):
                r = run_child({"task": "e2e", "threads": threads, "image": ct, "mask": mask, "model": model,
                               "spine_model": spine, "oracle": False, "backend": args.backend,
                               "mirroring": mirror == "on", "settings": {"N_CONVERGENCE_CENTRES": n, "ACCEPT_COMPLETE_FRAGMENT": complete}, "runs": 1,
                               "net": name}, log=lambda *_: None)
                r.update({"scan": name, "mirror": mirror, "centres": n, "complete": complete})
                rows.append(r)
                line = (f"| {name} | {_rule_name(n, complete)} | {mirror} | {r['n_network_calls']} | "
                        f"{r['n_network_calls'] / max(1, r['n_vertebrae_found']):.2f} | "
                        f"{r['n_vertebrae_found']} / {r['n_reference_vertebrae']} | {r['dice_mean']:.3f} | "
                        f"{r['n_matched_dice_50']} | {min(r['seconds_per_scan']):.1f} |")
                lines.append(line)
                print(line, flush=True)
    lines += totals_lines(rows, args)
    info = machine_info()
    text = "\n".join([f"# Network calls against accuracy ({Path(model).name})", "",
                      f"Command: `vertkd_benchmark loop {' '.join(argv or [])}`", "",
                      f"Model: `{Path(model).name}` + spine `{Path(spine).name}`, backend {args.backend}, "
                      f"{threads} threads.", "", f"Machine: {describe_machine(info)}.", ""]
                     + ([f"Note: {args.note}", ""] if args.note else []) + lines) + "\n"
    print("\n".join(lines[-(len(args.mirroring) * len(_rules(args)) + 2):]))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
            json.dump({"machine": info, "model": model, "spine_model": spine, "rows": rows}, f, indent=1, default=str)
    shutil.rmtree(work, ignore_errors=True)
    return 0
