"""End-to-end whole-scan measurements for ``vertkd_benchmark efficiency`` (issue 12).

One child process per measurement runs the real ``VertKDPredictor.predict_from_files`` on one CT file: reading,
checks, reorientation, nnU-Net preprocessing, the spine step (a spine model through ``nnUNetPredictor``, on the
chosen backend), the iterative loop, export onto the input grid and the written outputs (mask, centroids,
record). It reports the wall time of the whole call, the record's seconds per stage, the network calls, the
vertebrae found, the peak resident memory of the process (``ru_maxrss``) and, with a reference mask, the Dice of
every reference vertebra (best-overlapping predicted instance; a missed vertebra counts 0).

Two kinds of vertebra model:

* **trained** model folders (e.g. the shipped student): the network drives the loop, as in use;
* **oracle** (``oracle=True``): a model folder made here with the paper's 1 mm recipe (``VertKDStudentTrainer``
  or ``VertKDTeacherTrainer`` network, 128³ patch, 1 mm, random weights). The loop runs on the reference labels
  brought into the same preprocessed space (``OraclePredictor``: a perfect network) while the real network runs
  on every patch for the timing, as in ``child_scan``; the start signal is the reference union (dilated 3
  voxels). Every other stage (spine step included) is the real one on the real CT.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def whole_spine_scan(out_dir: Path, seed: int = 1, variant: str = "normal") -> dict:
    """A synthetic whole spine (C1-L5 for "normal"), adult size (scale 1.0), 1 mm isotropic, as VerSe files."""
    import SimpleITK as sitk
    from nnunet_vertkd.synthetic.case import make_case
    out_dir.mkdir(parents=True, exist_ok=True)
    ct, mask, _ = make_case(seed, scale=1.0, fov="whole", spacing="iso1", variant=variant)
    ct_path, mask_path = out_dir / "whole_spine_ct.nii.gz", out_dir / "whole_spine_seg-vert_msk.nii.gz"
    sitk.WriteImage(ct, str(ct_path))
    sitk.WriteImage(mask, str(mask_path))
    return {"scan": ct_path, "mask": mask_path,
            "description": f"synthetic whole spine (make_case({seed}, scale=1.0, fov='whole', spacing='iso1', "
                           f"variant='{variant}'))"}


def make_recipe_model_folder(root: Path, net: str, plans_file: str, spacing_mm: float = 1.0, patch: int = 128,
                             seed: int = 0) -> str:
    """A vertebra model folder of the paper's recipe with random weights: the nnU-Net plans of the benchmark scan
    with the configuration's spacing and patch set to ``spacing_mm`` / ``patch``³, the trainer
    ``VertKDStudentTrainer`` (net='student') or ``VertKDTeacherTrainer`` (net='teacher')."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_vertkd.inference.model_loading import build_network, find_trainer_class
    from nnunet_vertkd.labels import nnunet_dataset_labels
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY, left_right_axis, superior_axis

    trainer = {"student": "VertKDStudentTrainer", "teacher": "VertKDTeacherTrainer"}[net]
    plans = load_json(plans_file)
    cfg = plans["configurations"]["3d_fullres"]
    cfg["spacing"] = [float(spacing_mm)] * 3
    cfg["patch_size"] = [int(patch)] * 3
    folder = root / f"{trainer}__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    with open(folder / "plans.json", "w", encoding="utf-8") as f:
        json.dump(plans, f, indent=1)
    with open(folder / "dataset.json", "w", encoding="utf-8") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": nnunet_dataset_labels(), "numTraining": 1,
                   "file_ending": ".nii.gz", DATASET_JSON_KEY: {"kind": "vertebrae",
                                                                "orientation": CANONICAL_ORIENTATION}}, f, indent=1)
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(seed)
    network = build_network(find_trainer_class(trainer), pm, cm, 2, 1)
    s_axis, s_low = superior_axis(CANONICAL_ORIENTATION, pm.transpose_forward)
    ckpt = {"network_weights": network.state_dict(), "trainer_name": trainer,
            "init_args": {"configuration": "3d_fullres", "fold": "all"}, "inference_allowed_mirroring_axes": (2,),
            "vertkd": {"role": "vertebrae", "patch_size": [int(patch)] * 3, "superior_axis": s_axis,
                       "superior_at_low_index": s_low,
                       "left_right_axis": left_right_axis(CANONICAL_ORIENTATION, pm.transpose_forward)}}
    torch.save(ckpt, folder / "fold_all" / "checkpoint_final.pth")
    return str(folder)


