"""``vertkd_demo``: the plugin's main job -- segment real CT with the shipped model -- and, with ``--train``, the
whole train-everything pipeline.

Default (no ``--train``): segment the real VerSe scan embedded in the package (sub-verse012, held out from the
shipped model's training; CC BY-SA 4.0, nnunet_vertkd/demo_data/verse/ATTRIBUTION.md) and a few synthetic scans
generated on the fly, with the shipped student + spine model (nnunet_vertkd/pretrained) -- or any model given
with --vertebra-model/--spine-model -- then evaluate against the ground truth and print the Dice/HD/ASSD table and
where the masks, centroid files and previews are. Needs nothing outside the package; a few minutes on 2 CPU cores.

``--train``: generate synthetic VerSe scans -> convert them (and the real samples of ../shared/data/verse_sample,
when present) -> nnU-Net plan + preprocess -> train a teacher, a distilled student and the spine model (short
schedules) -> segment the held-out synthetic test scans and the real samples -> evaluate -> print the table and
where the outputs are. The steps are those of nnunet_vertkd/workflow.py, each the real console script
(nnunet_vertkd/benchmarks/pipeline.py), run in a private nnU-Net environment under --out. See the end of its output for what such a short run can and cannot show.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

from nnunet_vertkd import workflow
from nnunet_vertkd.benchmarks.pipeline import Pipeline, PipelineError, fmt_ms, summary_row
from nnunet_vertkd.inference.cli import add_setting_option, parse_settings
from nnunet_vertkd.command_line import (InputError, add_device_option, add_overwrite_option, add_processes_option,
                                        add_threads_option, add_tta_option, command)

PROG = "vertkd_demo"
DATASET_ID = 501
SPINE_DATASET_ID = 502
TRAIN_STEPS = 8

LIMITS = """\
What this short CPU run shows, and what it cannot:
  + every step of the real workflow runs end to end with the stock nnU-Net commands and the plugin's own
    (generation, conversion incl. the real samples and the skipped-case report, planning, teacher training,
    distillation into the student, spine model, iterative top-down prediction with masks, centroid files and
    previews, VerSe metrics);
  + the numbers above are real measurements of these models on held-out scans.
  - each vertebra model saw {n_iter} training patches ({patch} voxels) from {n_train} synthetic scans
    at {spacing} mm (the paper: 45 epochs x 2814 patches of 128^3 voxels at 1 mm from VerSe): expect low
    Dice, missed and merged vertebrae, and poor results on the real scans, which differ from the synthetic
    ones. This is a smoke test of the pipeline, not a measure of the method's accuracy, and teacher vs.
    student here says nothing about distillation.
  - for that: `vertkd_benchmark study --scale gpu` (docs/benchmarks.md) or train on VerSe following the README.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  vertkd_demo --out vertkd_demo_output          (segment with the shipped model, minutes)\n"
               "  vertkd_demo --train --out vertkd_train_demo    (train everything on a short schedule)")
    p.add_argument("--out", default="vertkd_demo_output", help="output folder (default: %(default)s); refused if "
                                                               "it exists and is not empty, unless --overwrite "
                                                               "or --resume")
    p.add_argument("--train", action="store_true",
                   help="run the train-everything pipeline (synthetic data, conversion, planning, teacher, "
                        "student, spine model, prediction, evaluation) instead of segmenting with the shipped model")
    seg = p.add_argument_group("segmentation demo (default)")
    seg.add_argument("--synthetic-cases", type=int, default=2,
                     help="synthetic scans generated on the fly and segmented next to the real one (default: "
                          "%(default)s; 0 = the real scan only)")
    seg.add_argument("--synthetic-seed", type=int, default=1000,
                     help="seed of those scans (default: %(default)s; the shipped model was trained on seed 0)")
    seg.add_argument("--vertebra-model", metavar="MODEL_FOLDER",
                     help="vertebra model folder instead of the shipped student (e.g. a teacher under nnUNet_results)")
    seg.add_argument("--spine-model", metavar="MODEL_FOLDER", help="spine model folder instead of the shipped one")
    seg.add_argument("--fold", default="all", help="fold of --vertebra-model/--spine-model (default: %(default)s)")
    add_tta_option(seg)
    add_setting_option(seg)
    trn = p.add_argument_group("--train pipeline")
    trn.add_argument("--cases", type=int, default=8, help="synthetic scans to generate (default: %(default)s; about "
                                                          "60%% training, 20%% validation, 20%% test)")
    trn.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of the training (default: 0)")
    add_device_option(p)
    trn.add_argument("--keep", action="store_true",
                   help="keep the intermediate data (synthetic tree, nnUNet_preprocessed); default: delete them "
                        "at the end and keep the raw datasets, models, predictions and evaluations")
    add_overwrite_option(p, "delete a non-empty --out first")
    p.add_argument("--resume", action="store_true", help="continue a run in --out (finished steps are skipped)")
    trn.add_argument("--no-real", action="store_true", help="do not use the real VerSe samples")
    add_processes_option(trn, default=2, what="processes for generating and converting the data")
    adv = p.add_argument_group("advanced, --train (defaults are the embedded demo)")
    adv.add_argument("--synthetic-scale", type=float, default=1.0, help="vertkd_make_synthetic --scale (default: 1.0)")
    adv.add_argument("--spacing-mm", type=float, default=3.0,
                     help="conversion spacing (default: 3.0, with 32^3 patches = a 96 mm field of view)")
    adv.add_argument("--schedule", default="demo",
                     help="trainer variant suffix from nnunet_vertkd/trainers/benchmarking.py "
                          "(default: demo; studyMini = a few iterations, for tests)")
    add_threads_option(adv)
    return p


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    parse_settings(args.setting)  # fail early on a bad --setting
    if out.exists() and any(out.iterdir()):
        if args.overwrite:
            shutil.rmtree(out)
        elif not args.resume:
            raise InputError(f"{out} exists and is not empty. Use --resume to continue that run, --overwrite "
                             f"to replace it, or another --out.")
    if args.train:
        return train_pipeline(args, out)
    return segmentation_demo(args, out)


