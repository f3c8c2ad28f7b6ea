"""The plugin's whole pipeline as small functions that run the **real console scripts** in subprocesses.

generate synthetic VerSe data (``vertkd_make_synthetic``) -> convert it plus real VerSe samples
(``vertkd_convert_verse``) -> ``nnUNetv2_plan_and_preprocess`` -> ``nnUNetv2_train`` (teacher, students, spine
model) -> ``vertkd_predict`` -> ``vertkd_evaluate``.

Every command gets a private nnU-Net environment (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``
under one folder, ``nnUNet_compile=false``, ``nnUNet_extTrainer`` with the plugin's trainers and the benchmark
variants of ``nnunet_vertkd.trainers.benchmarking``) and streams its output line by line (prefixed with a
tag) to the console and to a log file, so progress stays visible. ``nnUNet_n_proc_DA=0`` (single-process data
loading) is set for training only: nnU-Net's planner crashes with it.

Its steps in sequence are ``nnunet_vertkd.workflow``, which ``vertkd_demo --train`` (nnunet_vertkd/demo.py) and
``vertkd_benchmark study`` (nnunet_vertkd/benchmarks/study.py) run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from nnunet_vertkd.image_io import case_id, case_name


def console_script(name: str) -> str:
    """Path of a console script: next to the running Python first (a venv not on PATH), else on PATH."""
    cand = Path(sys.executable).parent / name
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"console script {name!r} not found next to {sys.executable} nor on PATH "
                            f"(is the package installed? pip install -e .)")


def real_sample_dir() -> Optional[Path]:
    """``../shared/data/verse_sample`` relative to the repository root, when it exists (development checkout)."""
    p = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "verse_sample"
    return p if p.is_dir() else None


class PipelineError(RuntimeError):
    """A pipeline step failed; the message names the command and shows the end of its output."""


@dataclass
class Pipeline:
    """One pipeline run: a root folder holding nnUNet_raw/preprocessed/results, logs and outputs."""
    root: Path
    device: str = "cpu"
    threads: Optional[int] = None
    log_name: str = "pipeline.log"
    quiet_patterns: Sequence[str] = ("{'data_identifier'", "{'dataset_name'", "Inspecting module", "Searching ",
                                     "#####", "Isensee", "Please cite", "hiddenlayer", "Unable to plot",
                                     "warnings.warn", "FutureWarning", "You are using the old nnU-Net",
                                     "Trainer '", "Found class", "These are the global plan",
                                     "This is the configuration used", "resenc_presets")
    env: Dict[str, str] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        env = dict(os.environ)
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            folder = self.root / name
            folder.mkdir(exist_ok=True)
            env[name] = str(folder)
        env["nnUNet_compile"] = "false"
        env.pop("nnUNet_n_proc_DA", None)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TQDM_MININTERVAL", "5")
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        ensure_ext_trainer_env(env)  # the plugin's folder also re-exports the demo/study trainer variants
        self.env = env

    # ------------------------------------------------------------------ running commands
    @property
    def log_file(self) -> Path:
        return self.root / "logs" / self.log_name

    def run(self, tag: str, cmd: List[str], extra_env: Optional[Dict[str, str]] = None, check: bool = True,
            echo_every: int = 1) -> int:
        """Run a console script (name resolved next to the running Python), stream its output with ``[tag]``."""
        cmd = [console_script(cmd[0])] + [str(c) for c in cmd[1:]]
        env = dict(self.env)
        env.update(extra_env or {})
        shown = " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))
        print(f"[{tag}] $ {shown}", flush=True)
        t0 = time.time()
        tail: List[str] = []
        with open(self.log_file, "a", encoding="utf-8") as log:
            log.write(f"\n===== [{tag}] $ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    bufsize=1, errors="replace")
            n = 0
            for raw in proc.stdout:
                for line in raw.replace("\r", "\n").splitlines():
                    log.write(line + "\n")
                    if not line.strip():
                        continue
                    tail.append(line)
                    tail = tail[-40:]
                    if any(p in line for p in self.quiet_patterns):
                        continue
                    n += 1
                    if n % max(1, echo_every) == 0:
                        print(f"[{tag}] {line}", flush=True)
            proc.wait()
        dt = time.time() - t0
        self.timings[tag] = self.timings.get(tag, 0.0) + dt
        print(f"[{tag}] done in {dt:.0f} s (exit {proc.returncode})", flush=True)
        if check and proc.returncode != 0:
            raise PipelineError(f"step '{tag}' failed: {shown} exited with {proc.returncode}. Last output:\n"
                                + "\n".join(tail) + f"\nFull log: {self.log_file}")
        return proc.returncode

    # ------------------------------------------------------------------ steps
    def dataset_name(self, dataset_id: int) -> str:
        prefix = f"Dataset{dataset_id:03d}_"
        for base in ("nnUNet_raw", "nnUNet_preprocessed"):
            folder = Path(self.env[base])
            if folder.is_dir():
                for d in sorted(folder.iterdir()):
                    if d.name.startswith(prefix):
                        return d.name
        raise PipelineError(f"dataset {dataset_id} not found under {self.env['nnUNet_raw']}")

    def raw_dataset(self, dataset_id: int) -> Path:
        return Path(self.env["nnUNet_raw"]) / self.dataset_name(dataset_id)

    def generate_synthetic(self, out: Path, cases: int, seed: int, scale: float,
                           spacing: Optional[str] = None, num_processes: int = 1) -> Path:
        cmd = ["vertkd_make_synthetic", out, "--cases", cases, "--seed", seed, "--scale", scale,
               "-np", num_processes]
        if spacing:
            cmd += ["--spacing", spacing]
        if Path(out).is_dir() and any(Path(out).iterdir()):
            cmd.append("--overwrite")
        self.run("generate", cmd)
        return Path(out)

    def convert(self, roots: Sequence[Path], dataset_id: int, spacing_mm: float = 1.0,
                num_processes: int = 1) -> dict:
        cmd = ["vertkd_convert_verse", *roots, "-d", dataset_id, "--spacing-mm", spacing_mm,
               "-np", num_processes, "--disable_progress_bar", "--overwrite"]
        self.run("convert", cmd)
        report = self.raw_dataset(dataset_id) / "conversion_report.json"
        if report.is_file():
            with open(report, encoding="utf-8") as f:
                return json.load(f)
        return {}

    def plan_and_preprocess(self, dataset_ids: Sequence[int], num_processes: int = 1,
                            verify: bool = True) -> None:
        cmd = ["nnUNetv2_plan_and_preprocess", "-d", *dataset_ids, "-c", "3d_fullres", "-np", num_processes]
        if verify:
            cmd.append("--verify_dataset_integrity")
        self.run("plan+preprocess", cmd)

    def splits_file(self, dataset_id: int) -> Path:
        return Path(self.env["nnUNet_preprocessed"]) / self.dataset_name(dataset_id) / "splits_final.json"

    def hold_out(self, dataset_ids: Iterable[int], case_ids: Iterable[str], fold: int = 0) -> List[str]:
        """Move ``case_ids`` from the training to the validation side of ``fold`` in splits_final.json (e.g. the
        real samples, so that they are never trained on). Returns the cases moved."""
        held = set(case_ids)
        moved: List[str] = []
        for d in dataset_ids:
            path = self.splits_file(d)
            if not path.is_file():
                raise PipelineError(f"{path} is missing (vertkd_convert_verse writes it)")
            with open(path, encoding="utf-8") as f:
                splits = json.load(f)
            tr = [c for c in splits[fold]["train"] if c not in held]
            moved = sorted(set(splits[fold]["train"]) - set(tr))
            splits[fold]["val"] = sorted(set(splits[fold]["val"]) | (held & set(splits[fold]["train"]))
                                         | (held & set(splits[fold]["val"])))
            splits[fold]["train"] = tr
            if not tr:
                raise PipelineError(f"holding out {sorted(held)} leaves no training case in fold {fold} of {path}")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(splits, f, indent=1)
        return moved

    def train(self, dataset_id: int, trainer: str, fold="0", tag: Optional[str] = None,
              extra_env: Optional[Dict[str, str]] = None, echo_every: int = 1,
              n_proc_da: Optional[int] = None) -> Path:
        """nnUNetv2_train. Data augmentation workers (nnUNet_n_proc_DA): 0 (in-process, reproducible) on the
        CPU; on CUDA ``n_proc_da`` (default: nnU-Net's own default)."""
        env = dict(extra_env or {})
        if self.device == "cpu":
            env.setdefault("nnUNet_n_proc_DA", "0")
        elif n_proc_da is not None:
            env.setdefault("nnUNet_n_proc_DA", str(max(1, int(n_proc_da))))
        self.run(tag or f"train {trainer}",
                 ["nnUNetv2_train", dataset_id, "3d_fullres", fold, "-tr", trainer, "-device", self.device],
                 extra_env=env, echo_every=echo_every)
        folder = self.model_folder(dataset_id, trainer, results=env.get("nnUNet_results"))
        ckpt = folder / f"fold_{fold}" / "checkpoint_final.pth"
        if not ckpt.is_file():
            raise PipelineError(f"training {trainer} finished without {ckpt}")
        return folder

    def model_folder(self, dataset_id: int, trainer: str, plans: str = "nnUNetPlans",
                     configuration: str = "3d_fullres", results: Optional[str] = None) -> Path:
        return (Path(results or self.env["nnUNet_results"]) / self.dataset_name(dataset_id)
                / f"{trainer}__{plans}__{configuration}")

    def predict(self, inputs: Path, output: Path, dataset_id: int, trainer: str, fold="0",
                spine_dataset_id: Optional[int] = None, spine_trainer: Optional[str] = None,
                save_preview: bool = False, disable_tta: bool = True, tag: Optional[str] = None,
                check: bool = False, overwrite: bool = True, extra_env: Optional[Dict[str, str]] = None) -> int:
        """vertkd_predict (without ``overwrite``: only the scans without a result); returns its exit status."""
        cmd = ["vertkd_predict", "-i", inputs, "-o", output, "-d", dataset_id, "-tr", trainer, "-f", fold,
               "-device", self.device] + (["--overwrite"] if overwrite else [])
        if spine_dataset_id is not None:
            cmd += ["--spine-dataset", spine_dataset_id, "--spine-f", fold]
            if spine_trainer:
                cmd += ["--spine-tr", spine_trainer]
        if save_preview:
            cmd.append("--save-preview")
        if disable_tta:
            cmd.append("--disable_tta")
        if self.threads:
            cmd += ["--threads", self.threads]
        # a case that fails (e.g. "no spine found" for a barely trained model) is reported, not fatal
        return self.run(tag or f"predict {trainer}", cmd, extra_env=extra_env, check=check)

    def evaluate(self, ref: Path, pred: Path, out: Path, tag: str = "evaluate", quiet: bool = True) -> dict:
        cmd = ["vertkd_evaluate", "-ref", ref, "-pred", pred, "-o", out]
        if quiet:
            cmd.append("--quiet")
        self.run(tag, cmd)
        with open(Path(out) / "summary.json", encoding="utf-8") as f:
            return json.load(f)

    # ------------------------------------------------------------------ helpers for the test data
    def link_cases(self, dataset_id: int, case_ids: Sequence[str], out: Path, images: str = "imagesTr",
                   labels: str = "labelsTr") -> Dict[str, Path]:
        """Folders ``out/images`` and ``out/labels`` holding links to (copies of) the converted cases, plus the
        dataset.json beside ``labels`` (for vertkd_evaluate's label mapping). Returns their paths."""
        raw = self.raw_dataset(dataset_id)
        out = Path(out)
        img_dir, lab_dir = out / "images", out / "labels"
        for d in (img_dir, lab_dir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        for c in case_ids:
            for src, dst in ((raw / images / f"{c}_0000.nii.gz", img_dir / f"{c}_0000.nii.gz"),
                             (raw / labels / f"{c}.nii.gz", lab_dir / f"{c}.nii.gz"),
                             (raw / labels / f"{c}_ctd.json", lab_dir / f"{c}_ctd.json")):
                if src.is_file():
                    _link_or_copy(src, dst)
        shutil.copy(raw / "dataset.json", out / "dataset.json")
        return {"images": img_dir, "labels": lab_dir}

    def cases_in(self, dataset_id: int, sub: str = "imagesTs") -> List[str]:
        folder = self.raw_dataset(dataset_id) / sub
        if not folder.is_dir():
            return []
        return sorted(case_name(p.name)[0] for p in folder.glob("*_0000.nii.gz"))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:
        shutil.copy(src, dst)


def verse_case_ids(root: Path) -> List[str]:
    """Case ids (VerSe stem without ``_ct``) of the CT files under a VerSe folder."""
    ids = [case_id(p.name) for p in Path(root).rglob("*_ct.nii.gz")]
    ids += [case_id(p.name) for p in Path(root).rglob("verse*.nii.gz")  # old naming: verse004.nii.gz
            if "_seg" not in p.name]
    return sorted(set(ids))


def summary_row(summary: dict) -> dict:
    """The Table-3 numbers of a vertkd_evaluate summary.json (overall): means and stds, n."""
    o = summary.get("overall", {})

    def ms(key):
        v = o.get(key) or {}
        return v.get("mean"), v.get("std")

    return {"dice_pct": ms("dice_pct"), "hd_mm": ms("hd_mm"), "assd_ref_to_pred_mm": ms("assd_ref_to_pred_mm"),
            "assd_pred_to_ref_mm": ms("assd_pred_to_ref_mm"), "failure_rate_pct": o.get("failure_rate_pct"),
            "localisation_rate_pct": ms("localisation_rate_pct"), "id_rate_pct": ms("id_rate_pct"),
            "n_vertebrae": o.get("n_vertebrae"), "n_scans": o.get("n_scans"),
            "n_missing": o.get("n_missing"), "n_extra": o.get("n_extra")}


def fmt_ms(pair, nd: int = 2) -> str:
    if pair is None:
        return "–"
    m, s = pair
    if m is None:
        return "–"
    return f"{m:.{nd}f} ± {s:.{nd}f}" if s is not None else f"{m:.{nd}f}"