def dice_per_reference(pred: np.ndarray, ref: np.ndarray) -> List[float]:
    """Dice of every reference label with the predicted instance that overlaps it most (0 when none)."""
    out = []
    for lab in [int(v) for v in np.unique(ref) if v > 0]:
        r = ref == lab
        under = pred[r]
        under = under[under > 0]
        if under.size == 0:
            out.append(0.0)
            continue
        p = pred == int(np.bincount(under).argmax())
        out.append(float(2.0 * np.logical_and(p, r).sum() / (p.sum() + r.sum())))
    return out


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 ** 2 if sys.platform == "darwin" else r / 1024


def _rss_now_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 2
    except (OSError, ValueError):
        return float("nan")


def child_e2e(spec: dict) -> dict:
    """One end-to-end measurement (see the module docstring); runs in its own process."""
    import SimpleITK as sitk
    import torch
    from scipy import ndimage
    import nnunet_vertkd.inference.predictor as P
    from nnunet_vertkd.inference import geometry
    from nnunet_vertkd.inference.oracle import ORACLE_PAD_VALUE, OraclePredictor

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    predictor = P.VertKDPredictor(device=torch.device("cpu"), use_mirroring=bool(spec.get("mirroring")),
                                  num_threads=threads, allow_tqdm=False, backend=spec.get("backend"),
                                  settings_overrides=spec.get("settings") or None)
    t = time.perf_counter()
    predictor.initialize_from_trained_model_folder(spec["model"], ("all",) if spec.get("fold_all", True) else None,
                                                   spec.get("checkpoint", "checkpoint_final.pth"),
                                                   spec.get("spine_model"), ("all",) if spec.get("spine_model") else None,
                                                   spec.get("checkpoint", "checkpoint_final.pth"))
    load_s = time.perf_counter() - t
    oracle_info = {}
    if spec.get("oracle"):
        if not spec.get("mask"):
            raise ValueError("oracle mode needs the reference mask")
        m = predictor.model
        pm, cm = m.plans_manager, m.configuration_manager
        image = sitk.ReadImage(spec["image"])
        mask = sitk.ReadImage(spec["mask"])
        mask.CopyInformation(image)
        from nnunet_vertkd.labels import VERSE_TO_NNUNET
        arr = np.rint(sitk.GetArrayFromImage(mask)).astype(np.int32)
        lut = np.zeros(max(int(arr.max()), 28) + 1, np.int16)
        for v, n in VERSE_TO_NNUNET.items():
            lut[v] = n
        lab_img = sitk.GetImageFromArray(lut[np.clip(arr, 0, None)])
        lab_img.CopyInformation(image)
        lab_reoriented = geometry.reorient(lab_img, m.orientation)
        from nnunet_vertkd.inference import fast_preprocessing
        captured = {}
        prepare = fast_preprocessing.prepare

        def capture(*a, **k):  # the predictor's vertebra grid, to bring the labels onto it
            captured["prep"] = prepare(*a, **k)
            return captured["prep"]
        fast_preprocessing.prepare = capture
        original = P.segment_vertebrae_iteratively

        def labels_on_predictor_grid(shape):
            prep = captured.get("prep")
            if prep is not None:  # converter route: nearest neighbour onto the sub-grid, then nnU-Net's transpose/crop
                sub = sitk.GetArrayFromImage(sitk.Resample(lab_reoriented, prep.grid, sitk.Transform(),
                                                           sitk.sitkNearestNeighbor, 0, sitk.sitkInt16))
                sub = np.transpose(sub, pm.transpose_forward)
                bbox = prep.pp_props["bbox_used_for_cropping"]
                lab = sub[tuple(slice(int(b[0]), int(b[1])) for b in bbox)]
            else:  # nnU-Net route: its own preprocessing of the labels
                import copy as _copy
                data_raw, props = geometry.nnunet_input(geometry.reorient(image, m.orientation))
                seg_raw = sitk.GetArrayFromImage(lab_reoriented).astype(np.int16)[None]
                _, seg_pp, _ = cm.preprocessor_class(verbose=False).run_case_npy(
                    data_raw, seg_raw, _copy.deepcopy(props), pm, cm, m.dataset_json)
                lab = seg_pp[0]
            lab = np.clip(lab, 0, None).astype(np.float32)
            if lab.shape != tuple(shape):
                raise RuntimeError(f"oracle labels {lab.shape} and CT {tuple(shape)} differ")
            return lab

        def oracle_loop(predict_patch, ct, start_prob, sup_axis, sup_low, patch_size, settings, **kw):
            labels_pp = labels_on_predictor_grid(ct.shape)
            start = ndimage.binary_dilation(labels_pp > 0, iterations=3).astype(np.float32)
            counts = np.bincount(labels_pp.astype(np.int64).ravel())[1:]
            min_frag = max(1, int(0.25 * counts[counts > 0].min()))
            oracle_info["oracle_min_fragment_voxels"] = min_frag
            s = dataclasses.replace(settings, CT_PAD_VALUE=ORACLE_PAD_VALUE,
                                    MIN_START_FRAGMENT_VOXELS=min(settings.MIN_START_FRAGMENT_VOXELS, min_frag),
                                    MIN_CONTINUE_FRAGMENT_VOXELS=min(settings.MIN_CONTINUE_FRAGMENT_VOXELS, min_frag))
            oracle = OraclePredictor()

            def both(patch):
                predict_patch(patch)  # the real network on the real patch size, for the timing
                return oracle(patch)
            return original(both, labels_pp, start, sup_axis, sup_low, patch_size, s, **kw)
        P.segment_vertebrae_iteratively = oracle_loop

    # time spent in the network (inside the loop)
    net_seconds = [0.0]
    factory = predictor._patch_predictor

    def timed_factory():
        inner = factory()

        def timed(patch):
            t0 = time.perf_counter()
            out = inner(patch)
            net_seconds[0] += time.perf_counter() - t0
            return out
        return timed
    predictor._patch_predictor = timed_factory

    rss_before = _rss_now_mb()
    runs, record = [], None
    out = Path(tempfile.mkdtemp(prefix="vertkd_e2e_"))
    for _ in range(int(spec.get("runs", 1))):
        net_seconds[0] = 0.0
        t = time.perf_counter()
        summary = predictor.predict_from_files([spec["image"]], str(out), overwrite=True)
        runs.append(time.perf_counter() - t)
        if summary["failed"]:
            raise RuntimeError(f"prediction failed: {summary['failed']}")
    case = summary["succeeded"][0]
    with open(out / f"{case}_record.json", encoding="utf-8") as f:
        record = json.load(f)
    res = {"load_seconds": round(load_s, 3), "seconds_per_scan": runs, "stages": record["seconds"],
           "network_seconds_in_loop": round(net_seconds[0], 3), "n_network_calls": record["n_network_calls"],
           "n_vertebrae_found": record["n_vertebrae"], "stop_reason": record["stop_reason"],
           "backend": record.get("backend"), "mirroring": record.get("mirroring"),
           "n_convergence_centres": record["settings"]["N_CONVERGENCE_CENTRES"],
           "preprocessed_shape": record["preprocessed_shape"], "patch_size": record["patch_size"],
           "peak_memory_mb": _peak_rss_mb(), "memory_increase_mb": _peak_rss_mb() - rss_before,
           "oracle": bool(spec.get("oracle")), **oracle_info}
    if spec.get("mask"):
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        ref = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(spec["mask"]))).astype(np.int32)
        dice = dice_per_reference(pred, ref)
        res.update({"dice_per_vertebra": [round(d, 4) for d in dice], "dice_mean": float(np.mean(dice)) if dice else None,
                    "n_reference_vertebrae": len(dice), "n_matched_dice_50": int(sum(d >= 0.5 for d in dice))})
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    return res