# ------------------------------------------------------------------------------------------------ segmentation
DEMO_DATA = Path(__file__).resolve().parent / "demo_data" / "verse"


def _copy_inputs(tree: Path, dest: Path) -> List[str]:
    """Copy every CT of a VerSe tree to ``dest/{case}.nii.gz`` (case = the evaluator's case id)."""
    from nnunet_vertkd.image_io import case_id
    dest.mkdir(parents=True, exist_ok=True)
    cases = []
    for ct in sorted(tree.rglob("*_ct.nii.gz")):
        case = case_id(str(ct))
        shutil.copy(ct, dest / f"{case}.nii.gz")
        cases.append(case)
    return cases


def segmentation_demo(args, out: Path) -> int:
    """Segment the embedded real scan + synthetic scans with the shipped (or given) model and evaluate."""
    import torch
    from nnunet_vertkd import pretrained
    from nnunet_vertkd.evaluation.cli import main as evaluate_main
    from nnunet_vertkd.inference.predictor import VertKDPredictor

    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    if not (DEMO_DATA / "rawdata").is_dir():
        print(f"vertkd_demo: the embedded scan is missing ({DEMO_DATA}); reinstall the package", file=sys.stderr)
        return 1
    sets = {"real": DEMO_DATA}
    step = workflow.StepHeaders(total=4)
    step(f"inputs: the embedded real VerSe scan sub-verse012 (held out from training)"
          + (f" + {args.synthetic_cases} synthetic scans (seed {args.synthetic_seed})" if args.synthetic_cases else ""))
    if args.synthetic_cases > 0:
        from nnunet_vertkd.synthetic.verse_tree import write_synthetic_verse
        syn = out / "synthetic"
        if syn.exists():
            shutil.rmtree(syn)
        write_synthetic_verse(str(syn), args.synthetic_cases, seed=args.synthetic_seed, scale=1.0)
        sets["synthetic"] = syn
    inputs = {name: _copy_inputs(tree, out / "inputs" / name) for name, tree in sets.items()}
    for name, cases in inputs.items():
        print(f"  {name}: {', '.join(cases)} -> {out / 'inputs' / name}")

    step("load the model")
    if args.vertebra_model:
        vertebra, vfold = args.vertebra_model, args.fold
        spine, sfold = (args.spine_model, args.fold) if args.spine_model else (pretrained.model_folders()[1],
                                                                                pretrained.FOLD)
        what = f"vertebra model {vertebra} + spine model {spine}"
    else:
        vertebra, spine = pretrained.model_folders()
        vfold = sfold = pretrained.FOLD
        if args.spine_model:
            spine, sfold = args.spine_model, args.fold
        what = pretrained.describe()
    print(f"  using {what}")
    threads = args.threads or None
    from nnunet_vertkd.labelling.cli_support import labels_line, shipped_label_mapping
    labeller = shipped_label_mapping(_device(args.device), not args.disable_tta)  # VerSe labels (docs/labelling.md)
    predictor = VertKDPredictor(device=torch.device(_device(args.device)), use_mirroring=not args.disable_tta,
                                num_threads=threads, allow_tqdm=False, label_mapping=labeller,
                                settings_overrides=parse_settings(args.setting))
    import contextlib
    import io
    chatter = io.StringIO()  # nnU-Net's trainer lookup prints every module it inspects
    try:
        with contextlib.redirect_stdout(chatter):
            predictor.initialize_from_trained_model_folder(vertebra, (vfold,), "checkpoint_final.pth", spine,
                                                           (sfold,), "checkpoint_final.pth")
    except Exception:
        print(chatter.getvalue())
        raise

    step("segment (spine location, then one vertebra at a time from the top)")
    preds = {}
    for name in sets:
        pred = out / "predictions" / name
        t = time.time()
        summary = predictor.predict_from_files(str(out / "inputs" / name), str(pred), overwrite=True,
                                               save_preview=True)
        print(f"  {name}: {len(summary['succeeded'])} segmented, {len(summary['failed'])} failed "
              f"({time.time() - t:.0f} s)")
        for msg in summary["failed"].values():
            print(f"    FAILED {msg}")
        for case in summary["succeeded"]:
            with open(pred / f"{case}_record.json", encoding="utf-8") as f:
                rec = json.load(f)
            print(f"    {case}: {rec['n_vertebrae']} vertebrae, {rec['n_network_calls']} network calls, "
                  f"stop: {rec['stop_reason']}, spine: {rec['spine_source']}")
            if rec.get("labelling"):
                print(f"      labels (probability): {labels_line(rec['labelling'])}")
        preds[name] = pred

    step("evaluate against the ground truth (vertkd_evaluate)")
    rows = []
    for name, tree in sets.items():
        ev = out / "evaluation" / name
        # segmentation quality: instances paired with the reference by overlap (whatever labels they carry)
        evaluate_main(["-ref", str(tree), "-pred", str(preds[name]), "-o", str(ev), "--quiet", "--match", "overlap"])
        with open(ev / "summary.json", encoding="utf-8") as f:
            rows.append((name, summary_row(json.load(f)), ev))
    print("\n" + "=" * 100)
    print(f"vertkd_demo results: {what}")
    print("(mean ± std over vertebrae; failure = Dice < 50 %; missing = annotated vertebra not found; vertebrae are "
          "matched by overlap)")
    header = (f"{'test set':10} {'scans':>5} {'vert.':>5} {'missing':>7} {'extra':>5} {'Dice %':>15} {'HD mm':>15} "
              f"{'ASSD GT->pred':>15} {'ASSD pred->GT':>15} {'fail %':>7}")
    print(header)
    print("-" * len(header))
    for name, r, _ in rows:
        fail = r["failure_rate_pct"]
        print(f"{name:10} {r['n_scans'] or 0:>5} {r['n_vertebrae'] or 0:>5} {r['n_missing'] or 0:>7} "
              f"{r['n_extra'] or 0:>5} {fmt_ms(r['dice_pct'], 1):>15} {fmt_ms(r['hd_mm'], 1):>15} "
              f"{fmt_ms(r['assd_ref_to_pred_mm'], 1):>15} {fmt_ms(r['assd_pred_to_ref_mm'], 1):>15} "
              f"{'–' if fail is None else f'{fail:.1f}':>7}")
    print("\nOutputs:")
    for name, pred in preds.items():
        print(f"  {name:10} masks {pred}/<case>.nii.gz (input geometry, "
              f"{'VerSe labels' if labeller else 'labels 1..N from the top'}), VerSe "
              f"centroids <case>_ctd.json, previews <case>_snp.png, records <case>_record.json")
    for name, _, ev in rows:
        print(f"  evaluation {name}: {ev}/summary.json, per_vertebra.csv, summary.md")
    print(f"\nTotal time {(time.time() - t_start) / 60:.1f} min. The real scan: VerSe (CC BY-SA 4.0), see "
          f"{DEMO_DATA / 'ATTRIBUTION.md'}. Train everything yourself: vertkd_demo --train (docs/pretrained.md).")
    return 0


