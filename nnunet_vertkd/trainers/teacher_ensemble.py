"""The teachers of a multi-teacher student: the models of several folds, or an explicit list.

Default: the models of the folds ``teacher_folds`` trained with ``teacher_trainer_name`` on the same dataset,
plans and configuration, i.e. $nnUNet_results/{dataset}/{teacher_trainer_name}__{plans}__{configuration}/fold_{F}/
checkpoint_final.pth (else checkpoint_best.pth). ``$VERTKD_TEACHERS`` (``TEACHERS_ENV``; entries separated by
``os.pathsep``, ':' on Linux) replaces that list: each entry is a checkpoint file, a fold folder, or a model folder
whose fold_{F} of every F in ``teacher_folds`` is used. ``describe_teachers`` lists what was found and what is
missing, with the commands that train the missing teachers. Loading one teacher network: ``teacher_discovery``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from nnunet_vertkd.trainers.teacher_discovery import (
    CHECKPOINT_NAMES, TeacherNotFoundError, checkpoint_in, default_teacher_fold_folder)

TEACHERS_ENV = "VERTKD_TEACHERS"


def find_fold_teacher_checkpoints(nnunet_results: Optional[str], dataset_name: str, plans_name: str,
                                  configuration: str, folds: Sequence, teacher_trainer_name: str,
                                  environ: Optional[dict] = None
                                  ) -> Tuple[List[Tuple[str, Path]], List[Tuple[str, List[Path]]]]:
    """(found, missing): found = [(label, checkpoint)], missing = [(label, paths looked for)].

    ``$VERTKD_TEACHERS`` (os.pathsep-separated) wins: a file is a teacher; a folder holding checkpoint_final.pth
    / checkpoint_best.pth is one; a folder holding fold_* folders gives the teacher of each fold in ``folds``.
    Otherwise the default: the ``teacher_trainer_name`` model of each fold in ``folds``."""
    environ = os.environ if environ is None else environ
    found: List[Tuple[str, Path]] = []
    missing: List[Tuple[str, List[Path]]] = []
    entries = [e.strip() for e in environ.get(TEACHERS_ENV, "").split(os.pathsep) if e.strip()]
    if entries:
        for entry in entries:
            p = Path(entry).expanduser()
            if p.is_file():
                found.append((str(p), p))
                continue
            if p.is_dir():
                direct = checkpoint_in(p)
                if direct is not None:
                    found.append((str(p), direct))
                    continue
                if any(p.glob("fold_*")):
                    for f in folds:
                        ck = checkpoint_in(p / f"fold_{f}")
                        if ck is None:
                            missing.append((f"{p} fold {f}", [p / f"fold_{f}" / n for n in CHECKPOINT_NAMES]))
                        else:
                            found.append((f"{p} fold {f}", ck))
                    continue
            missing.append((str(p), [p] + ([p / n for n in CHECKPOINT_NAMES] if p.is_dir() else [])))
        return found, missing
    if not nnunet_results:
        raise TeacherNotFoundError(
            f"nnUNet_results is not set, so the fold teachers ({teacher_trainer_name}, folds "
            f"{', '.join(str(f) for f in folds)}) cannot be found. Set nnUNet_results or list the teachers' "
            f"checkpoints in {TEACHERS_ENV} (separated by '{os.pathsep}').")
    for f in folds:
        folder = default_teacher_fold_folder(nnunet_results, dataset_name, teacher_trainer_name, plans_name,
                                             configuration, f)
        ck = checkpoint_in(folder)
        if ck is None:
            missing.append((f"fold {f}", [folder / n for n in CHECKPOINT_NAMES]))
        else:
            found.append((f"fold {f}", ck))
    return found, missing


def describe_teachers(found, missing, dataset_name: str, plans_name: str, configuration: str,
                      teacher_trainer_name: str, folds: Sequence) -> str:
    """Human-readable list of the teachers found and missing, with the commands that train the missing ones."""
    lines = [f"Multi-teacher distillation: {len(found)} teacher(s) found, {len(missing)} missing "
             f"(teacher trainer {teacher_trainer_name}, folds {', '.join(str(f) for f in folds)}):"]
    lines += [f"  found   {label}: {path}" for label, path in found]
    for label, looked in missing:
        lines.append(f"  MISSING {label}: looked for {', '.join(str(p) for p in looked)}")
    default_missing = [label[5:] for label, _ in missing if label.startswith("fold ")]
    if default_missing:
        lines.append("Train the missing teacher(s) with")
        lines += [f"    nnUNetv2_train {dataset_name} {configuration} {f} -tr {teacher_trainer_name} -p {plans_name}"
                  for f in default_missing]
    if missing:
        lines.append(f"{'or l' if default_missing else 'L'}ist existing teacher checkpoints (files, fold folders or "
                     f"model folders) in {TEACHERS_ENV}, separated by '{os.pathsep}'.")
    return "\n".join(lines)
