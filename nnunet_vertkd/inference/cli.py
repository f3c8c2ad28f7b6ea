"""``vertkd_predict``: segment CT scans vertebra by vertebra with a trained nnunet_vertkd model.

Options follow the plugin's convention (``nnunet_vertkd.command_line``): ``-device``, ``--threads`` (the old
``-npp`` / ``--num-threads`` stay accepted; nnU-Net's ``-npp`` means preprocessing processes, so it is deprecated
here), ``--disable_tta``, ``--overwrite``, ``--verbose``, ``--disable_progress_bar``. Exit status: 0 every case
segmented, 1 a case failed, 2 bad input or usage (``vertkd_predict: error: …``), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from nnunet_vertkd.command_line import (
    CASE_FAILED_EXIT, InputError, add_device_option, add_overwrite_option, add_progress_option, add_threads_option,
    add_tta_option, add_verbose_option, apply_threads, command)
from nnunet_vertkd.labelling.cli_support import add_label_arguments, make_label_mapping

EPILOG = """\
examples:
  vertkd_predict -i scans/ -o out/                                     # the shipped student + spine model
  vertkd_predict -i scans/ -o out/ -d 501 -f all                       # spine model: heuristic fallback
  vertkd_predict -i scans/ -o out/ -d 501 -f 0 --spine-dataset 502 --save-preview
  vertkd_predict -i a.nii.gz b_0000.nii.gz -o out/ -m /path/to/model_folder -device cpu
  vertkd_predict -i scans/ -o out/ -d 501 -f all -part_id 0 -num_parts 2   # half of the cases (0 or 1)

