"""The plugin's whole workflow on synthetic data, one small function per step.

generate synthetic VerSe scans -> convert them (plus the real samples of ``../shared/data/verse_sample``, when
present) -> nnU-Net plan + preprocess -> hold the real samples out (fold-0 validation side: never trained on) ->
train -> predict -> evaluate. Every step runs the real console scripts through a
``nnunet_vertkd.benchmarks.pipeline.Pipeline`` (a private nnU-Net environment under the output folder).

``prepare_data`` runs the data steps (resumable: a finished preparation is recorded in ``DATA_READY_FLAG``);
``train_all``, ``test_sets``, ``collect_images``, ``predict`` and ``evaluate`` are the later steps. ``vertkd_demo
--train`` (nnunet_vertkd/demo.py) and ``vertkd_benchmark study`` (nnunet_vertkd/benchmarks/study.py) are presets
of these steps.
"""
from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from nnunet_vertkd.benchmarks.pipeline import Pipeline, PipelineError, real_sample_dir, verse_case_ids

DATA_READY_FLAG = ".data_ready"
HELD_OUT_FOLD = 0
Announce = Callable[[str], None]


class StepHeaders:
    """Announces the steps of a run: ``=== [n/total] text ===`` (numbered) or ``[tag] text`` (tagged)."""

    def __init__(self, total: Optional[int] = None, tag: Optional[str] = None, first: int = 1):
        self.total, self.tag, self.n = total, tag, first

    def __call__(self, text: str) -> None:
        if self.total is None:
            print(f"[{self.tag}] {text}" if self.tag else text, flush=True)
            return
        print(f"\n=== [{self.n}/{self.total}] {text} ===", flush=True)
        self.n += 1


# ------------------------------------------------------------------------------------------------ data
@dataclass
class DataRecipe:
    """What data a run trains and tests on."""
    dataset_id: int
    cases: int
    seed: int
    synthetic_scale: float
    spacing_mm: float
    spine_dataset_id: Optional[int] = None
    synthetic_spacing: Optional[str] = None
    use_real: bool = True
    num_processes: int = 1

    @property
    def dataset_ids(self) -> List[int]:
        return [self.dataset_id] + ([self.spine_dataset_id] if self.spine_dataset_id is not None else [])


def real_samples(recipe: DataRecipe) -> Optional[Path]:
    """The real VerSe samples folder when the recipe uses it and it exists."""
    return real_sample_dir() if recipe.use_real else None


def generate(p: Pipeline, out: Path, recipe: DataRecipe) -> Path:
    """vertkd_make_synthetic into ``out/synthetic``."""
    return p.generate_synthetic(out / "synthetic", recipe.cases, recipe.seed, recipe.synthetic_scale,
                                recipe.synthetic_spacing, num_processes=recipe.num_processes)


def skipped_cases_line(report: dict) -> Optional[str]:
    skipped = [s for s in (report.get("skipped") or []) if isinstance(s, dict)]
    if not skipped:
        return None
    return (f"conversion skipped {len(skipped)} case(s): "
            + "; ".join(f"{s.get('case', s.get('stem', '?'))}: {s.get('reason', s.get('message', ''))}"
                        for s in skipped))


def convert(p: Pipeline, out: Path, recipe: DataRecipe, real: Optional[Path]) -> dict:
    """vertkd_convert_verse of the synthetic tree and the real samples; returns the conversion report."""
    report = p.convert([out / "synthetic"] + ([real] if real else []), recipe.dataset_id, recipe.spacing_mm,
                       num_processes=recipe.num_processes)
    line = skipped_cases_line(report)
    if line:
        print(line, flush=True)
    return report


def plan_and_preprocess(p: Pipeline, recipe: DataRecipe) -> None:
    p.plan_and_preprocess(recipe.dataset_ids, num_processes=recipe.num_processes, verify=False)


def converted_real_ids(p: Pipeline, recipe: DataRecipe, real: Optional[Path]) -> List[str]:
    """The real samples that were converted into the training images."""
    converted = set(p.cases_in(recipe.dataset_id, "imagesTr"))
    return [c for c in (verse_case_ids(real) if real else []) if c in converted]


