"""Peak memory (RSS) of ``vertkd_predict`` on a large scan: ``python -m nnunet_vertkd.benchmarks.memory``.

A clinic PC has 8 GB; the target is a peak resident set size of at most 4 GB for a 512×512×600 int16
scan at 0.8×0.8×1 mm. This command writes such a synthetic CT (air, a body ellipse of soft tissue, a column of
bone blocks with discs between them), runs ``vertkd_predict`` on it in a child process, samples the child's
resident memory every 0.1 s and reports the peak (``ru_maxrss`` of the child, the kernel's own count), the
time at which it happened and the stages from the case record, so that the stage responsible can be seen.

Model: ``-m MODEL_FOLDER`` (and ``--spine-m``) measure a trained model. Without ``-m`` a stand-in vertebra
model at ``--model-spacing`` mm is built in a temporary folder: its network returns the topmost bone slab not in
memory (no weights, negligible activations), so the measurement is that of the pipeline around the network
(reading, reorientation, nnU-Net preprocessing, spine location, the loop's arrays, export); a real network adds
its activations (``vertkd_benchmark efficiency`` measures those per patch). Without ``--spine-m`` the spine
heuristic runs (full-resolution morphology: its memory is part of the measurement).

    python -m nnunet_vertkd.benchmarks.memory                      # 512 x 512 x 600, stand-in model, heuristic
    python -m nnunet_vertkd.benchmarks.memory --shape 256 256 300  # quicker
    python -m nnunet_vertkd.benchmarks.memory -m $nnUNet_results/Dataset501_X/VertKDStudentTrainer__nnUNetPlans__3d_fullres --spine-m ...

Exit status 0 when the peak is within ``--limit-gb`` (default 4), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional

import numpy as np

from nnunet_vertkd.benchmarks.process_resources import rss_of_process_kb
from nnunet_vertkd.benchmarks.stand_in_model import make_standin_vertebra_model, make_untrained_spine_model
from nnunet_vertkd.command_line import InputError, add_threads_option, command

STANDIN_SPINE_SPACING_MM = 4.0
STANDIN_SPINE_PATCH_VOXELS = 32


def synthetic_ct(shape_xyz, spacing_xyz, path: str) -> None:
    """int16 CT in LPS (as scanners write DICOM-derived NIfTI), k axis head (high k) to feet: air, a body ellipse
    (40 HU), a column of vertebra-sized bone blocks (700 HU) separated by 6 mm discs."""
    import SimpleITK as sitk
    nx, ny, nz = shape_xyz
    sx, sy, sz = spacing_xyz
    ct = np.full((nz, ny, nx), -1000, np.int16)
    yy, xx = np.ogrid[:ny, :nx]
    body = ((yy - ny / 2) * sy) ** 2 / (0.4 * ny * sy) ** 2 + ((xx - nx / 2) * sx) ** 2 / (0.45 * nx * sx) ** 2 <= 1
    ct[:, body] = 40
    j0, i0 = int(ny * 0.62), nx // 2  # vertebral bodies posterior of the centre
    hj, hi = int(18 / sy), int(22 / sx)
    block, disc = int(round(25 / sz)), int(round(6 / sz))
    k = int(round(20 / sz))
    while k + block < nz - int(round(20 / sz)):
        ct[k:k + block, j0 - hj:j0 + hj, i0 - hi:i0 + hi] = 700
        k += block + disc
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    sitk.WriteImage(img, path, False)  # uncompressed: writing 300 MB through gzip would dominate the run


def measure(cmd: List[str], env: dict, interval_s: float = 0.1):
    """Run ``cmd``; returns (returncode, peak RSS in bytes, [(seconds, rss bytes)] samples, stderr tail)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []

    def sample():
        while proc.poll() is None:
            samples.append((time.monotonic() - t0, rss_of_process_kb(proc.pid) * 1024))
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak = max(peak_kb, before) * 1024 if peak_kb > before else max((r for _, r in samples), default=0)
    return proc.returncode, peak, samples, out[-4000:]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 600], metavar=("X", "Y", "Z"),
                   help="scan size in voxels (default: %(default)s)")
    p.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0], metavar=("SX", "SY", "SZ"),
                   help="voxel spacing in mm (default: %(default)s)")
    p.add_argument("-m", metavar="MODEL_FOLDER", help="vertebra model folder (default: a stand-in, see above)")
    p.add_argument("--spine-m", metavar="MODEL_FOLDER",
                   help="spine model folder; 'standin': a tiny untrained 4 mm model through nnUNetPredictor "
                        "(default: the heuristic)")
    p.add_argument("--preprocessing", choices=("converter", "nnunet"), default=None,
                   help="vertkd_predict's --preprocessing route (default: vertkd_predict's default)")
    p.add_argument("--model-spacing", type=float, default=1.0, help="spacing of the stand-in model (mm)")
    p.add_argument("--patch", type=int, default=64, help="patch size of the stand-in model (voxels per axis)")
    p.add_argument("--limit-gb", type=float, default=4.0, help="peak RSS limit in GB (10^9 bytes; default 4)")
    add_threads_option(p, default=1)
    p.add_argument("--work-dir", help="folder for the scan, the model and the outputs (default: a temporary one)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")


