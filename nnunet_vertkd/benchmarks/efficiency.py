"""``vertkd_benchmark efficiency``: cost of the teacher, the student and nnU-Net's default planned network.

What is measured (Serrador et al. 2024, Table 5 / Fig. 7), each network in a **fresh subprocess** so that peak memory
belongs to that network alone:

* parameters (``nnunet_vertkd.trainers.network.count_parameters``);
* FLOPs of one forward pass on one patch (``torch.utils.flop_counter.FlopCounterMode``; 1 multiply-add = 2 FLOPs;
  convolutions and matrix products, the terms that dominate; normalisation/activations are not counted);
* time per patch: ``--runs`` timed forward passes (batch 1, ``torch.inference_mode``, eval mode) after
  ``--warmup`` untimed ones; median, min, max and inter-quartile range;
* peak memory: on CPU the process's maximum resident set size (``resource.getrusage(...).ru_maxrss``), i.e.
  Python + torch + the network + activations, and the increase over the resident size just before the first
  forward pass; on CUDA ``torch.cuda.max_memory_allocated``;
* whole-scan prediction of one CT (``--scan``): the plugin's iterative top-down loop
  (``segment_vertebrae_iteratively``) with the teacher and with the student, and nnU-Net's own sliding-window
  prediction (``nnUNetPredictor``, the planned network, tile step 0.5, Gaussian weighting) -- the baseline a lab
  would use instead -- on the same preprocessed 1 mm scan; seconds, network calls, peak memory;
* CO2 (kg CO2-eq) of each whole-scan prediction when ``codecarbon`` is installed (optional).

The networks are **untrained** (random weights): their cost does not depend on the weights. For the loop the
number of network calls does depend on what the network predicts, so the loop's patch predictor runs the network
on every call (for the timing) but accepts what the reference mask says is the topmost vertebra not yet in memory
("oracle" mode, ``nnunet_vertkd.benchmarks.oracle_drive``): the calls per scan are those of a model that
segments perfectly (``N_CONVERGENCE_CENTRES`` calls per vertebra plus one or two at the end of the spine;
``vertkd_benchmark oracle`` measures them on real and whole-spine anatomy without running a network). The network input in oracle mode is the label patch plus the
memory; dense convolutions cost the same whatever the values. Without a reference mask the untrained network's
own output drives the loop and the number of vertebrae is capped (``--max-vertebrae``): the calls are then not
representative and the report says so.

nnU-Net's default network is ``PlainConvUNet`` as planned by nnU-Net's ``ExperimentPlanner`` (3d_fullres) for
the benchmark scan resampled to 1 mm (a temporary one-case dataset; planning runs nnU-Net's real
``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment``) or taken from ``--plans PLANS.json``. It has one
input channel (CT) and 27 outputs (background + 26 vertebra labels), as a lab would train it on VerSe; the two
plugin networks have 2 inputs (CT + memory) and 1 output.

Modules: this one (options, the run); ``scan_preparation`` (the scan), ``nnunet_planning`` (nnU-Net's plans),
``child_process`` (one measurement per process) with ``patch_measurement``, ``scan_measurement`` and
``whole_scan`` (end to end), ``efficiency_report`` (the tables), ``machine`` (the machine's description).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from nnunet_vertkd.benchmarks.child_process import run_child
from nnunet_vertkd.benchmarks.efficiency_report import GIGA, format_markdown, format_table
from nnunet_vertkd.benchmarks.machine import cores_available, machine_info
from nnunet_vertkd.benchmarks.measured_networks import NET_TITLES, NETS, build_net  # noqa: F401  (public names)
from nnunet_vertkd.benchmarks.process_resources import spread
from nnunet_vertkd.command_line import InputError, add_device_option, add_threads_option

#: nnU-Net with mirroring: its 3 axes' 7 flips + the tile itself = 8 network calls per tile
NNUNET_MIRRORED_CALLS_PER_TILE = 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="vertkd_efficiency", help="output folder for efficiency.json / efficiency.md "
                                                              "(default: %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="timed forward passes per network (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up passes (default: %(default)s)")
    add_device_option(p)
    p.add_argument("--patch", type=int, default=128, help="cubic patch edge in voxels (default: %(default)s)")
    add_threads_option(p)
    p.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS), help="networks to measure")
    p.add_argument("--plans", default=None,
                   help="nnU-Net plans file for the default network (3d_fullres); default: nnU-Net plans the scan")
    p.add_argument("--scan", default=None,
                   help="CT for the whole-scan measurement (default: the real sample sub-verse005 from "
                        "../shared/data/verse_sample when present, else one synthetic case)")
    p.add_argument("--scan-mask", default=None,
                   help="its VerSe vertebra mask (enables the oracle loop; default: none for --scan)")
    p.add_argument("--scan-runs", type=int, default=1, help="whole-scan repetitions (default: %(default)s)")
    p.add_argument("--no-scan", action="store_true", help="skip the whole-scan measurements")
    p.add_argument("--mirroring", action="store_true",
                   help="test-time mirroring in the whole-scan predictions (loop: left-right, batch of 2; nnU-Net: "
                        "its 8 axis flips); default off for both")
    p.add_argument("--max-vertebrae", type=int, default=5,
                   help="cap on vertebrae when no reference mask drives the loop (default: %(default)s)")
    p.add_argument("--note", default=None, help="free text added to the report (e.g. 'CPU shared with other jobs')")
    p.add_argument("--backends", nargs="+", default=None, metavar="BACKEND",
                   help="per-patch timing on these inference backends (torch, torch_channels_last, openvino, "
                        "onnxruntime, or 'all' = the installed ones; default: torch; the last two CPU only)")
    p.add_argument("--scan-backend", default="torch",
                   help="backend of the iterative loop's network in the whole-scan rows (default: %(default)s, as "
                        "the committed docs/efficiency_cpu.md; 'auto' = the fastest installed)")
    p.add_argument("--nnunet-backend", default="torch",
                   help="backend of nnU-Net's sliding window in the whole-scan rows (default: %(default)s, what a "
                        "lab runs)")
    p.add_argument("--nnunet-mirroring", nargs="+", choices=("off", "on"), default=None,
                   help="nnU-Net sliding window with mirroring off and/or on (default: as --mirroring); a mirroring "
                        "row that is not run is estimated from the measured one (network seconds x 8) and marked so")
    p.add_argument("--whole-spine", action="store_true",
                   help="the whole-scan measurements on a synthetic whole spine (C1-L5, adult size, 1 mm; "
                        "make_case(1, scale=1.0, fov='whole')) instead of --scan / sub-verse005")
    p.add_argument("--no-patch", action="store_true", help="skip the per-patch measurements")
    p.add_argument("--patch-nets", nargs="+", choices=NETS, default=None,
                   help="networks of the per-patch measurements (default: --nets)")
    p.add_argument("--scan-nets", nargs="+", choices=NETS, default=None,
                   help="networks of the whole-scan rows (default: --nets; --e2e rows use --nets)")
    p.add_argument("--e2e", action="store_true",
                   help="end to end with vertkd_predict's predictor on the scan (read, preprocessing, spine step, "
                        "loop, export, written files): the paper's 1 mm student and teacher with random weights and "
                        "the oracle loop, and every --e2e-trained model as it is (see whole_scan.py)")
    p.add_argument("--e2e-spine", default=None,
                   help="spine model folder for --e2e (default: the shipped one when present, else the heuristic)")
    p.add_argument("--e2e-trained", nargs="*", default=None, metavar="MODEL_FOLDER",
                   help="trained vertebra model folders (fold_all) for --e2e (default: the shipped student when present)")
    p.add_argument("--e2e-backends", nargs="+", default=["auto"],
                   help="backends for the --e2e rows (default: auto = the fastest installed)")
    p.add_argument("--e2e-spacings", nargs="+", type=float, default=[1.0],
                   help="spacings (mm) of the recipe models of the --e2e rows, with the same field of view "
                        "(--patch voxels at 1 mm): 1 = the paper's recipe, 2 = the CPU recipe (default: 1)")
    p.add_argument("--e2e-centres", nargs="+", type=int, default=[3, 2],
                   help="N_CONVERGENCE_CENTRES values for the --e2e rows (default: 3 2)")
    p.add_argument("--e2e-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a loop setting for every --e2e row, as vertkd_predict --setting (e.g. "
                        "ACCEPT_COMPLETE_FRAGMENT=true); repeatable")
    p.add_argument("--e2e-mirroring", nargs="+", choices=("off", "on"), default=["off"],
                   help="test-time mirroring for the --e2e rows of trained models (default: off)")


def _check_inputs(args) -> None:
    for option, path in (("--scan", args.scan), ("--scan-mask", args.scan_mask), ("--plans", args.plans)):
        if path and not Path(path).is_file():
            raise InputError(f"{option} {path}: file does not exist")
    for option in ("runs", "scan_runs", "patch"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.warmup < 0:
        raise InputError(f"--warmup must be at least 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")


def choose_scan(args, work: Path) -> Optional[dict]:
    """{"scan", "mask"} of the whole-scan measurement: --whole-spine, --scan, or the default scan (the real
    sample, else one synthetic case); None when no scan is needed (--no-scan with --plans)."""
    from nnunet_vertkd.benchmarks import scan_preparation
    if args.whole_spine:
        print("[efficiency] generating the synthetic whole spine (C1-L5, scale 1.0, 1 mm) ...", flush=True)
        return scan_preparation.whole_spine_scan(work / "whole_spine")
    if args.scan:
        return {"scan": Path(args.scan), "mask": Path(args.scan_mask) if args.scan_mask else None}
    if args.no_scan and args.plans:
        return None
    scan = scan_preparation.default_scan()
    if scan is None:
        print("generating one synthetic case for the whole-scan measurement ...", flush=True)
        scan = scan_preparation.synthetic_scan(work / "synthetic")
    if scan is None and not args.plans:
        raise InputError("no scan available to plan nnU-Net's network: give --scan or --plans")
    return scan


def prepare(scan: Optional[dict], work: Path) -> Optional[dict]:
    """The scan at 1 mm in LPI (``scan_preparation.prepare_scan``); None without a scan."""
    from nnunet_vertkd.benchmarks.scan_preparation import prepare_scan
    from nnunet_vertkd.dataset_conversion.case_conversion import CaseError
    if scan is None:
        return None
    print(f"[efficiency] scan {scan['scan']} (mask: {scan.get('mask')}) -> 1 mm LPI", flush=True)
    try:
        return prepare_scan(Path(scan["scan"]), Path(scan["mask"]) if scan.get("mask") else None, work / "scan")
    except CaseError as e:
        raise InputError(str(e)) from None


def plans_for(args, prepared: Optional[dict], work: Path) -> str:
    """--plans, or nnU-Net's default plans for the prepared scan (``nnunet_planning``)."""
    if args.plans:
        return args.plans
    from nnunet_vertkd.benchmarks.nnunet_planning import make_default_plans
    print("[efficiency] planning nnU-Net's default 3d_fullres network for the scan (nnU-Net's planner)", flush=True)
    return str(make_default_plans(prepared, work / "nnunet"))


