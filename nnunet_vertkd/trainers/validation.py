"""Final validation of the vertebra trainers, the way the model is used: iterative top-down segmentation.

nnU-Net's ``perform_actual_validation`` feeds only the dataset's channels to a sliding-window predictor and
cannot run a memory-channel network. This replacement, for every validation case of the fold:

1. loads the preprocessed case (CT normalised exactly as for training, nnU-Net's preprocessed space);
2. runs ``nnunet_vertkd.inference.iterative.segment_vertebrae_iteratively`` with a ``predict_patch`` closure
   around the trained network (deep supervision off, eval mode, CUDA autocast like nnU-Net) and the
   ground-truth spine extent (seg > 0) as ``start_prob`` (stand-in for step 1, the spine model);
3. scores the instances against the reference vertebrae with ``nnunet_vertkd.evaluation.metrics.evaluate_case``
   (vertebrae matched by overlap, spacing = the preprocessed spacing);
4. writes ``fold_F/validation/summary.json`` (nnU-Net style: ``metric_per_case``, ``mean``, ``foreground_mean``)
   and ``fold_F/validation/{case}_instances.npz`` (int16 instances 1..N top-down, preprocessed space).

Settings of the loop: ``IterativeSettings`` scaled to the preprocessed spacing, then the trainer's
``validation_iterative_overrides`` (class attribute dict, e.g. smaller minimum fragment sizes for tiny tests).
"""
from __future__ import annotations

import dataclasses
import json
import os
from time import time
from typing import Callable, Dict, List

import numpy as np
import torch
from torch import distributed as dist

from nnunet_vertkd.trainers.common import to_builtin, unwrap_network

SUMMARY_METRICS = ("dice_mean", "hd_mean_mm", "assd_ref_to_pred_mean_mm", "assd_pred_to_ref_mean_mm",
                   "failure_rate", "localisation_rate", "d_mean_mm")


def make_predict_patch(network: torch.nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """predict_patch for the iterative loop: (2, *patch) float32 -> (*patch) float32 sigmoid probabilities."""
    from torch import autocast
    from nnunetv2.utilities.helpers import dummy_context

    def predict_patch(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)
            ctx = autocast(device.type, enabled=True) if device.type == "cuda" else dummy_context()
            with ctx:
                out = network(t)
            if isinstance(out, (list, tuple)):
                out = out[0]
            return torch.sigmoid(out.float())[0, 0].cpu().numpy()

    return predict_patch


def _mean(values: List) -> object:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(vals)) if vals else None


def summarise(per_case: List[dict]) -> Dict:
    """nnU-Net-style summary: per-case entries plus means over cases and over all vertebrae."""
    mean = {m: _mean([c["metrics"][m] for c in per_case]) for m in SUMMARY_METRICS}
    vertebrae = [v for c in per_case for v in c["metrics"]["per_vertebra"]]
    per_vertebra_mean = {
        "dice": _mean([v["dice"] for v in vertebrae]),
        "hd_mm": _mean([v["hd_mm"] for v in vertebrae]),
        "assd_ref_to_pred_mm": _mean([v["assd_ref_to_pred_mm"] for v in vertebrae]),
        "assd_pred_to_ref_mm": _mean([v["assd_pred_to_ref_mm"] for v in vertebrae]),
        "failure_rate": _mean([float(v["failed"]) for v in vertebrae]),
        "n_vertebrae": len(vertebrae),
    }
    return {"metric_per_case": per_case, "mean": mean, "per_vertebra_mean": per_vertebra_mean,
            "foreground_mean": {"Dice": per_vertebra_mean["dice"]}}


def run_iterative_validation(trainer) -> Dict:
    from nnunet_vertkd.ct_padding import normalised_air_value
    from nnunet_vertkd.evaluation.metrics import evaluate_case
    from nnunet_vertkd.inference.iterative import IterativeSettings, segment_vertebrae_iteratively

    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    out_dir = os.path.join(trainer.output_folder, "validation")
    os.makedirs(out_dir, exist_ok=True)
    _, val_keys = trainer.do_split()
    if trainer.is_ddp:
        val_keys = val_keys[trainer.local_rank::dist.get_world_size()]
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys)
    spacing = tuple(float(s) for s in trainer.configuration_manager.spacing)
    settings = IterativeSettings(CT_PAD_VALUE=normalised_air_value(
        trainer.plans_manager, trainer.configuration_manager)).scaled_to_spacing(spacing)
    overrides = dict(getattr(trainer, "validation_iterative_overrides", None) or {})
    settings = dataclasses.replace(settings, **overrides)
    # the plain module (not DDP/compiled): ranks validate different cases, so no collective calls per forward
    predict_patch = make_predict_patch(unwrap_network(trainer), trainer.device)

    per_case = []
    for k in dataset.identifiers:
        t0 = time()
        data, seg, _, _ = dataset.load_case(k)
        ct = np.asarray(data[0], dtype=np.float32)
        ref = np.asarray(seg[0]).astype(np.int16)
        ref[ref < 0] = 0
        result = segment_vertebrae_iteratively(predict_patch, ct, (ref > 0).astype(np.float32),
                                               trainer.superior_axis, trainer.superior_at_low_index,
                                               trainer.patch_size, settings)
        metrics = evaluate_case(ref, result.instances, spacing, match="overlap", ref_labels="nnunet")
        np.savez_compressed(os.path.join(out_dir, f"{k}_instances.npz"), instances=result.instances)
        entry = {"case": k, "n_network_calls": int(result.n_network_calls), "stop_reason": result.stop_reason,
                 "n_vertebrae_predicted": int(result.instances.max()), "seconds": round(time() - t0, 2),
                 "metrics": metrics}
        per_case.append(to_builtin(entry))
        trainer.print_to_log_file(
            f"validation {k}: {entry['n_vertebrae_predicted']} vertebrae predicted / {metrics['n_ref']} reference, "
            f"Dice {metrics['dice_mean']}, stop: {result.stop_reason}, {result.n_network_calls} network calls")

    if trainer.is_ddp:
        gathered = [None for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, per_case)
        per_case = [c for part in gathered for c in part]
    summary = None
    if trainer.local_rank == 0:
        summary = summarise(per_case)
        summary["settings"] = to_builtin(settings.to_dict())
        summary["start_prob"] = "ground-truth spine extent (seg > 0)"
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, allow_nan=True)
        dice = summary["per_vertebra_mean"]["dice"]
        trainer.logger.log_summary("final_val/vertebra_dice", dice)
        trainer.print_to_log_file("Validation complete", also_print_to_console=True)
        trainer.print_to_log_file(f"Mean validation Dice per vertebra (iterative, GT spine extent): {dice}",
                                  also_print_to_console=True)
    trainer.set_deep_supervision_enabled(trainer.enable_deep_supervision)
    return summary