def hold_out_real(p: Pipeline, recipe: DataRecipe, real: Optional[Path]) -> List[str]:
    """Move the converted real samples to the validation side of fold 0 (never trained on); returns them."""
    real_ids = converted_real_ids(p, recipe, real)
    if real_ids:
        p.hold_out(recipe.dataset_ids, real_ids, fold=HELD_OUT_FOLD)
        print(f"real samples {real_ids} held out (validation side of fold {HELD_OUT_FOLD}): never trained on",
              flush=True)
    return real_ids


def _data_text(recipe: DataRecipe, real: Optional[Path]) -> str:
    spine = f" and {recipe.spine_dataset_id} (spine)" if recipe.spine_dataset_id is not None else ""
    return (f"convert synthetic{' + real VerSe samples' if real else ''} to nnU-Net dataset"
            f"{'s' if spine else ''} {recipe.dataset_id} (vertebrae, {recipe.spacing_mm} mm){spine}")


def prepare_data(p: Pipeline, out: Path, recipe: DataRecipe, resume: bool = False,
                 announce: Announce = print) -> List[str]:
    """The data steps (generate, convert, plan + preprocess, hold out the real samples), skipped when ``resume``
    finds them finished; returns the held-out real case ids."""
    ready = out / DATA_READY_FLAG
    real = real_samples(recipe)
    if resume and ready.is_file():
        try:
            return list(json.loads(ready.read_text())["real_ids"])
        except (ValueError, KeyError, TypeError):  # the flag of earlier versions: "ok"
            return converted_real_ids(p, recipe, real)
    announce(f"generate {recipe.cases} synthetic VerSe scans (seed {recipe.seed})")
    generate(p, out, recipe)
    announce(_data_text(recipe, real))
    if real is None and recipe.use_real:
        print("(real VerSe samples not found at ../shared/data/verse_sample: synthetic data only)", flush=True)
    convert(p, out, recipe, real)
    announce("nnUNetv2_plan_and_preprocess")
    plan_and_preprocess(p, recipe)
    real_ids = hold_out_real(p, recipe, real)
    ready.write_text(json.dumps({"real_ids": real_ids}))
    return real_ids


# ------------------------------------------------------------------------------------------------ training
@dataclass
class TrainJob:
    dataset_id: int
    trainer: str
    tag: str
    env: Dict[str, str] = field(default_factory=dict)  # e.g. nnUNet_results, VERTKD_STUDY_SEED
    fold: str = "0"
    n_proc_da: Optional[int] = None


def checkpoint_of(p: Pipeline, job: TrainJob) -> Path:
    folder = p.model_folder(job.dataset_id, job.trainer, results=job.env.get("nnUNet_results"))
    return folder / f"fold_{job.fold}" / "checkpoint_final.pth"


def train(p: Pipeline, job: TrainJob, resume: bool = False) -> bool:
    """nnUNetv2_train of one job; with ``resume`` a finished model is kept. Returns whether it trained."""
    ckpt = checkpoint_of(p, job)
    if resume and ckpt.is_file():
        print(f"[{job.tag}] already trained: {ckpt}", flush=True)
        return False
    p.train(job.dataset_id, job.trainer, job.fold, tag=job.tag, extra_env=job.env, n_proc_da=job.n_proc_da)
    return True


def train_all(p: Pipeline, jobs: Sequence[TrainJob], resume: bool = False, parallel: int = 1,
              announce: Optional[Callable[[TrainJob], None]] = None) -> None:
    """Train the jobs, ``parallel`` at a time (several trainings on one GPU); errors are raised after all ended."""
    def one(job: TrainJob) -> None:
        if announce is not None:
            announce(job)
        train(p, job, resume)

    if parallel <= 1 or len(jobs) <= 1:
        for job in jobs:
            one(job)
        return
    errors: List[BaseException] = []
    slots = threading.Semaphore(parallel)

    def guarded(job: TrainJob) -> None:
        with slots:
            try:
                one(job)
            except BaseException as e:  # reported after all jobs ended
                errors.append(e)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise PipelineError("; ".join(str(e) for e in errors))