def patch_backends(args, device: str) -> List[str]:
    """--backends; "all" = torch, torch_channels_last and every installed CPU backend."""
    if not args.backends:
        return ["torch"]
    if args.backends != ["all"]:
        return list(args.backends)
    from nnunet_vertkd.inference.backends import backend_installed
    out = ["torch"]
    if device == "cpu":
        out.append("torch_channels_last")
        out += [b for b in ("openvino", "onnxruntime") if backend_installed(b)]
    return out


def measure_patches(args, report: dict, base: dict) -> None:
    """Per-patch rows: every network of --patch-nets on every backend of --backends."""
    from nnunet_vertkd.benchmarks.patch_measurement import CHANNELS_LAST_SUFFIX
    for name in [n for n in args.nets if n in (args.patch_nets or args.nets)]:
        for backend in patch_backends(args, base["device"]):
            print(f"[efficiency] {name} on {backend}: {args.patch}³ patch, {args.warmup} warm-up + {args.runs} "
                  f"timed runs", flush=True)
            spec = {**base, "task": "patch", "net": name, "backend": backend.replace(CHANNELS_LAST_SUFFIX, ""),
                    "channels_last": backend.endswith(CHANNELS_LAST_SUFFIX)}
            if spec["backend"] != "torch":  # export (cached) in its own process: not in the timed one's memory
                run_child({**spec, "task": "export"})
            r = run_child(spec)
            report["patch"].setdefault(name, r)  # the first backend (torch) for the main table
            report.setdefault("patch_backends", {}).setdefault(name, {})[backend] = r
            print(f"    {r['parameters']:,} parameters, {r['flops'] / GIGA:.2f} GFLOPs, "
                  f"{r['seconds_per_patch']['median']:.3f} s median, peak {r['peak_memory_mb']:.0f} MB", flush=True)