def _device(name: str) -> str:
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available, using the CPU", file=sys.stderr)
        return "cpu"
    return name


# ------------------------------------------------------------------------------------------------ --train
def _train_jobs(args) -> List[workflow.TrainJob]:
    env = {"VERTKD_STUDY_SEED": str(args.seed)}
    return [workflow.TrainJob(DATASET_ID, f"VertKDTeacherTrainer_{args.schedule}", "train teacher", env),
            workflow.TrainJob(DATASET_ID, f"VertKDStudentTrainer_{args.schedule}", "train student", env),
            workflow.TrainJob(SPINE_DATASET_ID, f"VertKDSpineTrainer_{args.schedule}", "train spine", env)]


TRAINING_TITLES = {"train teacher": "teacher (16-32-64-128)",
                   "train student": "student (8-16-32-64), distilled from the teacher",
                   "train spine": "spine model (step 1)"}


def train_pipeline(args, out: Path) -> int:
    """The ``--train`` preset of ``nnunet_vertkd.workflow``: data, teacher, student, spine model, predictions of
    both vertebra models with the spine model, evaluation; then the table and what such a run can show."""
    t_start = time.time()
    p = Pipeline(out, device=args.device, threads=args.threads, log_name="demo.log")
    recipe = workflow.DataRecipe(DATASET_ID, args.cases, args.seed, args.synthetic_scale, args.spacing_mm,
                                 spine_dataset_id=SPINE_DATASET_ID, use_real=not args.no_real,
                                 num_processes=args.num_processes)
    step = workflow.StepHeaders(total=TRAIN_STEPS)
    jobs = _train_jobs(args)
    teacher, student, spine = (job.trainer for job in jobs)
    try:
        real_ids = workflow.prepare_data(p, out, recipe, args.resume, announce=step)
        step.n = 4  # the training steps (also when --resume skipped the data steps)
        workflow.train_all(p, jobs, args.resume,
                           announce=lambda job: step(f"nnUNetv2_train {TRAINING_TITLES[job.tag]}: -tr {job.trainer}"))
        step("vertkd_predict: held-out synthetic test scans + real samples (student and teacher)")
        sets, _ = workflow.test_sets(p, out, DATASET_ID, real_ids)
        if not sets:
            raise PipelineError("no test scans (imagesTs is empty and no real samples): use more --cases")
        images = workflow.collect_images(sets, out / "testsets" / "all_images")
        preds = {}
        for name, trainer in (("student", student), ("teacher", teacher)):
            preds[name] = out / "predictions" / name
            workflow.predict(p, images, preds[name], DATASET_ID, trainer, f"predict {name}",
                             spine_dataset_id=SPINE_DATASET_ID, spine_trainer=spine, save_preview=True)
        step("vertkd_evaluate")
        rows = [(name, set_name, summary_row(s), ev) for name, pred in preds.items()
                for set_name, s, ev in workflow.evaluate(p, sets, pred, out / "evaluation" / name,
                                                         f"evaluate {name}")]
    except PipelineError as e:
        print(f"\nvertkd_demo stopped: {e}", file=sys.stderr)
        print(f"Fix the problem and re-run with --resume --out {args.out} to continue.", file=sys.stderr)
        return 1
    _print_training_report(args, out, p, rows, preds, real_ids, t_start)
    return 0


