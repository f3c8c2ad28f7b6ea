"""``vertkd_benchmark efficiency``: cost of the teacher, the student and nnU-Net's default planned network.

What is measured (paper 000, Table 5 / Fig. 7), each network in a **fresh subprocess** so that peak memory
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
("oracle" mode, ``nnunet_vertkd.inference.oracle.OraclePredictor``): the calls per scan are those of a model that
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
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from nnunet_vertkd.benchmarks.pipeline import console_script

NETS = ("teacher", "student", "nnunet")
NET_TITLES = {"teacher": "VertKD teacher (16-32-64-128)", "student": "VertKD student (8-16-32-64)",
              "nnunet": "nnU-Net default (planned PlainConvUNet)"}
RESULT_MARKER = "@@VERTKD_BENCH_RESULT@@"
NNUNET_NUM_CLASSES = 27  # background + 26 vertebra labels (labels.nnunet_dataset_labels())
PLANNING_DATASET_ID = 990
PLANNING_DATASET_NAME = f"Dataset{PLANNING_DATASET_ID}_VertKDBenchmark"


# ---------------------------------------------------------------------------------------------------- machine
def machine_info(device: str = "cpu") -> dict:
    import torch
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores_available = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_available = os.cpu_count()
    mem_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem_gb = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "cores_available": cores_available, "memory_gb": mem_gb,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(), "gpu": None}
    try:
        import nnunetv2  # noqa: F401
        from importlib.metadata import version
        info["nnunetv2"] = version("nnunetv2")
    except Exception:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def describe_machine(info: dict) -> str:
    s = (f"CPU {info.get('cpu')} ({info.get('cores_available')} cores available of {info.get('cpu_count')}), "
         f"{info.get('memory_gb')} GB RAM, torch {info.get('torch')}, nnU-Net {info.get('nnunetv2', '?')}, "
         f"Python {info.get('python')}, GPU: {info.get('gpu') or 'none'}")
    if info.get("load_average") is not None:
        s += f"; load average at start {info['load_average']}"
    return s


# ---------------------------------------------------------------------------------------------------- plans
def _nnunet_env(workdir: Path) -> dict:
    from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        p = workdir / name
        p.mkdir(parents=True, exist_ok=True)
        env[name] = str(p)
    env["nnUNet_compile"] = "false"
    env.pop("nnUNet_n_proc_DA", None)  # 0 crashes the planner
    return ensure_ext_trainer_env(env)


def prepare_scan(scan: Path, mask: Optional[Path], out_dir: Path, spacing_mm: float = 1.0) -> dict:
    """Reorient the scan (and mask) to LPI and resample to ``spacing_mm`` isotropic, as vertkd_convert_verse does;
    masks are remapped VerSe -> consecutive nnU-Net labels. Returns {"image", "mask"|None, "shape", ...}."""
    import numpy as np
    import SimpleITK as sitk
    from nnunet_vertkd.labels import VERSE_TO_NNUNET
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, orientation_of

    out_dir.mkdir(parents=True, exist_ok=True)
    img = sitk.ReadImage(str(scan))
    orig_info = {"file": scan.name, "size": list(img.GetSize()), "spacing_mm": [round(s, 4) for s in img.GetSpacing()],
                 "orientation": orientation_of(img)}
    img = sitk.DICOMOrient(img, CANONICAL_ORIENTATION)
    new_spacing = [float(spacing_mm)] * 3
    new_size = [max(1, int(round(sz * sp / spacing_mm))) for sz, sp in zip(img.GetSize(), img.GetSpacing())]

    def resample(im, interp, default):
        return sitk.Resample(im, new_size, sitk.Transform(), interp, im.GetOrigin(), new_spacing, im.GetDirection(),
                             default, im.GetPixelID())

    img_r = resample(sitk.Cast(img, sitk.sitkFloat32), sitk.sitkLinear, -1024.0)
    image_path = out_dir / "bench_0000.nii.gz"
    sitk.WriteImage(img_r, str(image_path))
    mask_path = None
    n_vertebrae = None
    if mask is not None:
        m = sitk.ReadImage(str(mask))
        arr = np.rint(sitk.GetArrayFromImage(m)).astype(np.int32)
        lut = np.zeros(max(int(arr.max()), 28) + 1, np.uint8)
        for v, n in VERSE_TO_NNUNET.items():
            lut[v] = n
        m2 = sitk.GetImageFromArray(lut[np.clip(arr, 0, None)])
        m2.CopyInformation(m)
        m2 = sitk.DICOMOrient(m2, CANONICAL_ORIENTATION)
        m_r = resample(m2, sitk.sitkNearestNeighbor, 0)
        mask_path = out_dir / "bench.nii.gz"
        sitk.WriteImage(m_r, str(mask_path))
        n_vertebrae = int(len(np.unique(sitk.GetArrayFromImage(m_r))) - 1)
    return {"image": str(image_path), "mask": str(mask_path) if mask_path else None, "original": orig_info,
            "size_1mm": new_size, "spacing_mm": spacing_mm, "n_vertebrae": n_vertebrae}


def make_default_plans(prepared: dict, workdir: Path, log=print) -> Path:
    """nnU-Net's default plans (ExperimentPlanner, 3d_fullres) for a one-case dataset made of the prepared scan,
    by nnU-Net's own console scripts. Returns the plans file."""
    import numpy as np
    import SimpleITK as sitk
    from nnunet_vertkd.labels import nnunet_dataset_labels
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY

    env = _nnunet_env(workdir)
    raw = Path(env["nnUNet_raw"]) / PLANNING_DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    shutil.copy(prepared["image"], raw / "imagesTr" / "bench_0000.nii.gz")
    if prepared.get("mask"):
        shutil.copy(prepared["mask"], raw / "labelsTr" / "bench.nii.gz")
    else:  # no reference: a bone threshold stands in for the foreground (only intensities of the fingerprint)
        img = sitk.ReadImage(prepared["image"])
        lab = sitk.GetImageFromArray((sitk.GetArrayFromImage(img) > 150).astype(np.uint8))
        lab.CopyInformation(img)
        sitk.WriteImage(lab, str(raw / "labelsTr" / "bench.nii.gz"))
    with open(raw / "dataset.json", "w", encoding="utf-8") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": nnunet_dataset_labels(), "numTraining": 1,
                   "file_ending": ".nii.gz",
                   DATASET_JSON_KEY: {"kind": "vertebrae", "orientation": CANONICAL_ORIENTATION,
                                      "spacing_mm": prepared["spacing_mm"]}}, f, indent=1)
    for cmd in (["nnUNetv2_extract_fingerprint", "-d", str(PLANNING_DATASET_ID), "-np", "1"],
                ["nnUNetv2_plan_experiment", "-d", str(PLANNING_DATASET_ID)]):
        log("$ " + " ".join(cmd))
        cmd = [console_script(cmd[0])] + cmd[1:]
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stdout[-3000:]}")
    plans = Path(env["nnUNet_preprocessed"]) / PLANNING_DATASET_NAME / "nnUNetPlans.json"
    if not plans.is_file():
        raise RuntimeError(f"nnU-Net planning wrote no {plans}")
    return plans


