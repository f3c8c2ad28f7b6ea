"""Whole-scan prediction of one prepared 1 mm scan, in a fresh process: seconds, network calls, peak memory, CO2.

Three ways to segment the scan, one function each:

* ``sliding_window``: nnU-Net's ``nnUNetPredictor`` with the planned network (tile step 0.5, Gaussian weighting),
  the baseline a lab would use;
* ``oracle_loop``: the plugin's iterative loop with the teacher or the student on every call, driven by the
  reference mask (``oracle_drive``): the calls of a model that segments perfectly;
* ``untrained_loop``: without a reference the untrained network's own output drives the loop, capped at
  ``max_vertebrae`` vertebrae (calls not representative; the report says so).
"""
from __future__ import annotations

import copy
import os
import tempfile
import time

import numpy as np

from nnunet_vertkd.benchmarks.measured_networks import build_net
from nnunet_vertkd.benchmarks.nnunet_planning import load_plans
from nnunet_vertkd.benchmarks.patch_measurement import sync
from nnunet_vertkd.benchmarks.process_resources import memory_fields, rss_now_mb, spread

TILE_STEP_SIZE = 0.5
NNUNET_MIRROR_AXES = (0, 1, 2)
DEFAULT_MAX_VERTEBRAE = 5
CODECARBON_COUNTRY_DEFAULT = "DEU"


def _dataset_json() -> dict:
    from nnunet_vertkd.benchmarks.dataset_json import CT_CHANNELS, NIFTI_ENDING
    from nnunet_vertkd.labels import nnunet_dataset_labels
    return {"channel_names": dict(CT_CHANNELS), "labels": nnunet_dataset_labels(), "file_ending": NIFTI_ENDING}


def load_scan(spec: dict):
    """(CT as (1, k, j, i) float32, nnU-Net properties, reference as (1, k, j, i) int16 or None)."""
    import SimpleITK as sitk
    img = sitk.ReadImage(spec["image"])
    data = sitk.GetArrayFromImage(img).astype(np.float32)[None]
    props = {"sitk_stuff": {"spacing": img.GetSpacing(), "origin": img.GetOrigin(), "direction": img.GetDirection()},
             "spacing": [abs(s) for s in img.GetSpacing()[::-1]]}
    seg = None
    if spec.get("mask"):
        seg = sitk.GetArrayFromImage(sitk.ReadImage(spec["mask"])).astype(np.int16)[None]
    return data, props, seg


def emissions_tracker(name: str, out_dir):
    """codecarbon's offline tracker when codecarbon is installed (optional), else None."""
    try:
        from codecarbon import OfflineEmissionsTracker
    except Exception:
        return None
    try:
        return OfflineEmissionsTracker(project_name=name, output_dir=out_dir or tempfile.gettempdir(),
                                       country_iso_code=os.environ.get("VERTKD_CODECARBON_COUNTRY",
                                                                       CODECARBON_COUNTRY_DEFAULT),
                                       log_level="error", save_to_file=False)
    except Exception:
        return None


def _count_calls(network, calls: dict):
    """Wrap ``network.forward`` to count calls and their seconds in ``calls``; returns the original forward."""
    forward = network.forward

    def counted(*a, **k):
        t = time.perf_counter()
        out = forward(*a, **k)
        calls["n"] += 1
        calls["s"] += time.perf_counter() - t
        return out
    network.forward = counted
    return forward