def measure_scans(args, report: dict, base: dict, prepared: dict, work: Path) -> None:
    """Whole-scan rows: every network of --scan-nets (nnU-Net with each --nnunet-mirroring)."""
    report["scan_info"] = {k: v for k, v in prepared.items() if k not in ("image", "mask")}
    mirrorings = args.nnunet_mirroring or (["on"] if args.mirroring else ["off"])
    for name in [n for n in args.nets if n in (args.scan_nets or args.nets)]:
        for mirror in (mirrorings if name == "nnunet" else [None]):
            key = name if mirror is None or mirror == mirrorings[0] else f"{name}_mirroring_{mirror}"
            print(f"[efficiency] whole scan with {name} ({args.scan_runs} run(s)"
                  f"{', mirroring ' + mirror if mirror else ''})", flush=True)
            r = run_child({**base, "task": "scan", "net": name, "image": prepared["image"],
                           "mask": prepared["mask"], "scan_runs": args.scan_runs,
                           "mirroring": (mirror == "on") if mirror else args.mirroring,
                           "backend": args.scan_backend, "nnunet_backend": args.nnunet_backend,
                           "max_vertebrae": args.max_vertebrae, "codecarbon_dir": str(work)})
            report["scan"][key] = r
            print(f"    {r.get('n_network_calls')} network calls, {r['seconds_per_scan']['median']:.2f} s, "
                  f"peak {r['peak_memory_mb']:.0f} MB", flush=True)
    add_mirroring_estimate(report)


