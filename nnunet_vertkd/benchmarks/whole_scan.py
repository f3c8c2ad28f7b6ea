"""End-to-end whole-scan measurements for ``vertkd_benchmark efficiency``.

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
  on every patch for the timing, as in ``scan_measurement`` (``oracle_drive``); the start signal is the reference
  union (dilated 3 voxels). Every other stage (spine step included) is the real one on the real CT.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np

from nnunet_vertkd.benchmarks.process_resources import peak_rss_mb, rss_now_mb

RECIPE_TRAINERS = {"student": "VertKDStudentTrainer", "teacher": "VertKDTeacherTrainer"}
DICE_MATCHED = 0.5


def make_recipe_model_folder(root: Path, net: str, plans_file: str, spacing_mm: float = 1.0, patch: int = 128,
                             seed: int = 0) -> str:
    """A vertebra model folder of the paper's recipe with random weights: the nnU-Net plans of the benchmark scan
    with the configuration's spacing and patch set to ``spacing_mm`` / ``patch``³, the trainer
    ``VertKDStudentTrainer`` (net='student') or ``VertKDTeacherTrainer`` (net='teacher')."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_vertkd.benchmarks.dataset_json import write_dataset_json
    from nnunet_vertkd.inference.model_loading import build_network, find_trainer_class
    from nnunet_vertkd.labels import nnunet_dataset_labels
    from nnunet_vertkd.model_contract import CHECKPOINT_KEY
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, left_right_axis, superior_axis

    trainer = RECIPE_TRAINERS[net]
    plans = load_json(plans_file)
    cfg = plans["configurations"]["3d_fullres"]
    cfg["spacing"] = [float(spacing_mm)] * 3
    cfg["patch_size"] = [int(patch)] * 3
    folder = root / f"{trainer}__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    with open(folder / "plans.json", "w", encoding="utf-8") as f:
        json.dump(plans, f, indent=1)
    write_dataset_json(folder, nnunet_dataset_labels(), "vertebrae")
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(seed)
    network = build_network(find_trainer_class(trainer), pm, cm, 2, 1)
    s_axis, s_low = superior_axis(CANONICAL_ORIENTATION, pm.transpose_forward)
    ckpt = {"network_weights": network.state_dict(), "trainer_name": trainer,
            "init_args": {"configuration": "3d_fullres", "fold": "all"}, "inference_allowed_mirroring_axes": (2,),
            CHECKPOINT_KEY: {"role": "vertebrae", "patch_size": [int(patch)] * 3, "superior_axis": s_axis,
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


# ---------------------------------------------------------------------------------------------------- child side
def _make_predictor(spec: dict):
    import torch
    import nnunet_vertkd.inference.predictor as P
    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    predictor = P.VertKDPredictor(device=torch.device("cpu"), use_mirroring=bool(spec.get("mirroring")),
                                  num_threads=threads, allow_tqdm=False, backend=spec.get("backend"),
                                  settings_overrides=spec.get("settings") or None)
    checkpoint = spec.get("checkpoint", "checkpoint_final.pth")
    predictor.initialize_from_trained_model_folder(spec["model"], ("all",) if spec.get("fold_all", True) else None,
                                                   checkpoint, spec.get("spine_model"),
                                                   ("all",) if spec.get("spine_model") else None, checkpoint)
    return predictor


def _labels_on_predictor_grid(predictor, image, lab_reoriented, prep, shape) -> np.ndarray:
    """The reference labels in the predictor's preprocessed vertebra space (``prep``: the converter route's
    preparation, None for nnU-Net's route)."""
    import copy
    import SimpleITK as sitk
    from nnunet_vertkd.inference import geometry
    m = predictor.model
    pm, cm = m.plans_manager, m.configuration_manager
    if prep is not None:  # converter route: nearest neighbour onto the sub-grid, then nnU-Net's transpose/crop
        sub = sitk.GetArrayFromImage(sitk.Resample(lab_reoriented, prep.grid, sitk.Transform(),
                                                   sitk.sitkNearestNeighbor, 0, sitk.sitkInt16))
        sub = np.transpose(sub, pm.transpose_forward)
        bbox = prep.pp_props["bbox_used_for_cropping"]
        lab = sub[tuple(slice(int(b[0]), int(b[1])) for b in bbox)]
    else:  # nnU-Net route: its own preprocessing of the labels
        data_raw, props = geometry.nnunet_input(geometry.reorient(image, m.orientation))
        seg_raw = sitk.GetArrayFromImage(lab_reoriented).astype(np.int16)[None]
        _, seg_pp, _ = cm.preprocessor_class(verbose=False).run_case_npy(
            data_raw, seg_raw, copy.deepcopy(props), pm, cm, m.dataset_json)
        lab = seg_pp[0]
    lab = np.clip(lab, 0, None).astype(np.float32)
    if lab.shape != tuple(shape):
        raise RuntimeError(f"oracle labels {lab.shape} and CT {tuple(shape)} differ")
    return lab


def _install_oracle(predictor, spec: dict, oracle_info: dict) -> None:
    """Make the predictor's loop run on the reference labels (``oracle_drive``) while its network still runs on
    every patch; the reference is brought onto the predictor's own vertebra grid."""
    import SimpleITK as sitk
    import nnunet_vertkd.inference.predictor as P
    from nnunet_vertkd.benchmarks.oracle_drive import network_then_oracle, oracle_settings, oracle_start
    from nnunet_vertkd.benchmarks.scan_preparation import verse_mask_to_nnunet
    from nnunet_vertkd.inference import fast_preprocessing, geometry
    if not spec.get("mask"):
        raise ValueError("oracle mode needs the reference mask")
    image = sitk.ReadImage(spec["image"])
    mask = sitk.ReadImage(spec["mask"])
    mask.CopyInformation(image)
    lab_reoriented = geometry.reorient(verse_mask_to_nnunet(mask, spec["mask"]), predictor.model.orientation)
    captured = {}
    prepare = fast_preprocessing.prepare

    def capture(*a, **k):  # the predictor's vertebra grid, to bring the labels onto it
        captured["prep"] = prepare(*a, **k)
        return captured["prep"]
    fast_preprocessing.prepare = capture
    original = P.segment_vertebrae_iteratively

    def oracle_loop(predict_patch, ct, start_prob, sup_axis, sup_low, patch_size, settings, **kw):
        labels = _labels_on_predictor_grid(predictor, image, lab_reoriented, captured.get("prep"), ct.shape)
        settings, oracle_info["oracle_min_fragment_voxels"] = oracle_settings(settings, labels)
        return original(network_then_oracle(predict_patch), labels, oracle_start(labels), sup_axis, sup_low,
                        patch_size, settings, **kw)
    P.segment_vertebrae_iteratively = oracle_loop


def _time_network(predictor) -> list:
    """Accumulate the seconds spent in the predictor's network inside the loop; returns the 1-item counter."""
    seconds = [0.0]
    factory = predictor._patch_predictor

    def timed_factory():
        inner = factory()

        def timed(patch):
            t0 = time.perf_counter()
            out = inner(patch)
            seconds[0] += time.perf_counter() - t0
            return out
        return timed
    predictor._patch_predictor = timed_factory
    return seconds


def _dice_fields(pred_file: Path, mask_file: str) -> dict:
    import SimpleITK as sitk
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_file)))
    ref = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(mask_file))).astype(np.int32)
    dice = dice_per_reference(pred, ref)
    return {"dice_per_vertebra": [round(d, 4) for d in dice], "dice_mean": float(np.mean(dice)) if dice else None,
            "n_reference_vertebrae": len(dice), "n_matched_dice_50": int(sum(d >= DICE_MATCHED for d in dice))}