def sliding_window(net, pm, cm, data, props, spec: dict, device) -> dict:
    """One prediction with nnU-Net's sliding window; its network calls and their seconds."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    mirror = bool(spec.get("mirroring"))
    predictor = nnUNetPredictor(tile_step_size=TILE_STEP_SIZE, use_gaussian=True, use_mirroring=mirror,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, [net.state_dict()], _dataset_json(), "nnUNetTrainer",
                                    NNUNET_MIRROR_AXES if mirror else None)
    backend = spec.get("nnunet_backend") or "torch"
    if backend != "torch":
        from nnunet_vertkd.inference.backends import attach_to_nnunet_predictor
        backend = attach_to_nnunet_predictor(predictor, backend, device, int(spec["threads"]), [None], log=print)
    calls = {"n": 0, "s": 0.0}
    forward = _count_calls(predictor.network, calls)
    try:
        out = predictor.predict_single_npy_array(data, dict(props), None, None, False)
    finally:
        predictor.network.forward = forward
    return {"n_network_calls": calls["n"], "network_seconds": round(calls["s"], 3),
            "tiles_patch_size": list(cm.patch_size), "backend": backend, "output_shape": list(np.asarray(out).shape),
            "tile_step_size": TILE_STEP_SIZE, "mirroring": mirror}


def _patch_predictor(net, spec: dict, device, lr_axis: int, patch: int):
    from nnunet_vertkd.inference import backends
    runners, used = backends.make_runners([net], spec.get("backend"), device, int(spec["threads"]),
                                          (1, 2, patch, patch, patch), [None], f"bench_{spec['net']}", log=print)
    return backends.BackendPatchPredictor(runners, lr_axis if spec.get("mirroring") else None, used), used


def oracle_loop_inputs(predict_patch, seg_pp, settings):
    """(patch predictor, loop CT, start, settings, mode) of the oracle loop on the preprocessed reference."""
    from nnunet_vertkd.benchmarks.oracle_drive import network_then_oracle, oracle_settings, oracle_start
    labels = np.clip(seg_pp[0], 0, None).astype(np.float32)
    settings, _ = oracle_settings(settings, labels)
    return network_then_oracle(predict_patch), labels, oracle_start(labels), settings, "oracle"


def untrained_loop_inputs(predict_patch, data, props, pp_props, pm, ct_pp, settings, max_vertebrae: int):
    """(patch predictor, loop CT, start, settings, mode) of the untrained network driving the loop (capped)."""
    import dataclasses
    from nnunet_vertkd.inference.spine_location import heuristic_spine_mask, to_preprocessed_space
    raw_start = heuristic_spine_mask(data[0], props["spacing"], lr_axis=2, si_axis=0)  # LPI arrays
    start = to_preprocessed_space(raw_start.astype(np.float32), pp_props, pm.transpose_forward, ct_pp.shape)
    settings = dataclasses.replace(settings, MAX_VERTEBRAE=int(max_vertebrae))
    return predict_patch, ct_pp, start, settings, "untrained network (capped)"


def iterative_loop(net, pm, cm, data, props, seg, spec: dict, device) -> dict:
    """nnU-Net preprocessing of the scan, then the plugin's loop (oracle with a reference, else capped)."""
    from nnunet_vertkd.inference.iterative import IterativeSettings, segment_vertebrae_iteratively
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, left_right_axis, superior_axis
    t = time.perf_counter()
    data_pp, seg_pp, pp_props = cm.preprocessor_class(verbose=False).run_case_npy(
        data.copy(), None if seg is None else seg.copy(), copy.deepcopy(props), pm, cm, _dataset_json())
    ct_pp = np.ascontiguousarray(data_pp[0], dtype=np.float32)
    t_pre = time.perf_counter() - t
    s_axis, s_low = superior_axis(CANONICAL_ORIENTATION, pm.transpose_forward)
    lr_axis = left_right_axis(CANONICAL_ORIENTATION, pm.transpose_forward)
    p = int(spec["patch"])
    predict_patch, backend = _patch_predictor(net, spec, device, lr_axis, p)
    settings = IterativeSettings().scaled_to_spacing(cm.spacing)
    if seg_pp is not None:
        predict, loop_ct, start, settings, mode = oracle_loop_inputs(predict_patch, seg_pp, settings)
    else:
        predict, loop_ct, start, settings, mode = untrained_loop_inputs(
            predict_patch, data, props, pp_props, pm, ct_pp, settings,
            spec.get("max_vertebrae", DEFAULT_MAX_VERTEBRAE))
    t = time.perf_counter()
    res = segment_vertebrae_iteratively(predict, loop_ct, start, s_axis, s_low, (p, p, p), settings)
    return {"n_network_calls": res.n_network_calls, "n_vertebrae_found": res.n_vertebrae,
            "stop_reason": res.stop_reason, "loop_mode": mode, "preprocess_seconds": round(t_pre, 3),
            "loop_seconds": round(time.perf_counter() - t, 3), "patch": [p, p, p],
            "preprocessed_shape": list(ct_pp.shape), "mirroring": bool(spec.get("mirroring")), "backend": backend}


def measure_scan(spec: dict) -> dict:
    """``spec['scan_runs']`` whole-scan predictions with ``spec['net']`` (nnunet: sliding window; teacher or
    student: the iterative loop); seconds per scan, the last run's details, peak memory, CO2 when measured."""
    import torch
    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    pm, cm = load_plans(spec["plans"])
    net, _ = build_net(spec["net"], spec["plans"])
    net = net.eval().to(device)
    data, props, seg = load_scan(spec)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_now_mb()
    tracker = emissions_tracker(f"vertkd_{spec['net']}_scan", spec.get("codecarbon_dir"))
    if tracker is not None:
        tracker.start()
    runs, extra = [], {}
    for _ in range(int(spec["scan_runs"])):
        t = time.perf_counter()
        if spec["net"] == "nnunet":
            extra = sliding_window(net, pm, cm, data, props, spec, device)
        else:
            extra = iterative_loop(net, pm, cm, data, props, seg, spec, device)
        sync(device)
        runs.append(time.perf_counter() - t)
    emissions = None
    if tracker is not None:
        try:
            emissions = tracker.stop()
        except Exception:
            emissions = None
    res = {"net": spec["net"], "seconds_per_scan": spread(runs), **extra, "device": str(device),
           "threads": torch.get_num_threads(),
           "co2_kg_per_scan": (emissions / len(runs)) if emissions is not None else None}
    res.update(memory_fields(device, rss_before))
    return res
