"""``vertkd_convert_verse``: VerSe folders -> the vertebra and the spine nnU-Net raw datasets (+ splits).

See docs/conversion.md for the user-facing reference. Options and exit status follow
``nnunet_vertkd.command_line``: 0 converted, 1 no case converted or writing failed, 2 bad arguments or inputs
(``ConversionError``), 130 interrupted.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import List, Optional, Sequence

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from tqdm import tqdm

from nnunet_vertkd.command_line import (CASE_FAILED_EXIT, InputError, add_overwrite_option, add_processes_option,
                                        add_progress_option, command)
from nnunet_vertkd.image_checks import folder_is_writable as _writable  # module name patched in tests
from nnunet_vertkd.interrupts import worker_initializer
from nnunet_vertkd.labels import NNUNET_TO_VERSE, nnunet_dataset_labels
from nnunet_vertkd.model_contract import DATASET_JSON_KEY
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION

from .case_conversion import (SPINE_SPACING_MM, STAGING_FOLDER, CaseJob, CaseResult, convert_case,
                              recover_interrupted_commits)
from .report import REPORT_NAME, build_report, summary_lines
from .splits import make_splits, write_json_atomic
from .verse_discovery import TEST, discover

__all__ = ["convert_verse", "main", "ConversionError", "ConversionWriteError", "SPINE_SPACING_MM",
           "vertebra_dataset_name", "spine_dataset_name"]

PROG = "vertkd_convert_verse"
LICENCE = "CC BY-SA 4.0 (VerSe; Sekuboyina et al. 2021, Liebl et al. 2021, Loeffler et al. 2020)"


class ConversionError(InputError):
    """A problem that stops the whole conversion (bad arguments, conflicting dataset folders, no cases)."""


class ConversionWriteError(ConversionError):
    """Writing failed (read-only folder, disk full): the conversion stopped, what was written so far is complete."""


def vertebra_dataset_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_VerSeVertebrae"


def spine_dataset_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_VerSeSpine"


def _folders_with_id(base: Optional[str], dataset_id: int) -> List[str]:
    if not base or not os.path.isdir(base):
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(n for n in os.listdir(base) if n.startswith(prefix) and os.path.isdir(os.path.join(base, n)))


def _check_dataset_folders(dataset_id: int, name: str, raw: str, preprocessed: Optional[str],
                           results: Optional[str], overwrite: bool) -> None:
    """Same id with another name: error, or with overwrite remove it from raw/preprocessed (never results)."""
    for base, kind in ((raw, "nnUNet_raw"), (preprocessed, "nnUNet_preprocessed"), (results, "nnUNet_results")):
        for other in _folders_with_id(base, dataset_id):
            if other == name:
                continue
            path = os.path.join(base, other)
            if not overwrite:
                raise ConversionError(
                    f"{path} already uses dataset id {dataset_id} with another name (this conversion writes "
                    f"{name}). Choose another id with -d / --spine-id, or pass --overwrite to replace it.")
            if kind == "nnUNet_results":
                raise ConversionError(
                    f"{path} holds trained models for dataset id {dataset_id} under another name; "
                    f"--overwrite never deletes results. Move or delete it yourself, or choose another id.")
            print(f"--overwrite: removing {path}")
            shutil.rmtree(path)


def write_dataset_json(dataset_dir: str, name: str, num_training: int, labels: dict, vertkd: dict,
                       description: str) -> str:
    """dataset.json of a converted dataset, written by nnU-Net's ``generate_dataset_json`` (the plugin's metadata
    under ``DATASET_JSON_KEY``) into a temporary folder and moved into place with ``os.replace``: a failed or
    interrupted write leaves the previous dataset.json as it was. Returns its path."""
    final = os.path.join(dataset_dir, "dataset.json")
    tmp_dir = tempfile.mkdtemp(prefix=".dataset_json.", dir=dataset_dir)
    try:
        generate_dataset_json(tmp_dir, {"0": "CT"}, dict(labels), num_training, ".nii.gz",
                              dataset_name=name, reference="VerSe: https://github.com/anjany/verse",
                              description=description, overwrite_image_reader_writer="SimpleITKIO",
                              license=LICENCE, converted_by="vertkd_convert_verse",
                              **{DATASET_JSON_KEY: vertkd})
        os.replace(os.path.join(tmp_dir, "dataset.json"), final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final


def _remove_stale(dataset_dir: str, keep: set) -> List[str]:
    """Remove case files of earlier runs that this run did not write (so re-runs give the same dataset)."""
    removed = []
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        folder = os.path.join(dataset_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if path not in keep and os.path.isfile(path) and (name.endswith(".nii.gz") or name.endswith(".json")):
                os.remove(path)
                removed.append(path)
    return removed


def _run_jobs(jobs: List[CaseJob], num_processes: int, progress: bool) -> List[CaseResult]:
    """Convert the cases (in worker processes when ``num_processes`` > 1). Ctrl-C (KeyboardInterrupt) stops the
    workers at once (queued cases are cancelled, running ones terminated; a case in the middle of its commit
    finishes it first) and is re-raised. Workers ignore SIGINT and die with this process (``worker_initializer``).
    A failed write stops the conversion after the running cases (``CaseWriteError`` in the result)."""
    bar = tqdm(total=len(jobs), desc="Converting VerSe cases", unit="case", disable=not progress)
    results: List[CaseResult] = []
    try:
        if num_processes <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(convert_case(job))
                bar.update()
                if results[-1].write_error:
                    break
        else:
            ex = ProcessPoolExecutor(max_workers=min(num_processes, len(jobs)), mp_context=get_context("spawn"),
                                     initializer=worker_initializer, initargs=(os.getpid(),))
            try:
                futures = [ex.submit(convert_case, job) for job in jobs]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    bar.update()
                    if results[-1].write_error:
                        for f in futures:
                            f.cancel()
                        break
            except BaseException:
                _stop_workers(ex)
                raise
            ex.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    return sorted(results, key=lambda r: r.case_id)


def _stop_workers(ex: ProcessPoolExecutor, timeout_s: float = 20.0) -> None:
    """Cancel queued cases, terminate the workers (SIGTERM; a worker holds it back while it moves a case's files
    into place) and wait for them, so nothing writes into the staging folder after this returns."""
    processes = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)


def _clean_staging(staging: str) -> None:
    """Roll back half-done commits of killed processes, then delete the staging folder."""
    recover_interrupted_commits(staging)
    shutil.rmtree(staging, ignore_errors=True)


def _check_writable(folders: Sequence[str]) -> None:
    for folder in folders:
        if not _writable(folder):
            raise ConversionError(f"cannot write to {folder} (read-only folder or no permission); nothing was "
                                  f"converted or removed")


def convert_verse(roots: Sequence[str], dataset_id: int, spine_id: Optional[int] = None, spacing_mm: float = 1.0,
                  spine_spacing_mm: float = SPINE_SPACING_MM, num_processes: int = 1, overwrite: bool = False,
                  nnunet_raw: Optional[str] = None, nnunet_preprocessed: Optional[str] = None,
                  nnunet_results: Optional[str] = None, progress: bool = True, verbose: bool = True) -> dict:
    """Convert VerSe folders; returns the report (also written to <vertebra dataset>/conversion_report.json).

    Folders default to the nnUNet_raw / nnUNet_preprocessed / nnUNet_results environment variables.
    Raises ConversionError for problems that stop the whole conversion; bad cases are skipped and reported.
    """
    raw = nnunet_raw or os.environ.get("nnUNet_raw")
    preprocessed = nnunet_preprocessed or os.environ.get("nnUNet_preprocessed")
    results_dir = nnunet_results or os.environ.get("nnUNet_results")
    if not raw:
        raise ConversionError("nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw (the datasets are "
                              "written there)")
    spine_id = dataset_id + 1 if spine_id is None else spine_id
    for i, what in ((dataset_id, "-d"), (spine_id, "--spine-id")):
        if not 1 <= i <= 999:
            raise ConversionError(f"{what} {i}: nnU-Net dataset ids are 1-999")
    if spine_id == dataset_id:
        raise ConversionError(f"the spine dataset needs its own id (--spine-id {spine_id} equals -d {dataset_id})")
    if not spacing_mm > 0 or not spine_spacing_mm > 0:
        raise ConversionError("spacings must be positive")
    vert_name, spine_name = vertebra_dataset_name(dataset_id), spine_dataset_name(spine_id)
    _check_dataset_folders(dataset_id, vert_name, raw, preprocessed, results_dir, overwrite)
    _check_dataset_folders(spine_id, spine_name, raw, preprocessed, results_dir, overwrite)

    roots = [os.path.abspath(r) for r in roots]
    try:
        found = discover(roots)
    except FileNotFoundError as e:
        raise ConversionError(str(e)) from None
    if not found.cases:
        lines = [f"no convertible VerSe case (CT + vertebra mask) found under {', '.join(roots)}"]
        lines += [f"  skipped {s.case_id}: {s.reason}: {', '.join(s.files)}" for s in found.skipped]
        raise ConversionError("\n".join(lines))

    vert_dir, spine_dir = os.path.join(raw, vert_name), os.path.join(raw, spine_name)
    if overwrite:
        for d in (vert_dir, spine_dir):
            if os.path.isdir(d):
                print(f"--overwrite: removing {d}")
                shutil.rmtree(d)
    out_folders = [os.path.join(d, sub) for d in (vert_dir, spine_dir)
                   for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")]
    try:
        for folder in out_folders:
            os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConversionError(f"cannot create {e.filename}: {e.strerror or e}") from None
    staging = os.path.join(vert_dir, STAGING_FOLDER)
    _clean_staging(staging)  # leftovers of an interrupted run (half-done commits are rolled back first)
    os.makedirs(staging, exist_ok=True)
    _check_writable([vert_dir, spine_dir, staging] + out_folders)  # before any work

    jobs = [CaseJob(src, vert_dir, spine_dir, spacing_mm, spine_spacing_mm) for src in found.cases]
    try:
        results = _run_jobs(jobs, num_processes, progress)
    finally:  # also on Ctrl-C: no staging folder left behind
        _clean_staging(staging)
    write_errors = [r.write_error for r in results if r.write_error]
    if write_errors:
        raise ConversionWriteError("writing failed, conversion stopped (the cases written so far are complete; "
                              "earlier files, dataset.json and the report were left as they were; nothing was "
                              "removed):\n  " + "\n  ".join(write_errors))
    converted = [r for r in results if r.converted]

    keep = {f for r in converted for f in r.files}
    try:  # only now, with every new file in place
        removed = _remove_stale(vert_dir, keep) + _remove_stale(spine_dir, keep)
    except OSError as e:
        raise ConversionError(f"cannot remove the stale file {e.filename}: {e.strerror or e}") from None
    for d in (vert_dir, spine_dir):
        for sub in ("imagesTs", "labelsTs"):
            path = os.path.join(d, sub)
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)

    tr = [r for r in converted if r.split != TEST]
    split_list, split_notes = make_splits([(r.case_id, r.patient, r.split) for r in tr])
    if tr:
        write_dataset_json(
            vert_dir, vert_name, len(tr), nnunet_dataset_labels(),
            {"kind": "vertebrae", "orientation": CANONICAL_ORIENTATION, "spacing_mm": spacing_mm,
             "nnunet_to_verse": {str(k): v for k, v in sorted(NNUNET_TO_VERSE.items())},
             "spine_dataset_id": spine_id},
            "VerSe vertebrae, labels consecutive in cranio-caudal order (C1=1 ... T12=19, T13=20, L1=21 ... L6=26), "
            f"{CANONICAL_ORIENTATION}, {spacing_mm} mm isotropic; written by vertkd_convert_verse")
        write_dataset_json(
            spine_dir, spine_name, len(tr), {"background": 0, "spine": 1},
            {"kind": "spine", "orientation": CANONICAL_ORIENTATION, "spacing_mm": spine_spacing_mm,
             "vertebra_dataset_id": dataset_id},
            f"VerSe spine location: union of vertebrae, {CANONICAL_ORIENTATION}, {spine_spacing_mm} mm isotropic; "
            "written by vertkd_convert_verse")
    else:
        split_notes = split_notes + ["no training/validation scan converted: no dataset.json written"]

    split_paths = []
    if split_list:
        if preprocessed:
            for name in (vert_name, spine_name):
                path = os.path.join(preprocessed, name, "splits_final.json")
                write_json_atomic(path, split_list)
                split_paths.append(path)
        else:
            path = os.path.join(vert_dir, "splits_final.json")
            write_json_atomic(path, split_list)
            split_paths.append(path)
            split_notes = split_notes + [f"nnUNet_preprocessed is not set: splits written to {path}; copy it to "
                                         f"$nnUNet_preprocessed/{vert_name}/ and /{spine_name}/ before training"]

    settings = {"dataset_id": dataset_id, "dataset_name": vert_name, "spine_dataset_id": spine_id,
                "spine_dataset_name": spine_name, "spacing_mm": spacing_mm, "spine_spacing_mm": spine_spacing_mm,
                "orientation": CANONICAL_ORIENTATION, "splits_final": split_paths}
    report = build_report(roots=roots, settings=settings, results=results, discovery_skipped=found.skipped,
                          notes=found.notes, split_notes=split_notes, removed_stale=removed)
    report_path = os.path.join(vert_dir, REPORT_NAME)
    write_json_atomic(report_path, report)
    if verbose:
        print("\n".join(summary_lines(report, report_path)))
    return report


@command(PROG, interrupted="workers stopped, staging folder removed; cases already moved into place are complete "
                           "(re-run to finish)")
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert VerSe folders (VerSe'19/'20, BIDS or old naming, any nesting) into two nnU-Net raw "
                    "datasets under $nnUNet_raw: DatasetD_VerSeVertebrae (CT in LPI at --spacing-mm, labels "
                    "C1..L6 as consecutive 1..26 in cranio-caudal order, centroid JSON per case) and "
                    "Dataset{D+1}_VerSeSpine (CT at 4 mm, label = union of vertebrae). Writes splits_final.json "
                    "(fold 0 = official training vs validation, folds 1-4 patient-grouped CV) into "
                    "$nnUNet_preprocessed/<dataset>/ and a conversion_report.json. Bad cases are reported and "
                    "skipped. See docs/conversion.md.")
    parser.add_argument("roots", nargs="+", metavar="ROOT", help="VerSe folder(s); searched at any depth")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="id of the vertebra dataset (e.g. 501)")
    parser.add_argument("--spine-id", type=int, default=None, help="id of the spine dataset (default: -d + 1)")
    parser.add_argument("--spacing-mm", type=float, default=1.0,
                        help="isotropic spacing of the vertebra dataset in mm (default 1.0)")
    parser.add_argument("--spine-spacing-mm", type=float, default=SPINE_SPACING_MM,
                        help=f"isotropic spacing of the spine dataset in mm (default {SPINE_SPACING_MM})")
    add_processes_option(parser, default=max(1, min(4, os.cpu_count() or 1)),
                         what="parallel conversion processes, at most 4 by default")
    add_overwrite_option(parser, "delete existing dataset folders with these ids (any name) before converting")
    add_progress_option(parser)
    args = parser.parse_args(argv)
    try:
        report = convert_verse(args.roots, args.dataset_id, args.spine_id, args.spacing_mm, args.spine_spacing_mm,
                               args.num_processes, args.overwrite, progress=not args.disable_progress_bar)
    except ConversionWriteError as e:  # not bad input: the environment failed while running
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return CASE_FAILED_EXIT
    return 0 if report["counts"]["converted"] else CASE_FAILED_EXIT


if __name__ == "__main__":
    sys.exit(main())
