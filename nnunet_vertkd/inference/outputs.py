"""Input case lists and per-case output files (written atomically, all or nothing).

Per case ``{case}`` (the input's name without its image ending and without nnU-Net's ``_0000`` channel suffix,
``nnunet_vertkd.image_io.case_name``):

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
from nnunet_vertkd.image_checks import folder_is_writable as _writable  # module name patched in tests
from nnunet_vertkd.image_io import IMAGE_ENDINGS, case_name, split_ending
from nnunet_vertkd.orientation import orientation_of


def list_input_cases(list_of_files_or_folder: Union[str, Sequence[str]]
                     ) -> Tuple[List[Tuple[str, str]], Dict[str, str]]:
    """Sorted [(case, path)] plus {name: message} for entries that cannot be cases.

    A folder contributes its image files (``IMAGE_ENDINGS``); files of other channels (``_0001`` ...) are not
    cases (the model has one input channel) and are reported. Listed files are kept even if missing, so that
    the per-case check reports them. Two inputs with the same case name (``x.nii`` and ``x.nii.gz``) are both
    reported and neither is run. No image file at all raises ``NoInputError`` saying what was found (e.g. a
    DICOM series).
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
    if not expanded:
        raise NoInputError(describe_no_input(paths if paths else [str(list_of_files_or_folder)],
                                             list_of_files_or_folder))
    by_case: Dict[str, str] = {}
    clashes: Dict[str, List[str]] = {}
    for p in expanded:
        case, channel = case_name(p)
        if channel not in (None, 0):
            problems[os.path.basename(p)] = (f"{os.path.basename(p)}: channel {channel:04d} ignored, the model takes "
                                             f"one CT channel (_0000)")
            continue
        if case in by_case or case in clashes:  # x.nii and x.nii.gz, x.nii.gz and x_0000.nii.gz: neither is run
            clashes.setdefault(case, [by_case.pop(case)] if case in by_case else []).append(p)
            continue
        by_case[case] = p
    for case, clash in clashes.items():
        problems[case] = (f"{case}: {len(clash)} inputs map to this case ({', '.join(clash)}); none was segmented, "
                          f"rename all but one")
    return sorted(by_case.items()), problems


class RunSetupError(ValueError):
    """A problem that stops a whole run before any case (no usable input, output folder not writable)."""


class NoInputError(RunSetupError):
    """No image file among the inputs; the message says what was found instead."""


def _is_dicom(path: str) -> bool:
    if path.lower().endswith((".dcm", ".dicom", ".ima")):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def describe_no_input(paths: Sequence[str], given) -> str:
    """Message for inputs without any image file: what the folder(s) hold instead."""
    folders = [p for p in paths if os.path.isdir(p)] or ([str(given)] if isinstance(given, (str, os.PathLike))
                                                          and os.path.isdir(given) else [])
    if not folders:
        return f"no input image given ({', '.join(map(str, paths)) or 'nothing'})"
    n_dicom, others, subdirs = 0, [], []
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                subdirs.append(name)
            elif _is_dicom(path):
                n_dicom += 1
            else:
                others.append(name)
    where = ", ".join(folders)
    found = []
    if n_dicom:
        found.append(f"{n_dicom} DICOM file(s): DICOM series are not read; convert the series to NIfTI first "
                     f"(e.g. dcm2niix -z y -o OUT_FOLDER {folders[0]}) and give the .nii.gz file")
    if others:
        found.append(f"{len(others)} other file(s) ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})")
    if subdirs:
        found.append(f"{len(subdirs)} subfolder(s) ({', '.join(subdirs[:3])}{', ...' if len(subdirs) > 3 else ''}; "
                     f"folders are not searched recursively)")
    what = "; ".join(found) if found else "the folder is empty"
    return f"no CT image ({', '.join(IMAGE_ENDINGS)}) in {where}: {what}"


class OutputFolderError(RunSetupError):
    """The output folder cannot be created or written."""


def check_output_folder(folder: str) -> None:
    """Raise OutputFolderError unless ``folder`` is (or can be created as) a writable folder. Creates nothing."""
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputFolderError(f"output {folder} is a file, not a folder; give a folder with -o")
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputFolderError(f"cannot create the output folder {folder}: {existing} is a file")
    if not _writable(existing):
        what = "write to the output folder" if existing == folder else f"create the output folder {folder} in"
        raise OutputFolderError(f"cannot {what} {existing}: permission denied (read-only?)")


_TMP = re.compile(r"^\..+\.tmp(\d+)(\.[A-Za-z0-9.]+)?$")


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove hidden temporaries (``.{name}.tmp{pid}{ending}``) left by killed runs whose process is gone."""
    removed = []
    for name in os.listdir(folder):
        m = _TMP.match(name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass
    return sorted(removed)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def prepare_output_folder(folder: str) -> List[str]:
    """Check, create and tidy the output folder before any work; returns the stale temporaries removed."""
    check_output_folder(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(f"cannot create the output folder {folder}: {e.strerror or e}") from None
    if not _writable(folder):
        raise OutputFolderError(f"cannot write to the output folder {folder}: permission denied (read-only?)")
    return remove_stale_temporaries(folder)


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