# ------------------------------------------------------------------------------------------------ test sets
def fold_validation_cases(p: Pipeline, dataset_id: int, fold: int = HELD_OUT_FOLD) -> List[str]:
    with open(p.splits_file(dataset_id), encoding="utf-8") as f:
        return list(json.load(f)[fold]["val"])


def test_sets(p: Pipeline, out: Path, dataset_id: int, real_ids: Sequence[str], real_name: str = "real samples",
              validation_fallback: bool = False) -> Tuple[Dict[str, Dict[str, Path]], List[str]]:
    """Test-set folders under ``out/testsets``: the synthetic test scans (``imagesTs``; without any and with
    ``validation_fallback``, the synthetic fold-0 validation scans) and the held-out real samples. Returns
    ({set name: {"images", "labels"}}, the synthetic test case ids)."""
    sets: Dict[str, Dict[str, Path]] = {}
    test_ids = p.cases_in(dataset_id, "imagesTs")
    if test_ids:
        sets["synthetic test"] = p.link_cases(dataset_id, test_ids, out / "testsets" / "synthetic",
                                              "imagesTs", "labelsTs")
    elif validation_fallback:
        test_ids = [c for c in fold_validation_cases(p, dataset_id) if c not in set(real_ids)]
        sets["synthetic validation"] = p.link_cases(dataset_id, test_ids, out / "testsets" / "synthetic")
    if real_ids:
        sets[real_name] = p.link_cases(dataset_id, list(real_ids), out / "testsets" / "real")
    return sets, test_ids


def set_key(set_name: str) -> str:
    """Folder name of a test set ("synthetic", "real")."""
    return set_name.split()[0]


def collect_images(sets: Dict[str, Dict[str, Path]], dest: Path, link: bool = False) -> Path:
    """Every test image in one folder (one vertkd_predict call per model), copied or linked."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for folders in sets.values():
        for f in sorted(Path(folders["images"]).iterdir()):
            if link:
                (dest / f.name).symlink_to(f.resolve())
            else:
                shutil.copy(f, dest / f.name)
    return dest


# ------------------------------------------------------------------------------------------------ prediction
def missing_predictions(images: Path, pred: Path) -> List[str]:
    return [f.name for f in sorted(images.iterdir())
            if not (pred / f.name.replace("_0000.nii.gz", ".nii.gz")).is_file()]


def predict(p: Pipeline, images: Path, pred: Path, dataset_id: int, trainer: str, tag: str,
            spine_dataset_id: Optional[int] = None, spine_trainer: Optional[str] = None, save_preview: bool = False,
            extra_env: Optional[Dict[str, str]] = None) -> None:
    """vertkd_predict of every test image (no test-time mirroring). With a spine model, scans where it found no
    spine (e.g. a briefly trained one) are retried with the bone-threshold spine heuristic (recorded as
    ``spine_source='heuristic'``); without one the heuristic is the start for every scan."""
    p.predict(images, pred, dataset_id, trainer, "0", spine_dataset_id=spine_dataset_id,
              spine_trainer=spine_trainer, save_preview=save_preview, tag=tag, extra_env=extra_env)
    if spine_dataset_id is None:
        return
    missing = missing_predictions(images, pred)
    if missing:
        print(f"[{tag}] {len(missing)} scan(s) without result with the spine model: retrying them with the "
              f"bone-threshold spine heuristic (recorded as spine_source='heuristic')", flush=True)
        p.predict(images, pred, dataset_id, trainer, "0", save_preview=save_preview, tag=f"{tag} (heuristic spine)",
                  overwrite=False, extra_env=extra_env)


def evaluate(p: Pipeline, sets: Dict[str, Dict[str, Path]], pred: Path, out: Path,
             tag: str) -> List[Tuple[str, dict, Path]]:
    """vertkd_evaluate of the predictions of every test set into ``out/<set key>``; [(set name, summary, folder)]."""
    rows = []
    for set_name, folders in sets.items():
        ev = out / set_key(set_name)
        rows.append((set_name, p.evaluate(folders["labels"], pred, ev, tag=f"{tag} {set_key(set_name)}"), ev))
    return rows