def synthetic_scan(out_dir: Path, seed: int = 0, scale: float = 0.5) -> Optional[dict]:
    """Generate one synthetic VerSe case (vertkd_make_synthetic) for the benchmark; None when unavailable."""
    cmd = [sys.executable, "-m", "nnunet_vertkd.synthetic.cli", str(out_dir), "--cases", "1",
           "--seed", str(seed), "--scale", str(scale)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return None
    cts = sorted(out_dir.rglob("*_ct.nii.gz"))
    for ct in cts:
        stem = ct.name[: -len("_ct.nii.gz")]
        masks = list(out_dir.rglob(f"{stem}_seg-vert_msk.nii.gz"))
        if masks:
            return {"scan": ct, "mask": masks[0]}
    return None


def default_scan() -> Optional[dict]:
    """The real sample sub-verse005 (lumbar, 1 mm) when the repository's ../shared/data/verse_sample exists."""
    from nnunet_vertkd.benchmarks.pipeline import real_sample_dir
    root = real_sample_dir()
    ct = list(root.rglob("sub-verse005_ct.nii.gz")) if root is not None else []
    mask = list(root.rglob("sub-verse005_seg-vert_msk.nii.gz")) if root is not None else []
    if ct and mask:
        return {"scan": ct[0], "mask": mask[0]}
    return None


# ---------------------------------------------------------------------------------------------------- child side
def _rss_now_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024 ** 2
    except (OSError, ValueError):
        return float("nan")


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 ** 2 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def _load_plans(plans_file: str):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm = PlansManager(load_json(plans_file))
    return pm, pm.get_configuration("3d_fullres")


def build_net(name: str, plans_file: Optional[str] = None):
    """(network, input channels) for 'teacher', 'student' or 'nnunet' (deep supervision off, as at inference)."""
    from nnunet_vertkd.trainers.network import STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet
    if name == "teacher":
        return VertKDUNet(2, 1, TEACHER_FEATURES, deep_supervision=False), 2
    if name == "student":
        return VertKDUNet(2, 1, STUDENT_FEATURES, deep_supervision=False), 2
    if name == "nnunet":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        _, cm = _load_plans(plans_file)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, 1, NNUNET_NUM_CLASSES,
                                     allow_init=True, deep_supervision=False)
        return net, 1
    raise ValueError(f"unknown network {name!r} (choose from {NETS})")


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def _spread(values: List[float]) -> dict:
    v = sorted(values)
    if not v:
        return {}
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2], "n": len(v),
            "values": [round(x, 5) for x in values]}