def _print_training_report(args, out: Path, p: Pipeline, rows, preds, real_ids, t_start: float) -> None:
    """The table per model and test set, where the outputs are, the time per step and the run's limits."""
    print("\n" + "=" * 100)
    print("vertkd_demo results (mean ± std over vertebrae; failure = Dice < 50 %; missing = not found)")
    header = f"{'model':8} {'test set':15} {'scans':>5} {'vert.':>5} {'missing':>7} {'Dice %':>15} " \
             f"{'HD mm':>15} {'ASSD GT->pred':>15} {'fail %':>7} {'loc.rate %':>15}"
    print(header)
    print("-" * len(header))
    for name, set_name, r, _ in rows:
        fail = r["failure_rate_pct"]
        print(f"{name:8} {set_name:15} {r['n_scans'] or 0:>5} {r['n_vertebrae'] or 0:>5} {r['n_missing'] or 0:>7} "
              f"{fmt_ms(r['dice_pct'], 1):>15} {fmt_ms(r['hd_mm'], 1):>15} {fmt_ms(r['assd_ref_to_pred_mm'], 1):>15} "
              f"{'–' if fail is None else f'{fail:.1f}':>7} {fmt_ms(r['localisation_rate_pct'], 1):>15}")
    print("\nOutputs:")
    for name, pred in preds.items():
        print(f"  {name:8} masks {pred}/<case>.nii.gz, centroids <case>_ctd.json, previews <case>_snp.png, "
              f"records <case>_record.json")
    for name, set_name, _, ev in rows:
        print(f"  evaluation {name} / {set_name}: {ev}/summary.json, per_vertebra.csv, summary.md")
    print(f"  models: {p.env['nnUNet_results']}   raw datasets: {p.env['nnUNet_raw']}   log: {p.log_file}")
    if not args.keep:
        for d in (out / "synthetic", Path(p.env["nnUNet_preprocessed"])):
            shutil.rmtree(d, ignore_errors=True)
        print("  (intermediate data deleted: synthetic tree and nnUNet_preprocessed; use --keep to keep them)")
    n_train = 0
    try:
        with open(p.raw_dataset(DATASET_ID) / "dataset.json", encoding="utf-8") as f:
            n_train = json.load(f).get("numTraining", 0) - len(real_ids)
    except (OSError, PipelineError, ValueError):
        pass
    print(f"\nTotal time {(time.time() - t_start) / 60:.1f} min; per step (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in p.timings.items()))
    print()
    from nnunet_vertkd.trainers.benchmarking import schedule
    sched = schedule(args.schedule)
    n_iter = sched.get("num_epochs", 0) * sched.get("num_iterations_per_epoch", 0)
    patch = "x".join(str(x) for x in sched.get("patch_size_voxels") or ()) or "planned"
    print(LIMITS.format(n_train=n_train, spacing=args.spacing_mm, n_iter=n_iter, patch=patch))


if __name__ == "__main__":
    sys.exit(main())