def e2e_row_title(r: dict, name: str) -> str:
    return name


# ---------------------------------------------------------------------------------------------------- loop settings
LOOP_DOC = """``vertkd_benchmark loop``: network calls against accuracy for a trained model (issue 12).

For every scan (the real VerSe samples with a CT in ../shared/data/verse_sample, and ``--synthetic N`` new
synthetic scans, seeds 900.., never trained on) and every combination of ``--centres`` (N_CONVERGENCE_CENTRES)
and ``--mirroring``, the trained vertebra model (``-m``; default: the shipped student) and spine model
(``--spine-m``; default: the shipped one) segment the scan end to end in a child process (whole_scan.child_e2e).
Table: calls, calls per vertebra found, vertebrae found, Dice per reference vertebra (mean; a missed vertebra
counts 0), seconds; and per setting the totals over all scans. Which scans were in the model's training data
is the caller's to state (the shipped model's card says it)."""


def add_loop_arguments(p) -> None:
    p.add_argument("-m", dest="model", default=None, help="vertebra model folder (fold_all); default: the shipped student")
    p.add_argument("--spine-m", dest="spine_model", default=None, help="spine model folder; default: the shipped one")
    p.add_argument("--centres", nargs="+", type=int, default=[3, 2], help="N_CONVERGENCE_CENTRES values (default 3 2)")
    p.add_argument("--mirroring", nargs="+", choices=("off", "on"), default=["off", "on"],
                   help="test-time mirroring (default: off on)")
    p.add_argument("--backend", default="auto", help="inference backend (default: auto)")
    p.add_argument("--synthetic", type=int, default=3, help="synthetic scans to add (default 3)")
    p.add_argument("--no-real", action="store_true", help="leave out the real samples")
    p.add_argument("--real", nargs="+", default=None, metavar="CASE",
                   help="only these real samples (e.g. sub-verse012, held out of the shipped model's training)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores available)")
    p.add_argument("--out", default=None, help="also write the table (Markdown) and the rows (JSON next to it)")
    p.add_argument("--note", default=None, help="free text for the report (machine load, checkpoint)")