def child_patch(spec: dict) -> dict:
    """Parameters, FLOPs, time and peak memory of one network on one patch (runs in its own process)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from nnunet_vertkd.trainers.network import count_parameters

    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    net, c_in = build_net(spec["net"], spec.get("plans"))
    params = count_parameters(net)
    net = net.eval().to(device)
    p = int(spec["patch"])
    x = torch.randn(1, c_in, p, p, p, device=device)
    backend = spec.get("backend") or "torch"
    runner = None
    if backend != "torch" or spec.get("channels_last"):
        from nnunet_vertkd.inference import backends
        runner = backends.make_runner(net, backend, device, int(spec["threads"]), tuple(x.shape), None,
                                      f"bench_{spec['net']}")
        if spec.get("task") == "export":  # only the export (cached for the timing child)
            return {"net": spec["net"], "backend": backend}
        x_np = x.cpu().numpy()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_now_mb()
    times = []
    with torch.inference_mode():
        for i in range(int(spec["warmup"]) + int(spec["runs"])):
            _sync(device)
            t = time.perf_counter()
            out = net(x) if runner is None else runner(x_np)
            _sync(device)
            if i >= int(spec["warmup"]):
                times.append(time.perf_counter() - t)
        out_shape = list(out.shape)
        del out
        if runner is not None:  # the backend's numbers against torch (probabilities)
            from nnunet_vertkd.inference.backends import compare_to_torch
            max_diff = compare_to_torch(net, runner, tuple(x.shape))
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
        flops = int(counter.get_total_flops())
    res = {"net": spec["net"], "parameters": params, "flops": flops, "patch": [p, p, p], "input_channels": c_in,
           "output_shape": out_shape, "seconds_per_patch": _spread(times), "device": str(device),
           "threads": torch.get_num_threads(), "backend": backend + ("_channels_last" if spec.get("channels_last") else "")}
    if runner is not None:
        res["max_abs_probability_difference_to_torch"] = max_diff
    if device.type == "cuda":
        res["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 1024 ** 2
        res["memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        res["peak_memory_mb"] = _peak_rss_mb()
        res["memory_increase_mb"] = res["peak_memory_mb"] - rss_before
        res["memory_kind"] = "max RSS of the process (getrusage)"
    return res


def _emissions_tracker(name: str, out_dir: Optional[str]):
    try:
        from codecarbon import OfflineEmissionsTracker  # optional
    except Exception:
        return None
    try:
        return OfflineEmissionsTracker(project_name=name, output_dir=out_dir or tempfile.gettempdir(),
                                       country_iso_code=os.environ.get("VERTKD_CODECARBON_COUNTRY", "DEU"),
                                       log_level="error", save_to_file=False)
    except Exception:
        return None


def child_scan(spec: dict) -> dict:
    """Whole-scan prediction with the iterative loop (teacher/student) or nnU-Net's sliding window (nnunet)."""
    import numpy as np
    import SimpleITK as sitk
    import torch
    from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, left_right_axis, superior_axis

    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    pm, cm = _load_plans(spec["plans"])
    net, _ = build_net(spec["net"], spec["plans"])
    net = net.eval().to(device)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{str(i): i for i in range(1, 27)}},
                    "file_ending": ".nii.gz"}
    img = sitk.ReadImage(spec["image"])
    data = sitk.GetArrayFromImage(img).astype(np.float32)[None]
    props = {"sitk_stuff": {"spacing": img.GetSpacing(), "origin": img.GetOrigin(), "direction": img.GetDirection()},
             "spacing": [abs(s) for s in img.GetSpacing()[::-1]]}
    seg = None
    if spec.get("mask"):
        seg = sitk.GetArrayFromImage(sitk.ReadImage(spec["mask"])).astype(np.int16)[None]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_now_mb()
    tracker = _emissions_tracker(f"vertkd_{spec['net']}_scan", spec.get("codecarbon_dir"))
    runs = []
    extra = {}
    if tracker is not None:
        tracker.start()
    for r in range(int(spec["scan_runs"])):
        t0 = time.perf_counter()
        if spec["net"] == "nnunet":
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
            mirror = bool(spec.get("mirroring"))
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                        perform_everything_on_device=device.type == "cuda", device=device,
                                        verbose=False, verbose_preprocessing=False, allow_tqdm=False)
            predictor.manual_initialization(net, pm, cm, [net.state_dict()], dataset_json, "nnUNetTrainer",
                                            (0, 1, 2) if mirror else None)
            calls = {"n": 0, "s": 0.0}
            nn_backend = spec.get("nnunet_backend") or "torch"
            if nn_backend != "torch":
                from nnunet_vertkd.inference.backends import attach_to_nnunet_predictor
                nn_backend = attach_to_nnunet_predictor(predictor, nn_backend, device, int(spec["threads"]), [None],
                                                        log=print)
            timed_net = predictor.network
            forward = timed_net.forward

            def counted(*a, **k):
                t_net = time.perf_counter()
                o = forward(*a, **k)
                calls["n"] += 1
                calls["s"] += time.perf_counter() - t_net
                return o
            timed_net.forward = counted
            out = predictor.predict_single_npy_array(data, dict(props), None, None, False)
            timed_net.forward = forward
            extra = {"n_network_calls": calls["n"], "network_seconds": round(calls["s"], 3),
                     "tiles_patch_size": list(cm.patch_size), "backend": nn_backend,
                     "output_shape": list(np.asarray(out).shape), "tile_step_size": 0.5, "mirroring": mirror}
        else:
            from nnunet_vertkd.inference.iterative import IterativeSettings, segment_vertebrae_iteratively
            from nnunet_vertkd.inference.model_loading import PatchPredictor
            tp = time.perf_counter()
            preprocessor = cm.preprocessor_class(verbose=False)
            import copy as _copy
            data_pp, seg_pp, pp_props = preprocessor.run_case_npy(data.copy(), None if seg is None else seg.copy(),
                                                           _copy.deepcopy(props), pm, cm, dataset_json)
            ct_pp = np.ascontiguousarray(data_pp[0], dtype=np.float32)
            t_pre = time.perf_counter() - tp
            s_axis, s_low = superior_axis(CANONICAL_ORIENTATION, pm.transpose_forward)
            lr_axis = left_right_axis(CANONICAL_ORIENTATION, pm.transpose_forward)
            p = int(spec["patch"])
            settings = IterativeSettings().scaled_to_spacing(cm.spacing)
            from nnunet_vertkd.inference import backends
            runners, used_backend = backends.make_runners([net], spec.get("backend"), device, int(spec["threads"]),
                                                          (1, 2, p, p, p), [None], f"bench_{spec['net']}", log=print)
            patch_predictor = backends.BackendPatchPredictor(runners, lr_axis if spec.get("mirroring") else None,
                                                             used_backend)
            if seg_pp is not None:
                from scipy import ndimage
                from nnunet_vertkd.inference.oracle import ORACLE_PAD_VALUE, OraclePredictor
                labels = np.clip(seg_pp[0], 0, None).astype(np.float32)
                start = ndimage.binary_dilation(labels > 0, iterations=3).astype(np.float32)
                min_frag = max(1, int(0.25 * min(np.bincount(labels.astype(np.int64).ravel())[1:][
                    np.bincount(labels.astype(np.int64).ravel())[1:] > 0])))
                settings.MIN_START_FRAGMENT_VOXELS = min(settings.MIN_START_FRAGMENT_VOXELS, min_frag)
                settings.MIN_CONTINUE_FRAGMENT_VOXELS = min(settings.MIN_CONTINUE_FRAGMENT_VOXELS, min_frag)

                oracle = OraclePredictor()
                settings.CT_PAD_VALUE = ORACLE_PAD_VALUE

                def predict_patch(patch):
                    patch_predictor(patch)  # the real network, for the timing; its output is not used
                    return oracle(patch)
                loop_ct, mode = labels, "oracle"
            else:
                from nnunet_vertkd.inference.spine_location import heuristic_spine_mask, to_preprocessed_space
                raw_start = heuristic_spine_mask(data[0], props["spacing"], lr_axis=2, si_axis=0)  # LPI arrays
                start = to_preprocessed_space(raw_start.astype(np.float32), pp_props, pm.transpose_forward,
                                              ct_pp.shape)
                settings.MAX_VERTEBRAE = int(spec.get("max_vertebrae", 5))
                predict_patch, loop_ct, mode = patch_predictor, ct_pp, "untrained network (capped)"
            ti = time.perf_counter()
            res = segment_vertebrae_iteratively(predict_patch, loop_ct, start, s_axis, s_low, (p, p, p), settings)
            t_loop = time.perf_counter() - ti
            extra = {"n_network_calls": res.n_network_calls, "n_vertebrae_found": res.n_vertebrae,
                     "stop_reason": res.stop_reason, "loop_mode": mode, "preprocess_seconds": round(t_pre, 3),
                     "loop_seconds": round(t_loop, 3), "patch": [p, p, p], "preprocessed_shape": list(ct_pp.shape),
                     "mirroring": bool(spec.get("mirroring")), "backend": used_backend}
        _sync(device)
        runs.append(time.perf_counter() - t0)
    emissions = None
    if tracker is not None:
        try:
            emissions = tracker.stop()
        except Exception:
            emissions = None
    res = {"net": spec["net"], "seconds_per_scan": _spread(runs), **extra, "device": str(device),
           "threads": torch.get_num_threads(),
           "co2_kg_per_scan": (emissions / len(runs)) if emissions is not None else None}
    if device.type == "cuda":
        res["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 1024 ** 2
    else:
        res["peak_memory_mb"] = _peak_rss_mb()
        res["memory_increase_mb"] = res["peak_memory_mb"] - rss_before
    return res


def _child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["task"] in ("patch", "export"):
        res = child_patch(spec)
    elif spec["task"] == "e2e":
        from nnunet_vertkd.benchmarks.whole_scan import child_e2e
        res = child_e2e(spec)
    else:
        res = child_scan(spec)
    print(RESULT_MARKER + json.dumps(res), flush=True)


def run_child(spec: dict, log=print) -> dict:
    """Run one measurement in a fresh Python process; its output is streamed, the result parsed."""
    env = dict(os.environ)
    env.setdefault("nnUNet_compile", "false")
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    cmd = [sys.executable, "-m", "nnunet_vertkd.benchmarks.efficiency", "--child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    result, tail = None, []
    for line in proc.stdout:
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
        else:
            tail.append(line)
            tail = tail[-50:]
            log("    " + line.rstrip())
    proc.wait()
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"benchmark child {spec['task']}/{spec.get('net')} failed (exit {proc.returncode}):\n"
                           + "".join(tail))
    return result


# ---------------------------------------------------------------------------------------------------- report
def _fmt(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _t(sp: dict, nd=3) -> str:
    if not sp:
        return "–"
    if sp.get("n", 0) <= 1:
        return f"{sp['median']:.{nd}f}"
    return f"{sp['median']:.{nd}f} [{sp['min']:.{nd}f}–{sp['max']:.{nd}f}]"


def format_markdown(report: dict) -> str:
    a = report["settings"]
    lines = [f"# Efficiency benchmark ({a['device']}, patch {a['patch']}³)", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {describe_machine(report['machine'])}.", ""]
    if report.get("note"):
        lines += [f"Note: {report['note']}", ""]
    lines += [f"Date: {report['date']}; {a['runs']} timed runs per patch after {a['warmup']} warm-up run(s); "
              f"{a['threads']} torch thread(s); times are median [min–max] in seconds.", "",
              "| network | parameters | GFLOPs / patch | s / patch | peak memory (MB) | memory increase (MB) |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in NETS:
        r = report["patch"].get(name)
        if not r:
            continue
        lines.append(f"| {NET_TITLES[name]} | {r['parameters']:,} | {r['flops'] / 1e9:.2f} | "
                     f"{_t(r['seconds_per_patch'])} | {_fmt(r['peak_memory_mb'], 0)} | "
                     f"{_fmt(r.get('memory_increase_mb'), 0)} |")
    if report.get("patch_backends"):
        lines += ["", "### Time per patch by inference backend", "",
                  "| network | backend | s / patch | × vs torch | peak memory (MB) | max abs diff of probabilities vs torch |",
                  "|---|---|---:|---:|---:|---:|"]
        for name in NETS:
            rows = report["patch_backends"].get(name) or {}
            t_torch = (rows.get("torch") or {}).get("seconds_per_patch", {}).get("median")
            for backend, r in rows.items():
                t = r["seconds_per_patch"]["median"]
                lines.append(f"| {NET_TITLES[name]} | {backend} | {_t(r['seconds_per_patch'])} | "
                             f"{_fmt(t_torch / t if t_torch else None, 2)} | {_fmt(r['peak_memory_mb'], 0)} | "
                             f"{_fmt(r.get('max_abs_probability_difference_to_torch'), 7) if backend != 'torch' else '–'} |")
    if report.get("scan"):
        s = report["scan_info"]
        lines += ["", f"## Whole scan: {s['original']['file']} (size {s['original']['size']}, spacing "
                      f"{s['original']['spacing_mm']} mm, {s['original']['orientation']}; "
                      f"{s.get('n_vertebrae') if s.get('n_vertebrae') is not None else '?'} annotated vertebrae), "
                      f"resampled to {s['spacing_mm']} mm LPI: {s['size_1mm']} voxels", "",
                  "| method | network calls | s / scan | peak memory (MB) | memory increase (MB) | CO₂ (g) | notes |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name in [k for k in report["scan"]]:
            r = report["scan"].get(name)
            if not r:
                continue
            if name.startswith("nnunet"):
                method = "nnU-Net sliding window (nnUNetPredictor, planned net)"
                notes = (f"tile {r.get('tiles_patch_size')}, step 0.5, Gaussian, "
                         f"mirroring {'on' if r.get('mirroring') else 'off'}, backend {r.get('backend', 'torch')}"
                         + ("; **estimated**: mirroring-off time + 7 × its network seconds, not run" if r.get("estimated") else ""))
            else:
                method = f"iterative loop, {name}"
                notes = (f"{r.get('loop_mode')}; {r.get('n_vertebrae_found')} vertebrae, stop: "
                         f"{r.get('stop_reason')}; preprocessing {r.get('preprocess_seconds')} s; "
                         f"backend {r.get('backend', 'torch')}")
            co2 = r.get("co2_kg_per_scan")
            lines.append(f"| {method} | {r.get('n_network_calls')} | {_t(r['seconds_per_scan'], 2)} | "
                         f"{_fmt(r['peak_memory_mb'], 0)} | {_fmt(r.get('memory_increase_mb'), 0)} | "
                         f"{_fmt(co2 * 1000 if co2 is not None else None, 3)} | {notes} |")
        if not report.get("codecarbon"):
            lines += ["", "CO₂: codecarbon is not installed (`pip install codecarbon` to measure it)."]
    if report.get("e2e"):
        lines += format_e2e(report)
    lines += ["", "Columns: see docs/benchmarks.md. Networks are untrained (random weights); the iterative loop's "
                  "network calls come from the oracle mode described there.", ""]
    return "\n".join(lines)


def format_e2e(report: dict) -> List[str]:
    info = report.get("e2e_info", {})
    nn = {k: v for k, v in report.get("scan", {}).items() if k.startswith("nnunet")}
    ref = {k: v["seconds_per_scan"]["median"] for k, v in nn.items()}
    lines = ["", f"## End to end with vertkd_predict's predictor ({info.get('scan')}; spine model: "
                 f"{info.get('spine_model')})", "",
             "Read → checks → reorientation → nnU-Net preprocessing → spine step → loop → export → written mask, "
             "centroids and record, one process per row, CPU. Seconds: best of the runs (wall time of "
             "`predict_from_files`); stages from the record of the last run. "
             "× nnU-Net: nnU-Net's sliding-window seconds (rows above, mirroring off / on) ÷ this row's.", "",
             "| model | backend | centres | mirroring | calls | calls / vertebra | vertebrae found / reference | "
             "Dice mean | s / scan | read | preprocess | spine | loop (network) | export | peak RSS (MB) | "
             "× nnU-Net (off / on) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["e2e"]:
        st = r["stages"]
        best = min(r["seconds_per_scan"])
        n_ref = r.get("n_reference_vertebrae")
        ratios = " / ".join(_fmt(ref[k] / best, 1) for k in ("nnunet", "nnunet_mirroring_on") if k in ref) or "–"
        backend = ", ".join(f"{k} {v}" for k, v in (r.get("backend") or {}).items())
        lines.append(
            f"| {r['name']} | {backend} | {r['n_convergence_centres']} | {'on' if r.get('mirroring') else 'off'} | "
            f"{r['n_network_calls']} | {_fmt(r['n_network_calls'] / max(1, r['n_vertebrae_found']), 2)} | "
            f"{r['n_vertebrae_found']} / {n_ref if n_ref is not None else '?'} | "
            f"{_fmt(r.get('dice_mean'), 3) if not r.get('oracle') else 'oracle'} | {best:.2f} | "
            f"{_fmt(st.get('read'), 2)} | {_fmt(st.get('preprocess'), 2)} | {_fmt(st.get('spine'), 2)} | "
            f"{_fmt(st.get('iterative'), 2)} ({_fmt(r.get('network_seconds_in_loop'), 2)}) | {_fmt(st.get('export'), 2)} | "
            f"{_fmt(r['peak_memory_mb'], 0)} | {ratios} |")
    return lines


def format_table(report: dict) -> str:
    rows = [("network", "params", "GFLOPs", "s/patch (median [min-max])", "peak MB")]
    for name in NETS:
        r = report["patch"].get(name)
        if r:
            rows.append((name, f"{r['parameters']:,}", f"{r['flops'] / 1e9:.2f}", _t(r["seconds_per_patch"]),
                         _fmt(r["peak_memory_mb"], 0)))
    if report.get("scan"):
        rows.append(("", "", "", "", ""))
        rows.append(("whole scan", "calls", "", "s/scan", "peak MB"))
        for name in NETS:
            r = report["scan"].get(name)
            if r:
                rows.append((name, str(r.get("n_network_calls")), "", _t(r["seconds_per_scan"], 2),
                             _fmt(r["peak_memory_mb"], 0)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


# ---------------------------------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="vertkd_efficiency", help="output folder for efficiency.json / efficiency.md "
                                                              "(default: %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="timed forward passes per network (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up passes (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: %(default)s)")
    p.add_argument("--patch", type=int, default=128, help="cubic patch edge in voxels (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores available to this process)")
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
                        "the committed tables before issue 12; 'auto' = the fastest installed)")
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
    p.add_argument("--e2e-mirroring", nargs="+", choices=("off", "on"), default=["off"],
                   help="test-time mirroring for the --e2e rows of trained models (default: off)")


def run(args, argv_for_record: Optional[List[str]] = None) -> dict:
    import torch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: measuring on the CPU", flush=True)
        device = "cpu"
    threads = args.threads or machine_info()["cores_available"] or 1
    t_start = time.time()
    report = {"command": "vertkd_benchmark efficiency " + " ".join(argv_for_record or []),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(device),
              "settings": {"device": device, "patch": args.patch, "runs": args.runs, "warmup": args.warmup,
                           "threads": threads, "scan_runs": args.scan_runs, "mirroring": args.mirroring},
              "note": args.note, "patch": {}, "scan": {}, "codecarbon": _has_codecarbon()}
    work = Path(tempfile.mkdtemp(prefix="vertkd_efficiency_"))
    try:
        plans = args.plans
        prepared = None
        scan = None
        if args.whole_spine:
            from nnunet_vertkd.benchmarks.whole_scan import whole_spine_scan
            print("[efficiency] generating the synthetic whole spine (C1-L5, scale 1.0, 1 mm) ...", flush=True)
            scan = whole_spine_scan(work / "whole_spine")
        elif args.scan:
            scan = {"scan": Path(args.scan), "mask": Path(args.scan_mask) if args.scan_mask else None}
        elif not (args.no_scan and plans):
            scan = default_scan()
            if scan is None:
                print("generating one synthetic case for the whole-scan measurement ...", flush=True)
                scan = synthetic_scan(work / "synthetic")
            if scan is None and not plans:
                raise SystemExit("no scan available to plan nnU-Net's network: give --scan or --plans")
        if scan is not None:
            print(f"[efficiency] scan {scan['scan']} (mask: {scan.get('mask')}) -> 1 mm LPI", flush=True)
            prepared = prepare_scan(Path(scan["scan"]), Path(scan["mask"]) if scan.get("mask") else None,
                                    work / "scan")
        if not plans:
            print("[efficiency] planning nnU-Net's default 3d_fullres network for the scan (nnU-Net's planner)",
                  flush=True)
            plans = str(make_default_plans(prepared, work / "nnunet"))
        shutil.copy(plans, out / "nnunet_plans_used.json")
        from batchgenerators.utilities.file_and_folder_operations import load_json
        cfg = load_json(plans)["configurations"]["3d_fullres"]
        report["nnunet_plan"] = {"patch_size": cfg.get("patch_size"), "spacing": cfg.get("spacing"),
                                 "architecture": cfg["architecture"]["network_class_name"],
                                 "features_per_stage": cfg["architecture"]["arch_kwargs"].get("features_per_stage"),
                                 "n_stages": cfg["architecture"]["arch_kwargs"].get("n_stages")}
        base = {"device": device, "threads": threads, "patch": args.patch, "runs": args.runs, "warmup": args.warmup,
                "plans": plans}
        for name in ([] if args.no_patch else [n for n in args.nets if n in (args.patch_nets or args.nets)]):
            for backend in patch_backends(args, device):
                print(f"[efficiency] {name} on {backend}: {args.patch}³ patch, {args.warmup} warm-up + {args.runs} "
                      f"timed runs", flush=True)
                spec = {**base, "task": "patch", "net": name, "backend": backend.replace("_channels_last", ""),
                        "channels_last": backend.endswith("_channels_last")}
                if spec["backend"] != "torch":  # export (cached) in its own process: not in the timed one's memory
                    run_child({**spec, "task": "export"})
                r = run_child(spec)
                report["patch"].setdefault(name, r)  # the first backend (torch) for the main table
                report.setdefault("patch_backends", {}).setdefault(name, {})[backend] = r
                print(f"    {r['parameters']:,} parameters, {r['flops'] / 1e9:.2f} GFLOPs, "
                      f"{r['seconds_per_patch']['median']:.3f} s median, peak {r['peak_memory_mb']:.0f} MB", flush=True)
        if args.e2e and scan is not None:
            run_e2e(args, report, scan, plans, work, threads)
        if prepared is not None and not args.no_scan:
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
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["total_seconds"] = round(time.time() - t_start, 1)
    with open(out / "efficiency.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    md = format_markdown(report)
    with open(out / "efficiency.md", "w", encoding="utf-8") as f:
        f.write(md)
    print()
    print(format_table(report))
    print(f"\nwritten: {out / 'efficiency.json'}, {out / 'efficiency.md'} ({report['total_seconds']} s)")
    return report


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


def add_mirroring_estimate(report: dict) -> None:
    """nnU-Net with mirroring on costs 8 network calls per tile (its 3 axes' 7 flips + the tile): when only the
    mirroring-off run was measured, estimate the other as its time + 7 x its network seconds (marked)."""
    off = report["scan"].get("nnunet")
    if not off or off.get("mirroring") or "nnunet_mirroring_on" in report["scan"] or not off.get("network_seconds"):
        return
    runs = max(1, int(report["settings"].get("scan_runs") or 1))
    extra = 7 * off["network_seconds"] / runs
    est = {k: off[k] for k in ("tiles_patch_size", "backend", "peak_memory_mb", "memory_increase_mb")
           if k in off}
    est.update({"n_network_calls": 8 * off["n_network_calls"] // runs, "mirroring": True, "estimated": True,
                "seconds_per_scan": _spread([off["seconds_per_scan"]["median"] + extra])})
    report["scan"]["nnunet_mirroring_on"] = est


def run_e2e(args, report: dict, scan: dict, plans: str, work: Path, threads: int) -> None:
    """End-to-end rows (whole_scan.py): 1 mm recipe student/teacher with the oracle loop, trained models as they are."""
    from nnunet_vertkd.benchmarks.whole_scan import make_recipe_model_folder
    spine = args.e2e_spine
    trained = args.e2e_trained
    try:
        from nnunet_vertkd import pretrained
        if pretrained.available():
            shipped_student, shipped_spine = pretrained.model_folders()
            spine = spine or shipped_spine
            trained = [shipped_student] if trained is None else trained
    except Exception:
        pass
    trained = trained or []
    report["e2e"] = []
    report["e2e_info"] = {"spine_model": spine or "heuristic", "scan": str(Path(scan["scan"]).name)}
    base = {"task": "e2e", "threads": threads, "image": str(scan["scan"]),
            "mask": str(scan["mask"]) if scan.get("mask") else None, "spine_model": spine, "runs": args.scan_runs}
    jobs = []
    for net in args.nets:
        if net == "nnunet":
            continue
        for spacing in args.e2e_spacings:  # the same field of view (--patch mm) at every spacing
            folder = make_recipe_model_folder(work / f"recipe_{net}_{spacing:g}mm", net, plans, spacing_mm=spacing,
                                              patch=int(round(args.patch / spacing)))
            for backend in args.e2e_backends:
                for n in args.e2e_centres:
                    jobs.append({"name": f"{net}, recipe {spacing:g} mm, {int(round(args.patch / spacing))}³ (oracle loop)",
                                 "model": folder, "oracle": True, "backend": backend, "mirroring": False,
                                 "settings": {"N_CONVERGENCE_CENTRES": n}})
    for folder in trained:
        for backend in args.e2e_backends:
            for mirror in args.e2e_mirroring:
                for n in args.e2e_centres:
                    jobs.append({"name": f"trained {Path(folder).name.split('__')[0]}", "model": folder,
                                 "oracle": False, "backend": backend, "mirroring": mirror == "on",
                                 "settings": {"N_CONVERGENCE_CENTRES": n}})
    for job in jobs:
        print(f"[efficiency] end to end: {job['name']}, backend {job['backend']}, "
              f"{job['settings']['N_CONVERGENCE_CENTRES']} centres, mirroring {job['mirroring']}", flush=True)
        r = run_child({**base, **job})
        r.update({"name": job["name"], "model": job["model"]})
        report["e2e"].append(r)
        print(f"    {r['n_network_calls']} calls, {r['n_vertebrae_found']} vertebrae, "
              f"{min(r['seconds_per_scan']):.2f} s, stages {r['stages']}, peak {r['peak_memory_mb']:.0f} MB", flush=True)


def _has_codecarbon() -> bool:
    try:
        import codecarbon  # noqa: F401
        return True
    except Exception:
        return False


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        raise SystemExit("use: vertkd_benchmark efficiency --help")