def add_mirroring_estimate(report: dict) -> None:
    """nnU-Net with mirroring on costs 8 network calls per tile (its 3 axes' 7 flips + the tile): when only the
    mirroring-off run was measured, estimate the other as its time + 7 x its network seconds (marked)."""
    off = report["scan"].get("nnunet")
    if not off or off.get("mirroring") or "nnunet_mirroring_on" in report["scan"] or not off.get("network_seconds"):
        return
    runs = max(1, int(report["settings"].get("scan_runs") or 1))
    extra = (NNUNET_MIRRORED_CALLS_PER_TILE - 1) * off["network_seconds"] / runs
    est = {k: off[k] for k in ("tiles_patch_size", "backend", "peak_memory_mb", "memory_increase_mb") if k in off}
    est.update({"n_network_calls": NNUNET_MIRRORED_CALLS_PER_TILE * off["n_network_calls"] // runs,
                "mirroring": True, "estimated": True,
                "seconds_per_scan": spread([off["seconds_per_scan"]["median"] + extra])})
    report["scan"]["nnunet_mirroring_on"] = est


def has_codecarbon() -> bool:
    try:
        import codecarbon  # noqa: F401
        return True
    except Exception:
        return False


def _device(requested: str) -> str:
    import torch
    if requested == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: measuring on the CPU", flush=True)
        return "cpu"
    return requested


def write_report(report: dict, out: Path) -> None:
    with open(out / "efficiency.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    (out / "efficiency.md").write_text(format_markdown(report), encoding="utf-8")
    print()
    print(format_table(report))
    print(f"\nwritten: {out / 'efficiency.json'}, {out / 'efficiency.md'} ({report['total_seconds']} s)")


def run(args, argv_for_record: Optional[List[str]] = None) -> dict:
    _check_inputs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(args.device)
    threads = args.threads or cores_available()
    t_start = time.time()
    report = {"command": "vertkd_benchmark efficiency " + " ".join(argv_for_record or []),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(device),
              "settings": {"device": device, "patch": args.patch, "runs": args.runs, "warmup": args.warmup,
                           "threads": threads, "scan_runs": args.scan_runs, "mirroring": args.mirroring},
              "note": args.note, "patch": {}, "scan": {}, "codecarbon": has_codecarbon()}
    work = Path(tempfile.mkdtemp(prefix="vertkd_efficiency_"))
    try:
        from nnunet_vertkd.benchmarks.nnunet_planning import plan_summary
        scan = choose_scan(args, work)
        prepared = prepare(scan, work)
        plans = plans_for(args, prepared, work)
        shutil.copy(plans, out / "nnunet_plans_used.json")
        report["nnunet_plan"] = plan_summary(plans)
        base = {"device": device, "threads": threads, "patch": args.patch, "runs": args.runs, "warmup": args.warmup,
                "plans": plans}
        if not args.no_patch:
            measure_patches(args, report, base)
        if args.e2e and scan is not None:
            from nnunet_vertkd.benchmarks.whole_scan import run_e2e
            run_e2e(args, report, scan, plans, work, threads)
        if prepared is not None and not args.no_scan:
            measure_scans(args, report, base, prepared, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["total_seconds"] = round(time.time() - t_start, 1)
    write_report(report, out)
    return report


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--child":  # the child command of earlier versions
        from nnunet_vertkd.benchmarks.child_process import child_main
        child_main(sys.argv[2])
    else:
        raise SystemExit("use: vertkd_benchmark efficiency --help")