def run_loop(args, argv=None) -> int:
    import glob
    from nnunet_vertkd.benchmarks.efficiency import describe_machine, machine_info, run_child
    from nnunet_vertkd.benchmarks.pipeline import real_sample_dir
    model, spine = args.model, args.spine_model
    if model is None or spine is None:
        from nnunet_vertkd import pretrained
        m, s = pretrained.model_folders()
        model, spine = model or m, spine or s
    threads = args.threads or machine_info()["cores_available"] or 1
    scans = []
    root = str(real_sample_dir() or "")
    if not args.no_real and root:
        for ct in sorted(glob.glob(os.path.join(root, "*", "rawdata", "*", "*_ct.nii.gz"))):
            case = os.path.basename(ct)[: -len("_ct.nii.gz")]
            masks = glob.glob(os.path.join(root, "*", "derivatives", case, "*_msk.nii.gz"))
            if masks and (not args.real or case in args.real):
                scans.append((case, ct, masks[0]))
    work = Path(tempfile.mkdtemp(prefix="vertkd_loop_"))
    for i in range(args.synthetic):
        s = whole_spine_scan(work / f"syn{i}", seed=900 + i, variant="normal")
        scans.append((f"synthetic whole spine {900 + i}", str(s["scan"]), str(s["mask"])))
    rows = []
    head = ("| scan | centres | mirroring | calls | calls / vertebra found | found / reference | Dice mean | "
            "vertebrae Dice ≥ 0.5 | s / scan |")
    lines = [head, "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    print(head, flush=True)
    for name, ct, mask in scans:
        for mirror in args.mirroring:
            for n in args.centres:
                r = run_child({"task": "e2e", "threads": threads, "image": ct, "mask": mask, "model": model,
                               "spine_model": spine, "oracle": False, "backend": args.backend,
                               "mirroring": mirror == "on", "settings": {"N_CONVERGENCE_CENTRES": n}, "runs": 1,
                               "net": name}, log=lambda *_: None)
                r.update({"scan": name, "mirror": mirror, "centres": n})
                rows.append(r)
                line = (f"| {name} | {n} | {mirror} | {r['n_network_calls']} | "
                        f"{r['n_network_calls'] / max(1, r['n_vertebrae_found']):.2f} | "
                        f"{r['n_vertebrae_found']} / {r['n_reference_vertebrae']} | {r['dice_mean']:.3f} | "
                        f"{r['n_matched_dice_50']} | {min(r['seconds_per_scan']):.1f} |")
                lines.append(line)
                print(line, flush=True)
    lines += ["", "Totals over the scans:", "",
              "| centres | mirroring | calls | vertebrae found | reference vertebrae | Dice mean (all reference vertebrae) | "
              "Dice ≥ 0.5 | seconds |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for mirror in args.mirroring:
        for n in args.centres:
            sel = [r for r in rows if r["mirror"] == mirror and r["centres"] == n]
            dice = [d for r in sel for d in r["dice_per_vertebra"]]
            lines.append(f"| {n} | {mirror} | {sum(r['n_network_calls'] for r in sel)} | "
                         f"{sum(r['n_vertebrae_found'] for r in sel)} | {len(dice)} | "
                         f"{(sum(dice) / len(dice) if dice else 0):.3f} | "
                         f"{sum(r['n_matched_dice_50'] for r in sel)} | "
                         f"{sum(min(r['seconds_per_scan']) for r in sel):.1f} |")
    info = machine_info()
    text = "\n".join([f"# Network calls against accuracy ({Path(model).name})", "",
                      f"Command: `vertkd_benchmark loop {' '.join(argv or [])}`", "",
                      f"Model: `{Path(model).name}` + spine `{Path(spine).name}`, backend {args.backend}, "
                      f"{threads} threads.", "", f"Machine: {describe_machine(info)}.", ""]
                     + ([f"Note: {args.note}", ""] if args.note else []) + lines) + "\n"
    print("\n".join(lines[-(len(args.mirroring) * len(args.centres) + 2):]))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
            json.dump({"machine": info, "model": model, "spine_model": spine, "rows": rows}, f, indent=1, default=str)
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    return 0
