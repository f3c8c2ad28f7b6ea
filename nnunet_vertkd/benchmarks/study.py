"""``vertkd_benchmark study``: the distillation study (Serrador et al. 2024, Table 3) on synthetic VerSe-format data.

Trains T_B, T_S, S_S, S_T3, S_T4, S_T5, S_L and S_LW (``nnunet_vertkd.trainers.benchmarking.STUDY_TRAINERS``: the plugin's trainer
classes with a schedule suffix, e.g. ``VertKDStudentTrainer_T3_studyCPU``) on a synthetic training set written by
``vertkd_make_synthetic`` and converted with ``vertkd_convert_verse`` (plus the real VerSe samples of
``../shared/data/verse_sample`` when present, which are **held out**: moved to the validation side of fold 0,
never trained on), with the stock ``nnUNetv2_train``; the students distil from the T_S of the same seed. Every
model then segments the held-out synthetic test set (``imagesTs``) and the real samples with ``vertkd_predict``
(spine start from the bone-threshold heuristic, the same for every model; no test-time mirroring), and
``vertkd_evaluate`` measures Dice, Hausdorff distance, ASSD both ways and the failure rate (Dice < 50 %) per
vertebra. The table (mean ± std over vertebrae, pooled over seeds) goes to ``OUT/study.md`` (and ``--docs FILE``)
with the command, data seed, hardware and run time; everything else (models, predictions, evaluations, logs)
stays under OUT.

Scales (``--scale``):
  mini  CI miniature: 2-4 tiny cases, 32^3 patches, a few iterations (only proves the machinery works)
  cpu   2 CPU cores, under an hour: 16 synthetic scans of adult size converted at 3 mm, 32^3 patches (a 96 mm
        field of view; the paper's is 128 mm at 1 mm), 1000 iterations per model (``nnunet_vertkd/trainers/benchmarking.py``)
  gpu   one H100, ~30 minutes (an estimate, not run yet): 32 scans at 1 mm, 128^3 patches, 1000 iterations per
        model, trainings run in parallel on the one GPU (``--parallel 6``: the 2 teachers, then the 6
        students); start it detached (nohup) and poll

The steps are those of ``nnunet_vertkd.workflow`` (shared with ``vertkd_demo --train``); this module chooses the
dataset, the trainers per seed, the test sets and writes the tables.

A seed (``--seeds``) seeds Python/NumPy/torch in every trainer ($VERTKD_STUDY_SEED) and gets its own
nnUNet_results folder; the data seed (``--data-seed``) fixes the synthetic data.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from nnunet_vertkd import workflow
from nnunet_vertkd.benchmarks.machine import describe_machine, machine_info
from nnunet_vertkd.benchmarks.pipeline import Pipeline
from nnunet_vertkd.command_line import (InputError, add_device_option, add_overwrite_option, add_threads_option,
                                        command)
from nnunet_vertkd.evaluation.aggregate import pool_vertebrae, rows_from_csv

PAPER_IDS = ("T_B", "T_S", "S_S", "S_T3", "S_T4", "S_T5", "S_L", "S_LW")
PAPER_DESCRIPTIONS = {
    "T_B": "teacher, no data processing", "T_S": "teacher with data processing",
    "S_S": "student from scratch", "S_T3": "student, soft outputs T=3", "S_T4": "student, soft outputs T=4",
    "S_T5": "student, soft outputs T=5", "S_L": "student, logit matching (ED)",
    "S_LW": "student, logit matching x distance map",
}
#: Serrador et al. 2024, Table 3 (VerSe test): Dice %, HD mm, failure %, for reference in the written table
PAPER_TABLE3 = {"T_B": (80.78, 16.34, 5.28), "T_S": (88.22, 7.71, 2.12), "S_S": (75.78, 15.17, 15.44),
                "S_T3": (82.26, 11.05, 7.05), "S_T4": (84.70, 9.82, 5.50), "S_T5": (84.47, 8.08, 6.06),
                "S_L": (29.60, None, None), "S_LW": (78.94, None, None)}

SCALE_PRESETS = {
    "mini": {"suffix": "studyMini", "cases": 4, "synthetic_scale": 0.4, "spacing_mm": 2.0, "device": "cpu",
             "synthetic_spacing": "iso1", "parallel": 1},
    "cpu": {"suffix": "studyCPU", "cases": 16, "synthetic_scale": 1.0, "spacing_mm": 3.0, "device": "cpu",
            "synthetic_spacing": None, "parallel": 1},
    "gpu": {"suffix": "studyGPU", "cases": 32, "synthetic_scale": 1.0, "spacing_mm": 1.0, "device": "cuda",
            "synthetic_spacing": None, "parallel": 6},
}
DATASET_ID = 521
METRICS = (("dice", "Dice %", 100.0), ("hd_mm", "HD mm", 1.0), ("assd_ref_to_pred_mm", "ASSD GT→pred mm", 1.0),
           ("assd_pred_to_ref_mm", "ASSD pred→GT mm", 1.0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", choices=tuple(SCALE_PRESETS), default="cpu", help="preset (default: %(default)s)")
    p.add_argument("--out", default=None, help="work/output folder (default: vertkd_study_<scale>)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default: 0)")
    p.add_argument("--trainers", nargs="+", choices=PAPER_IDS, default=list(PAPER_IDS), metavar="ID",
                   help=f"paper ids to train and evaluate (default: all: {' '.join(PAPER_IDS)}); students "
                        f"always get T_S trained first")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    p.add_argument("--cases", type=int, default=None, help="synthetic scans (default: preset)")
    p.add_argument("--synthetic-scale", type=float, default=None, help="vertkd_make_synthetic --scale (default: preset)")
    p.add_argument("--spacing-mm", type=float, default=None, help="conversion spacing (default: preset)")
    p.add_argument("--suffix", default=None,
                   help="trainer variant suffix (default: preset; see nnunet_vertkd/trainers/benchmarking.py)")
    add_device_option(p, default=None)  # None: the preset's
    p.add_argument("--parallel", type=int, default=None,
                   help="trainings run at the same time (GPU: several on one GPU; default: preset)")
    add_threads_option(p)
    p.add_argument("--no-real", action="store_true", help="do not use the real VerSe samples")
    p.add_argument("--docs", default=None, help="also write the Markdown table to this file (e.g. "
                                                "docs/distillation_study_cpu.md)")
    p.add_argument("--resume", action="store_true",
                   help="reuse what an earlier run in OUT finished (data, trained models, predictions)")
    add_overwrite_option(p, "delete a non-empty OUT first")


def _resolve(args) -> dict:
    cfg = dict(SCALE_PRESETS[args.scale])
    for key, val in (("cases", args.cases), ("synthetic_scale", args.synthetic_scale),
                     ("spacing_mm", args.spacing_mm), ("suffix", args.suffix), ("device", args.device),
                     ("parallel", args.parallel)):
        if val is not None:
            cfg[key] = val
    return cfg


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise InputError(f"{out} exists and is not empty: use --resume to continue that run or --overwrite "
                             f"to start again (deletes it)")
    out.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------------ tables
def _read_vertebrae(csv_path: Path) -> List[dict]:
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append(r)
    return rows


def pooled_metrics(rows: List[dict]) -> dict:
    """Mean ± population std over vertebrae of per_vertebra.csv rows, pooled by vertkd_evaluate's own
    ``aggregate.pool_vertebrae`` (Dice over all reference vertebrae, missing = 0; HD/ASSD over the matched ones;
    failure rate: Dice < 50 %, missing included), as {metric: (mean, std, n)}, failure_pct, n_missing."""
    pooled = pool_vertebrae(rows_from_csv(rows))
    out = {"n_vertebrae": pooled["n_vertebrae"]}
    for key, _, _ in METRICS:
        ms = pooled["dice_pct" if key == "dice" else key]
        out[key] = (ms["mean"], ms["std"], ms["n"])
    out["failure_pct"] = pooled["failure_rate_pct"]
    out["n_missing"] = pooled["n_missing"]
    return out


def _cell(triple, nd=2) -> str:
    if not triple or triple[0] is None:
        return "–"
    m, s, _ = triple
    return f"{m:.{nd}f} ± {s:.{nd}f}"


def format_table(results: Dict[str, Dict[str, dict]], testset: str, seed_means: Dict[str, Dict[str, List[float]]]
                 ) -> List[str]:
    lines = ["| id | model | Dice % | HD mm | ASSD GT→pred mm | ASSD pred→GT mm | failure % | vertebrae "
             "(missing) | Dice % per seed | paper Dice / HD / fail |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for pid in PAPER_IDS:
        r = results.get(pid, {}).get(testset)
        if r is None:
            continue
        per_seed = seed_means.get(pid, {}).get(testset, [])
        paper = PAPER_TABLE3[pid]
        paper_s = " / ".join("–" if v is None else f"{v:.2f}" for v in paper)
        fail = "–" if r["failure_pct"] is None else f"{r['failure_pct']:.1f}"
        seeds = ", ".join(f"{v:.1f}" for v in per_seed) or "–"
        lines.append(f"| {pid} | {PAPER_DESCRIPTIONS[pid]} | {_cell(r['dice'])} | {_cell(r['hd_mm'])} | "
                     f"{_cell(r['assd_ref_to_pred_mm'])} | {_cell(r['assd_pred_to_ref_mm'])} | {fail} | "
                     f"{r['n_vertebrae']} ({r['n_missing']}) | {seeds} | {paper_s} |")
    return lines


# ------------------------------------------------------------------------------------------------ run
def _recipe(args, cfg: dict, n_proc: int) -> workflow.DataRecipe:
    return workflow.DataRecipe(DATASET_ID, cfg["cases"], args.data_seed, cfg["synthetic_scale"], cfg["spacing_mm"],
                               synthetic_spacing=cfg.get("synthetic_spacing"), use_real=not args.no_real,
                               num_processes=n_proc)


def _trainer_name(pid: str, suffix: str) -> str:
    from nnunet_vertkd.trainers.benchmarking import STUDY_TRAINERS
    return f"{STUDY_TRAINERS[pid].__name__}_{suffix}"


def _stages(wanted: List[str]) -> List[List[str]]:
    """Teachers first, then students; students always get T_S (their teacher) trained first."""
    from nnunet_vertkd.trainers.benchmarking import TEACHER_IDS
    to_train = list(wanted)
    if any(pid not in TEACHER_IDS for pid in wanted) and "T_S" not in to_train:
        to_train.insert(0, "T_S")
    return [[pid for pid in to_train if pid in TEACHER_IDS], [pid for pid in to_train if pid not in TEACHER_IDS]]


def _train_seed(p: Pipeline, args, cfg: dict, wanted: List[str], seed: int, results_dir: Path, n_proc_da: int):
    env = {"nnUNet_results": str(results_dir), "VERTKD_STUDY_SEED": str(seed)}
    for stage in _stages(wanted):
        jobs = [workflow.TrainJob(DATASET_ID, _trainer_name(pid, cfg["suffix"]), f"train {pid} seed{seed}", env,
                                  n_proc_da=n_proc_da) for pid in stage]
        workflow.train_all(p, jobs, args.resume, cfg["parallel"])


def _predict_and_evaluate(p: Pipeline, args, cfg: dict, wanted: List[str], seed: int, results_dir: Path,
                          test_sets: dict, images: Path) -> None:
    """One vertkd_predict per model over every test scan (spine start: the heuristic), then vertkd_evaluate per
    test set; models whose evaluations are all there are skipped with --resume."""
    out = p.root
    for pid in wanted:
        pred = out / "predictions" / f"seed{seed}" / pid
        evs = out / "evaluations" / f"seed{seed}" / pid
        if args.resume and all((evs / workflow.set_key(n) / "per_vertebra.csv").is_file() for n in test_sets):
            continue
        workflow.predict(p, images, pred, DATASET_ID, _trainer_name(pid, cfg["suffix"]), f"predict {pid} seed{seed}",
                         extra_env={"nnUNet_results": str(results_dir)})
        workflow.evaluate(p, test_sets, pred, evs, f"evaluate {pid} seed{seed}")


def _tables(args, wanted, test_sets, test_ids, real_ids, out: Path):
    """Pooled metrics per model and test set, the per-seed Dice means and the prediction records."""
    results: Dict[str, Dict[str, dict]] = {}
    seed_means: Dict[str, Dict[str, List[float]]] = {}
    records: Dict[str, Dict[str, list]] = {}
    for pid in wanted:
        for set_name in test_sets:
            rows = []
            ids = set(test_ids if "synthetic" in set_name else real_ids)
            for seed in args.seeds:
                csv_path = out / "evaluations" / f"seed{seed}" / pid / workflow.set_key(set_name) / "per_vertebra.csv"
                if not csv_path.is_file():
                    continue
                seed_rows = _read_vertebrae(csv_path)
                rows += seed_rows
                m = pooled_metrics(seed_rows)["dice"][0]
                if m is not None:
                    seed_means.setdefault(pid, {}).setdefault(set_name, []).append(m)
                records.setdefault(pid, {}).setdefault(set_name, []).extend(
                    r for r in _prediction_records(out / "predictions" / f"seed{seed}" / pid) if r["case"] in ids)
            if rows:
                results.setdefault(pid, {})[set_name] = pooled_metrics(rows)
    return results, seed_means, records


def run(args, argv_for_record: Optional[List[str]] = None) -> int:
    """The study preset of ``nnunet_vertkd.workflow``: data once, then per seed the trainings, predictions and
    evaluations; the tables at the end."""
    cfg = _resolve(args)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    out = Path(args.out or f"vertkd_study_{args.scale}").resolve()
    _prepare_out(out, args.resume, args.overwrite)
    command_text = "vertkd_benchmark study " + " ".join(argv_for_record or [])
    t_start = time.time()
    info = machine_info(cfg["device"])
    print(f"[study] {command_text}\n[study] scale {args.scale}: {cfg}\n[study] machine: {describe_machine(info)}",
          flush=True)
    p = Pipeline(out, device=cfg["device"], threads=args.threads, log_name="study.log")
    cores = int(info.get("cores_available") or 2)
    n_proc = max(1, min(8, cores))
    n_proc_da = max(1, cores // max(1, cfg["parallel"]))  # CUDA only; the CPU trains with in-process loading

    real_ids = workflow.prepare_data(p, out, _recipe(args, cfg, n_proc), args.resume,
                                     announce=workflow.StepHeaders(tag="study"))
    test_sets, test_ids = workflow.test_sets(p, out, DATASET_ID, real_ids, real_name="real VerSe samples",
                                             validation_fallback=True)
    images = workflow.collect_images(test_sets, out / "testsets" / "all_images", link=True)
    wanted = list(dict.fromkeys(args.trainers))
    for seed in args.seeds:
        results_dir = out / f"results_seed{seed}"
        results_dir.mkdir(exist_ok=True)
        _train_seed(p, args, cfg, wanted, seed, results_dir, n_proc_da)
        _predict_and_evaluate(p, args, cfg, wanted, seed, results_dir, test_sets, images)

    results, seed_means, records = _tables(args, wanted, test_sets, test_ids, real_ids, out)
    total = time.time() - t_start
    md = _markdown(command_text, args, cfg, info, test_sets, test_ids, real_ids, results, seed_means, records,
                   p.timings, total, out)
    (out / "study.md").write_text(md, encoding="utf-8")
    with open(out / "study.json", "w", encoding="utf-8") as f:
        json.dump({"command": command_text, "config": cfg, "seeds": args.seeds, "data_seed": args.data_seed,
                   "machine": info, "results": results, "seed_dice_means": seed_means,
                   "timings_s": p.timings, "total_s": total, "test_cases": test_ids, "real_cases": real_ids},
                  f, indent=1, default=str)
    if args.docs:
        Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
        Path(args.docs).write_text(md, encoding="utf-8")
    print("\n" + md, flush=True)
    print(f"[study] written {out / 'study.md'}" + (f" and {args.docs}" if args.docs else "") +
          f" in {total / 60:.1f} min", flush=True)
    return 0


def _prediction_records(pred_dir: Path) -> list:
    recs = []
    for f in sorted(Path(pred_dir).glob("*_record.json")):
        try:
            with open(f, encoding="utf-8") as fh:
                r = json.load(fh)
            recs.append({"case": r.get("case"), "n_vertebrae": r.get("n_vertebrae"),
                         "n_network_calls": r.get("n_network_calls"), "stop_reason": r.get("stop_reason"),
                         "seconds": sum(v for v in (r.get("seconds") or {}).values() if isinstance(v, (int, float)))})
        except (OSError, ValueError):
            pass
    return recs


def _markdown(command, args, cfg, info, test_sets, test_ids, real_ids, results, seed_means, records, timings,
              total, out) -> str:
    from nnunet_vertkd.trainers.benchmarking import schedule
    sched = {k: v for k, v in schedule(cfg["suffix"]).items() if k in ("patch_size_voxels", "num_epochs",
                                                                       "num_iterations_per_epoch")}
    lines = [f"# Distillation study, {args.scale.upper()} scale (Serrador et al. 2024, Table 3, on synthetic data)", "",
             f"Command: `{command}`", "",
             f"- Date: {datetime.datetime.now().isoformat(timespec='minutes')}; total run time "
             f"{total / 60:.1f} min.",
             f"- Hardware: {describe_machine(info)}; device {cfg['device']}.",
             f"- Data: `vertkd_make_synthetic --cases {cfg['cases']} --seed {args.data_seed} --scale "
             f"{cfg['synthetic_scale']}`" + (f" `--spacing {cfg['synthetic_spacing']}`" if cfg.get('synthetic_spacing')
                                             else "") +
             f" (data seed {args.data_seed}), converted with `vertkd_convert_verse --spacing-mm {cfg['spacing_mm']}`"
             + (f" together with the real samples {', '.join(real_ids)} (held out: never trained on)" if real_ids
                else "") + ".",
             f"- Training: stock `nnUNetv2_train DATASET 3d_fullres 0 -tr <Trainer>_{cfg['suffix']}` "
             f"(trainer variants in nnunet_vertkd/trainers/benchmarking.py: {sched}, batch 1); "
             f"seeds {args.seeds}; students distil from T_S of the same seed.",
             f"- Test sets: {', '.join(f'{k} ({len(v)} scans)' for k, v in ((n, test_ids if 'synthetic' in n else real_ids) for n in test_sets))}; "
             "`vertkd_predict --disable_tta` with the bone-threshold spine heuristic (no spine model), "
             "`vertkd_evaluate` (overlap matching).",
             "- Columns: mean ± std over vertebrae pooled over seeds (Dice over all reference vertebrae, a missed "
             "vertebra counting 0; HD and ASSD over the matched ones); failure = Dice < 50 % (missed included); "
             "'Dice % per seed' = the mean Dice of each seed; the paper's numbers (VerSe test, full training) are "
             "given only for orientation -- they are not comparable with this short synthetic run.", ""]
    for set_name in test_sets:
        lines += [f"## {set_name}", ""] + format_table(results, set_name, seed_means) + [""]
    lines += ["## Network calls and prediction time per scan", "",
              "| id | test set | scans | vertebrae found (mean) | network calls (mean) | s / scan (mean) | stop reasons |",
              "|---|---|---:|---:|---:|---:|---|"]
    for pid in PAPER_IDS:
        for set_name, recs in records.get(pid, {}).items():
            if not recs:
                continue
            mean = lambda k: statistics.fmean([r[k] for r in recs if isinstance(r.get(k), (int, float))] or [float("nan")])  # noqa: E731
            stops = {}
            for r in recs:
                stops[r.get("stop_reason")] = stops.get(r.get("stop_reason"), 0) + 1
            lines.append(f"| {pid} | {set_name} | {len(recs)} | {mean('n_vertebrae'):.1f} | "
                         f"{mean('n_network_calls'):.1f} | {mean('seconds'):.1f} | "
                         f"{', '.join(f'{k}: {v}' for k, v in sorted(stops.items(), key=str))} |")
    lines += ["", "## Time per step (s)", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += ["", "Outputs (models, predictions, evaluations, logs, study.json): under the `--out` folder of the "
                  "command.", ""]
    return "\n".join(lines)


@command("vertkd_benchmark study")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vertkd_benchmark study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(p.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