def child_e2e(spec: dict) -> dict:
    """One end-to-end measurement (see the module docstring); runs in its own process."""
    t = time.perf_counter()
    predictor = _make_predictor(spec)
    load_s = time.perf_counter() - t
    oracle_info = {}
    if spec.get("oracle"):
        _install_oracle(predictor, spec, oracle_info)
    net_seconds = _time_network(predictor)
    rss_before = rss_now_mb()
    runs = []
    out = Path(tempfile.mkdtemp(prefix="vertkd_e2e_"))
    try:
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
               "accept_complete_fragment": bool(record["settings"].get("ACCEPT_COMPLETE_FRAGMENT")),
               "preprocessed_shape": record["preprocessed_shape"], "patch_size": record["patch_size"],
               "peak_memory_mb": peak_rss_mb(), "memory_increase_mb": peak_rss_mb() - rss_before,
               "oracle": bool(spec.get("oracle")), **oracle_info}
        if spec.get("mask"):
            res.update(_dice_fields(out / f"{case}.nii.gz", spec["mask"]))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------------- parent side
def e2e_jobs(args, plans: str, work: Path, trained: List[str]) -> List[dict]:
    """The end-to-end rows: the recipe networks (``--nets`` but nnunet) at every ``--e2e-spacings`` with the same
    field of view (``--patch`` mm), oracle loop; then every trained model as it is; each with every backend,
    mirroring (trained models) and ``N_CONVERGENCE_CENTRES`` asked for."""
    from nnunet_vertkd.inference.cli import parse_settings
    extra = parse_settings(getattr(args, "e2e_setting", None) or [])
    jobs = []
    for net in [n for n in args.nets if n != "nnunet"]:
        for spacing in args.e2e_spacings:
            patch = int(round(args.patch / spacing))
            folder = make_recipe_model_folder(work / f"recipe_{net}_{spacing:g}mm", net, plans, spacing_mm=spacing,
                                              patch=patch)
            for backend in args.e2e_backends:
                for n in args.e2e_centres:
                    jobs.append({"name": f"{net}, recipe {spacing:g} mm, {patch}³ (oracle loop)", "model": folder,
                                 "oracle": True, "backend": backend, "mirroring": False,
                                 "settings": {**extra, "N_CONVERGENCE_CENTRES": n}})
    for folder in trained:
        for backend in args.e2e_backends:
            for mirror in args.e2e_mirroring:
                for n in args.e2e_centres:
                    jobs.append({"name": f"trained {Path(folder).name.split('__')[0]}", "model": folder,
                                 "oracle": False, "backend": backend, "mirroring": mirror == "on",
                                 "settings": {**extra, "N_CONVERGENCE_CENTRES": n}})
    return jobs