def run(args) -> int:
    for folder in (args.m, None if args.spine_m == "standin" else args.spine_m):
        if folder and not os.path.isdir(folder):
            raise InputError(f"{folder}: model folder does not exist")
    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    work = args.work_dir or tempfile.mkdtemp(prefix="vertkd_memory_")
    os.makedirs(work, exist_ok=True)
    scan = os.path.join(work, "scan.nii")
    t = time.perf_counter()
    synthetic_ct(args.shape, args.spacing, scan)
    print(f"synthetic CT {args.shape[0]}x{args.shape[1]}x{args.shape[2]} int16 at {args.spacing} mm: {scan} "
          f"({time.perf_counter() - t:.1f} s)")
    env = dict(os.environ, nnUNet_compile="false", OMP_NUM_THREADS=str(args.threads))
    model = args.m
    if model is None:
        ext = os.path.join(work, "ext_trainers")
        model = make_standin_vertebra_model(os.path.join(work, "results"), ext, (args.model_spacing,) * 3,
                                            (args.patch,) * 3)
        from nnunet_vertkd.ext_trainers_path import EXT_TRAINER_DIR
        env["nnUNet_extTrainer"] = os.pathsep.join([ext, EXT_TRAINER_DIR])
    out = os.path.join(work, "out")
    cmd = [sys.executable, "-m", "nnunet_vertkd.inference.cli", "-i", scan, "-o", out, "-m", model,
           "-device", "cpu", "--threads", str(args.threads), "--overwrite"]
    if args.preprocessing:
        cmd += ["--preprocessing", args.preprocessing]
    if args.spine_m == "standin":
        cmd += ["--spine-m", make_untrained_spine_model(os.path.join(work, "spine_results"),
                                                        (STANDIN_SPINE_SPACING_MM,) * 3,
                                                        (STANDIN_SPINE_PATCH_VOXELS,) * 3)]
    elif args.spine_m:
        cmd += ["--spine-m", args.spine_m]
    print("running: " + " ".join(cmd))
    rc, peak, samples, tail = measure(cmd, env)
    record_path = os.path.join(out, "scan_record.json")
    record = json.load(open(record_path)) if os.path.exists(record_path) else {}
    t_peak = max(samples, key=lambda s: s[1])[0] if samples else float("nan")
    gb = peak / 1e9
    result = {"shape_xyz": args.shape, "spacing_mm": args.spacing, "model": model, "spine": args.spine_m or "heuristic",
              "preprocessing": args.preprocessing or "default",
              "returncode": rc, "peak_rss_bytes": peak, "peak_rss_gb": round(gb, 3), "limit_gb": args.limit_gb,
              "within_limit": bool(rc == 0 and gb <= args.limit_gb), "peak_at_s": round(t_peak, 1),
              "wall_s": round(samples[-1][0], 1) if samples else None,
              "stage_seconds": record.get("seconds"), "n_vertebrae": record.get("n_vertebrae"),
              "rss_timeline_gb": [[round(s, 1), round(r / 1e9, 3)] for s, r in samples[::10]]}
    if rc != 0:
        print(tail)
    print(f"peak RSS {gb:.2f} GB at {t_peak:.1f} s of {result['wall_s']} s (limit {args.limit_gb} GB): "
          f"{'OK' if result['within_limit'] else 'OVER THE LIMIT' if rc == 0 else 'prediction failed'}")
    if record.get("seconds"):
        print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in record["seconds"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["within_limit"] else 1


PROG = "python -m nnunet_vertkd.benchmarks.memory"


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