Outputs per case: {case}.nii.gz (instances with VerSe labels, or 1..N from the top with --labels sequential;
input grid), {case}_ctd.json (VerSe centroids at the vertebral-body centres), {case}_record.json (counts,
seconds per stage, each vertebra's label probability and runner-up), optional {case}_spine.nii.gz and
{case}_snp.png. Exit status: 0 all segmented, 1 a case failed (they are listed at the end), 2 bad input or usage,
130 interrupted. See docs/inference.md.
"""


def _folds(values: Optional[List[str]]):
    if not values:
        return None
    return [v if v == "all" else int(v) for v in values]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vertkd_predict", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Segment vertebrae one at a time from the top (spine location, then the iterative "
                    "memory network) with a trained nnunet_vertkd model, on nnU-Net's preprocessing and export. "
                    "Model folders are found under $nnUNet_results like nnUNetv2_predict does. -device cuda (or mps) "
                    "falls back to the CPU with a warning when it is unavailable.")
    p.add_argument("-i", nargs="+", required=True, metavar="INPUT",
                   help="a folder of CT images (NIfTI; nnU-Net '_0000' names or plain names) or a list of files, "
                        "in Hounsfield units")
    p.add_argument("-o", required=True, metavar="OUTPUT", help="output folder (created if missing)")
    p.add_argument("-d", metavar="DATASET", help="vertebra dataset name or id (e.g. 501); without -d and -m the "
                                                 "shipped reference student and spine model are used")
    p.add_argument("-m", metavar="MODEL_FOLDER", help="vertebra model folder given directly (instead of -d/-tr/-p/-c)")
    p.add_argument("-tr", default="VertKDStudentTrainer", help="vertebra trainer (default: %(default)s)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default: %(default)s)")
    p.add_argument("-f", nargs="+", default=None, metavar="FOLD",
                   help="folds to use, e.g. '0' or 'all' or '0 1 2' (probabilities averaged); default: every "
                        "fold that has the checkpoint")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name (default: %(default)s)")
    add_device_option(p, default="cuda", choices=("cpu", "cuda", "mps"))  # unavailable cuda/mps: the CPU
    p.add_argument("--spine-dataset", metavar="ID",
                   help="spine dataset name or id (e.g. 502); if omitted, a bone-threshold heuristic locates the "
                        "spine (crude; recorded as spine_source='heuristic')")
    p.add_argument("--spine-tr", default="VertKDSpineTrainer", help="spine trainer (default: %(default)s)")
    p.add_argument("--spine-p", default="nnUNetPlans", help="spine plans identifier (default: %(default)s)")
    p.add_argument("--spine-c", default="3d_fullres", help="spine configuration (default: %(default)s)")
    p.add_argument("--spine-f", nargs="+", default=None, metavar="FOLD", help="spine folds (default: same as -f)")
    p.add_argument("--spine-m", metavar="MODEL_FOLDER", help="spine model folder given directly")
    p.add_argument("--save-preview", action="store_true", help="also write {case}_snp.png")
    p.add_argument("--save-spine", action="store_true", help="also write {case}_spine.nii.gz (spine probability)")
    add_overwrite_option(p, "replace existing outputs (default: skip those cases)")
    add_tta_option(p)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino", "onnxruntime"],
                   help="inference backend of the vertebra and spine networks: auto (default) = torch on a GPU, on "
                        "the CPU the fastest installed (openvino, then onnxruntime, then torch); openvino and "
                        "onnxruntime are optional extras (pip install 'nnunet-vertkd[openvino]'), CPU only, and "
                        "export the model once to ONNX beside the checkpoint. See docs/inference.md")
    p.add_argument("--preprocessing", default="converter", choices=["converter", "nnunet"],
                   help="converter (default): the spine step on the CT resampled as vertkd_convert_verse made the "
                        "training data, then only the spine region at the model's spacing (fast); nnunet: nnU-Net's "
                        "preprocessor and export on the whole volume (slow on large scans)")
    threads = add_threads_option(p, extra_aliases=("--num-threads", "-npp"))
    threads.help += "; -npp and --num-threads are deprecated aliases (nnU-Net's -npp means preprocessing processes)"
    p.add_argument("-part_id", type=int, default=0, help="which part of the case list this run does (0-based)")
    p.add_argument("-num_parts", type=int, default=1, help="into how many parts the sorted case list is split")
    add_setting_option(p)
    add_verbose_option(p)
    add_progress_option(p)
    add_label_arguments(p)
    return p


def add_setting_option(parser) -> None:
    """``--setting NAME=VALUE`` (repeatable): loop settings, read by ``parse_settings``."""
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="override a setting of the iterative loop (IterativeSettings field, value in voxels of "
                             "the model's preprocessed space), e.g. --setting MIN_START_FRAGMENT_VOXELS=200; "
                             "repeatable. Defaults: the 1 mm values of docs/inference.md scaled to the model's "
                             "spacing")


def parse_settings(items: List[str]) -> dict:
    """['NAME=VALUE', ...] -> {NAME: typed value} for IterativeSettings."""
    import dataclasses
    import typing
    from nnunet_vertkd.inference.iterative import IterativeSettings
    fields = {f.name: f for f in dataclasses.fields(IterativeSettings)}
    hints = typing.get_type_hints(IterativeSettings)
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().upper()
        if not sep or name not in fields:
            raise InputError(f"--setting {item!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
        hint = hints[name]
        if value.strip().lower() == "none" and type(None) in getattr(hint, "__args__", ()):
            out[name] = None
            continue
        base = next((t for t in getattr(hint, "__args__", (hint,)) if t is not type(None)), str)
        try:
            if base is bool:
                if value.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[name] = value.strip().lower() in ("true", "1")
            else:
                out[name] = base(value)
        except ValueError:
            raise InputError(f"--setting {item!r}: {value!r} is not a valid {base.__name__}") from None
    return out


def resolve_model_folder(dataset: Optional[str], trainer: str, plans: str, configuration: str,
                         folder: Optional[str], what: str) -> str:
    if folder:
        if not os.path.isdir(folder):
            raise InputError(f"{what} model folder {folder} does not exist")
        return folder
    if dataset is None:
        raise InputError(f"give the {what} model with -d DATASET (or -m MODEL_FOLDER)")
    if not os.environ.get("nnUNet_results"):
        raise InputError("nnUNet_results is not set: export it or give the model folder with -m")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise InputError(f"{what} dataset {dataset!r} not found: {e}") from None
    out = get_output_folder(name, trainer, plans, configuration)
    if not os.path.isdir(out):
        raise InputError(f"{what} model folder {out} does not exist (trained with -tr {trainer} -p {plans} "
                         f"-c {configuration}?)")
    return out


@command("vertkd_predict", interrupted="cases already written are complete, the current one was discarded")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    parse_settings(args.setting)  # fail early on a bad --setting
    if args.num_parts < 1 or not 0 <= args.part_id < args.num_parts:
        raise InputError(f"-part_id must be in [0, -num_parts), got {args.part_id} and {args.num_parts}")
    apply_threads(args.threads)  # also checks that it is at least 1
    from nnunet_vertkd.ext_trainers_path import ensure_ext_trainer_env
    ensure_ext_trainer_env()
    import torch
    from nnunet_vertkd.inference.model_loading import ModelFolderError
    from nnunet_vertkd.inference.predictor import VertKDPredictor

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available, using the CPU", file=sys.stderr)
        device = "cpu"
    if device == "mps" and not torch.backends.mps.is_available():
        print("MPS is not available, using the CPU", file=sys.stderr)
        device = "cpu"
    spine_folder = None
    if args.d is None and args.m is None:  # no model given: the shipped reference pair (docs/pretrained.md)
        from nnunet_vertkd import pretrained
        try:
            model_folder, shipped_spine = pretrained.model_folders()
        except pretrained.PretrainedModelMissing as e:
            raise InputError(f"no model given (-d/-m) and {e}") from None
        print(f"vertkd_predict: no model given (-d/-m): using {pretrained.describe()}", file=sys.stderr)
        args.f = args.f or [pretrained.FOLD]
        if not (args.spine_dataset or args.spine_m):
            spine_folder = shipped_spine
            args.spine_f = args.spine_f or [pretrained.FOLD]
    else:
        model_folder = resolve_model_folder(args.d, args.tr, args.p, args.c, args.m, "vertebra")
    if spine_folder is None and (args.spine_dataset or args.spine_m):
        spine_folder = resolve_model_folder(args.spine_dataset, args.spine_tr, args.spine_p, args.spine_c,
                                            args.spine_m, "spine")
    elif spine_folder is None:
        print("no --spine-dataset given: locating the spine with the bone-threshold heuristic", file=sys.stderr)
    inputs = args.i[0] if len(args.i) == 1 and os.path.isdir(args.i[0]) else args.i
    from nnunet_vertkd.inference.outputs import RunSetupError, check_output_folder, list_input_cases
    try:  # before the model is loaded: no usable input (empty or DICOM folder), output folder not writable
        list_input_cases(inputs)
        check_output_folder(args.o)
    except RunSetupError as e:
        raise InputError(str(e)) from None

    from nnunet_vertkd.inference.backends import BackendError
    try:
        predictor = VertKDPredictor(device=torch.device(device), use_mirroring=not args.disable_tta,
                                    verbose=args.verbose, num_threads=args.threads,
                                    allow_tqdm=not args.disable_progress_bar,
                                    settings_overrides=parse_settings(args.setting), backend=args.backend,
                                    preprocessing=args.preprocessing,
                                    label_mapping=make_label_mapping(args, device, resolve_model_folder,
                                                                     not args.disable_tta))
    except BackendError as e:
        raise InputError(str(e)) from None
    try:
        predictor.initialize_from_trained_model_folder(model_folder, _folds(args.f), args.chk, spine_folder,
                                                       _folds(args.spine_f) or _folds(args.f), args.chk)
    except (ModelFolderError, FileNotFoundError, RuntimeError, KeyError) as e:
        if args.verbose:
            raise
        raise InputError(f"cannot load the model: {type(e).__name__}: {e}") from None
    try:
        summary = predictor.predict_from_files(inputs, args.o, overwrite=args.overwrite,
                                               save_preview=args.save_preview, save_spine=args.save_spine,
                                               num_parts=args.num_parts, part_id=args.part_id)
    except RunSetupError as e:
        raise InputError(str(e)) from None
    n = len(summary["cases"])
    print(f"\nvertkd_predict: {n} case(s) in part {args.part_id}/{args.num_parts}: "
          f"{len(summary['succeeded'])} segmented, {len(summary['skipped_existing'])} skipped (output exists), "
          f"{len(summary['failed'])} failed")
    if summary["failed"]:
        print("failed:")
        for msg in summary["failed"].values():
            print(f"  {msg}")
        return CASE_FAILED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