def _shipped_defaults(spine, trained):
    try:
        from nnunet_vertkd import pretrained
        if pretrained.available():
            shipped_student, shipped_spine = pretrained.model_folders()
            return spine or shipped_spine, [shipped_student] if trained is None else trained
    except Exception:
        pass
    return spine, trained


def run_e2e(args, report: dict, scan: dict, plans: str, work: Path, threads: int) -> None:
    """End-to-end rows into ``report['e2e']``: 1 mm recipe student/teacher with the oracle loop, trained models
    as they are (default: the shipped student and spine model when present)."""
    from nnunet_vertkd.benchmarks.child_process import run_child
    spine, trained = _shipped_defaults(args.e2e_spine, args.e2e_trained)
    report["e2e"] = []
    report["e2e_info"] = {"spine_model": spine or "heuristic", "scan": str(Path(scan["scan"]).name)}
    base = {"task": "e2e", "threads": threads, "image": str(scan["scan"]),
            "mask": str(scan["mask"]) if scan.get("mask") else None, "spine_model": spine, "runs": args.scan_runs}
    for job in e2e_jobs(args, plans, work, trained or []):
        print(f"[efficiency] end to end: {job['name']}, backend {job['backend']}, "
              f"{job['settings']['N_CONVERGENCE_CENTRES']} centres, mirroring {job['mirroring']}", flush=True)
        r = run_child({**base, **job})
        r.update({"name": job["name"], "model": job["model"]})
        report["e2e"].append(r)
        print(f"    {r['n_network_calls']} calls, {r['n_vertebrae_found']} vertebrae, "
              f"{min(r['seconds_per_scan']):.2f} s, stages {r['stages']}, peak {r['peak_memory_mb']:.0f} MB", flush=True)
