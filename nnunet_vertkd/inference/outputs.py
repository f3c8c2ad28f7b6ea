"""Input case lists and per-case output files (written atomically, all or nothing).

Per case ``{case}`` (the input's name without its image ending and without nnU-Net's ``_0000`` channel suffix):

* ``{case}.nii.gz`` (``.nii`` if the input was ``.nii``): instance mask on the input's grid, labels 1..N.
* ``{case}_ctd.json``: VerSe-format centroids (direction = input's orientation letters, voxel indices).
* ``{case}_record.json``: the per-case record (counts, stop reason, seconds per stage, ...).
* optional ``{case}_spine.nii.gz`` (spine probability, float32, input grid) and ``{case}_snp.png`` (preview).

Every file is first written to a hidden temporary name in the output folder and renamed into place with
``os.replace`` only after all of the case's files were written; the instance mask is renamed last, so its
presence means the case is complete. On any error the temporaries are removed.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import write_centroids
from nnunet_vertkd.orientation import orientation_of

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")
_CHANNEL = re.compile(r"_(\d{4})$")


def split_ending(name: str) -> Tuple[str, str]:
    for e in IMAGE_ENDINGS:
        if name.endswith(e):
            return name[:-len(e)], e
    return name, ""


def case_name(path: str) -> Tuple[str, Optional[int]]:
    """(case, channel) from a file name: 'a_0000.nii.gz' -> ('a', 0); 'a.nii.gz' -> ('a', None)."""
    stem, _ = split_ending(os.path.basename(path))
    m = _CHANNEL.search(stem)
    if m:
        return stem[:m.start()], int(m.group(1))
    return stem, None


def list_input_cases(list_of_files_or_folder: Union[str, Sequence[str]]
                     ) -> Tuple[List[Tuple[str, str]], Dict[str, str]]:
    """Sorted [(case, path)] plus {name: message} for entries that cannot be cases.

    A folder contributes its image files (``IMAGE_ENDINGS``); files of other channels (``_0001`` ...) are not
    cases (the model has one input channel) and are reported. Listed files are kept even if missing, so that
    the per-case check reports them.
    """
    problems: Dict[str, str] = {}
    if isinstance(list_of_files_or_folder, (str, os.PathLike)) and os.path.isdir(list_of_files_or_folder):
        folder = str(list_of_files_or_folder)
        paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                 if split_ending(f)[1] and os.path.isfile(os.path.join(folder, f))]
    elif isinstance(list_of_files_or_folder, (str, os.PathLike)):
        paths = [str(list_of_files_or_folder)]
    else:
        paths = [str(p) for p in list_of_files_or_folder]
    expanded = []
    for p in paths:
        if os.path.isdir(p):
            expanded += [os.path.join(p, f) for f in sorted(os.listdir(p))
                         if split_ending(f)[1] and os.path.isfile(os.path.join(p, f))]
        else:
            expanded.append(p)
    by_case: Dict[str, str] = {}
    for p in expanded:
        case, channel = case_name(p)
        if channel not in (None, 0):
            problems[os.path.basename(p)] = (f"{os.path.basename(p)}: channel {channel:04d} ignored, the model takes "
                                             f"one CT channel (_0000)")
            continue
        if case in by_case:
            problems[case] = f"{case}: two inputs map to this case ({by_case[case]} and {p}); rename one"
            continue
        by_case[case] = p
    return sorted(by_case.items()), problems


@dataclass
class CaseFiles:
    instances: str
    centroids: str
    record: str
    spine: str
    preview: str


def case_files(output_folder: str, case: str, input_path: str = "") -> CaseFiles:
    ending = ".nii" if input_path.endswith(".nii") else ".nii.gz"
    j = lambda name: os.path.join(output_folder, name)  # noqa: E731
    return CaseFiles(j(case + ending), j(f"{case}_ctd.json"), j(f"{case}_record.json"), j(f"{case}_spine.nii.gz"),
                     j(f"{case}_snp.png"))


@dataclass
class CaseOutputs:
    instances: sitk.Image
    centroids: dict
    record: dict
    spine: Optional[sitk.Image] = None
    preview_ct_kji: Optional[np.ndarray] = None
    preview_labels_kji: Optional[np.ndarray] = None
    preview_spacing_kji: Optional[Tuple[float, float, float]] = None


def _tmp_name(path: str) -> str:
    folder, name = os.path.split(path)
    stem, ending = split_ending(name)
    if not ending:
        stem, ending = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.tmp{os.getpid()}{ending}")


def write_case_outputs(files: CaseFiles, out: CaseOutputs) -> None:
    """Write all of a case's files, all or nothing (see the module docstring)."""
    staged: List[Tuple[str, str]] = []  # (tmp, final); the instance mask last
    try:
        tmp = _tmp_name(files.centroids)
        staged.append((tmp, files.centroids))
        write_centroids(tmp, list(orientation_of(out.instances)), out.centroids)
        tmp = _tmp_name(files.record)
        staged.append((tmp, files.record))
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out.record, f, indent=1)
        if out.spine is not None:
            tmp = _tmp_name(files.spine)
            staged.append((tmp, files.spine))
            sitk.WriteImage(out.spine, tmp, True)
        if out.preview_labels_kji is not None:
            from nnunet_vertkd.inference.preview import make_preview
            tmp = _tmp_name(files.preview)
            staged.append((tmp, files.preview))
            make_preview(out.preview_ct_kji, out.preview_labels_kji, out.preview_spacing_kji).save(tmp, format="PNG")
        tmp = _tmp_name(files.instances)
        staged.append((tmp, files.instances))
        sitk.WriteImage(out.instances, tmp, True)
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
