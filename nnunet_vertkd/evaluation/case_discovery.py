"""Which files vertkd_evaluate compares: reference and prediction cases found in folders (or single files),
paired by case id (``nnunet_vertkd.image_io.case_id``).

* Reference, VerSe format: ``*_seg-vert_msk`` / ``*_seg`` masks searched recursively, with the centroid file of
  the same case beside them (``*_seg-subreg_ctd.json``, ``*_seg-vert_ctd.json`` or ``*_ctd.json``).
* Reference, nnU-Net format: the image files of a labelsTr/labelsTs folder ({case}_ctd.json beside them, as the
  converter writes); the nnU-Net -> VerSe label mapping from ``dataset.json`` (``DATASET_JSON_KEY`` entry
  ``nnunet_to_verse``) beside or above the folder, else the package default.
* Predictions: vertkd_predict's outputs ({case}.nii.gz, {case}_ctd.json, {case}_record.json); its spine maps
  ({case}_spine.nii.gz) and hidden temporaries are skipped.
"""
import glob
import json
import os
from typing import Dict, Optional, Tuple

from nnunet_vertkd.command_line import InputError
from nnunet_vertkd.image_io import IMAGE_ENDINGS, case_id, is_image_file_name, split_ending
from nnunet_vertkd.labels import NNUNET_TO_VERSE
from nnunet_vertkd.model_contract import DATASET_JSON_KEY

VERSE_MASK_PATTERNS = ("*_seg-vert_msk.nii.gz", "*_seg-vert_msk.nii", "*_seg.nii.gz", "*_seg.nii")
VERSE_CENTROID_SUFFIXES = ("_seg-subreg_ctd.json", "_seg-vert_ctd.json", "_ctd.json")
#: vertkd_predict's centroid and record files beside a mask {case}.nii.gz
PREDICTION_CENTROID_SUFFIX = "_ctd.json"
PREDICTION_RECORD_SUFFIX = "_record.json"


class EvaluationInputError(InputError, ValueError):
    """Inputs that cannot be evaluated (the message names the case or file): ``vertkd_evaluate: error: …``,
    exit status 2."""


def prediction_label_kind(mask_path: str) -> Optional[str]:
    """'verse', 'sequential', ... from vertkd_predict's {case}_record.json beside the mask; None without one."""
    folder = os.path.dirname(mask_path)
    # vertkd_predict writes {case}.nii.gz and {case}_record.json ({case} may end in _ct, which case_id strips)
    for stem in (split_ending(os.path.basename(mask_path), IMAGE_ENDINGS + (".json",))[0], case_id(mask_path)):
        try:
            with open(os.path.join(folder, stem + PREDICTION_RECORD_SUFFIX), encoding="utf-8") as f:
                return json.load(f).get("labels")
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _verse_ctd_for(mask_path: str) -> Optional[str]:
    d = os.path.dirname(mask_path)
    c = case_id(mask_path)
    for suffix in VERSE_CENTROID_SUFFIXES:
        p = os.path.join(d, c + suffix)
        if os.path.isfile(p):
            return p
    return None


def _ctd_beside(mask_path: str, case: str) -> Optional[str]:
    ctd = os.path.join(os.path.dirname(mask_path), case + PREDICTION_CENTROID_SUFFIX)
    return ctd if os.path.isfile(ctd) else None


def _find_dataset_json(folder: str) -> Optional[str]:
    for d in (folder, os.path.dirname(os.path.abspath(folder))):
        p = os.path.join(d, "dataset.json")
        if os.path.isfile(p):
            return p
    return None


def nnunet_mapping(folder: str) -> Tuple[Dict[int, int], str]:
    """(nnU-Net -> VerSe label mapping, where it came from) for an nnU-Net label folder."""
    dj = _find_dataset_json(folder)
    if dj is None:
        return dict(NNUNET_TO_VERSE), "no dataset.json beside or above the labels: package default mapping"
    with open(dj, encoding="utf-8") as f:
        content = json.load(f)
    m = (content.get(DATASET_JSON_KEY) or {}).get("nnunet_to_verse")
    if not m:
        return dict(NNUNET_TO_VERSE), f"{dj} has no {DATASET_JSON_KEY}.nnunet_to_verse: package default mapping"
    return {int(k): int(v) for k, v in m.items()}, f"mapping from {dj}"


def _looks_verse(path: str) -> bool:
    if os.path.isfile(path):
        return os.path.basename(path).endswith(tuple(p[1:] for p in VERSE_MASK_PATTERNS))
    return any(glob.glob(os.path.join(path, "**", p), recursive=True) for p in VERSE_MASK_PATTERNS)


def _image_files(folder_or_file: str):
    if os.path.isfile(folder_or_file):
        return [folder_or_file]
    return sorted(os.path.join(folder_or_file, f) for f in os.listdir(folder_or_file)
                  if is_image_file_name(f) and not f.startswith("."))


def find_reference_cases(ref: str, ref_format: str = "auto"
                         ) -> Tuple[str, Dict[str, dict], Optional[Dict[int, int]], str]:
    """(format, {case: {'mask', 'ctd'}}, nnunet_to_verse mapping or None, note) for a REF file or folder."""
    if not os.path.exists(ref):
        raise EvaluationInputError(f"reference {ref} does not exist")
    fmt = ref_format
    if fmt == "auto":
        fmt = "verse" if _looks_verse(ref) else "nnunet"
    cases: Dict[str, dict] = {}
    if fmt == "verse":
        if os.path.isfile(ref):
            masks = [ref]
        else:
            masks = sorted({p for pat in VERSE_MASK_PATTERNS
                            for p in glob.glob(os.path.join(ref, "**", pat), recursive=True)})
        for m in masks:
            c = case_id(m)
            if c in cases:
                raise EvaluationInputError(f"case {c} appears twice in the reference: {cases[c]['mask']} and {m}")
            cases[c] = {"mask": m, "ctd": _verse_ctd_for(m)}
        return fmt, cases, None, "VerSe labels"
    if fmt == "nnunet":
        folder = os.path.dirname(os.path.abspath(ref)) if os.path.isfile(ref) else ref
        for m in _image_files(ref):
            c = case_id(m)
            cases[c] = {"mask": m, "ctd": _ctd_beside(m, c)}
        mapping, note = nnunet_mapping(folder)
        return fmt, cases, mapping, note
    raise EvaluationInputError(f"unknown reference format {ref_format!r} (verse, nnunet or auto)")


def find_prediction_cases(pred: str) -> Dict[str, dict]:
    """{case: {'mask', 'ctd'}} for a PRED file or folder of vertkd_predict outputs ({case}.nii.gz, {case}_ctd.json)."""
    if not os.path.exists(pred):
        raise EvaluationInputError(f"prediction {pred} does not exist")
    files = [m for m in _image_files(pred) if os.path.isfile(pred) or not _is_spine_map(m)]
    cases: Dict[str, dict] = {}
    for m in files:
        c = case_id(m)
        if c in cases:
            raise EvaluationInputError(f"case {c} has two predictions: {cases[c]['mask']} and {m}")
        cases[c] = {"mask": m, "ctd": _ctd_beside(m, c)}
    return cases


def _is_spine_map(path: str) -> bool:
    """vertkd_predict's {case}_spine.nii.gz (spine probability), not an instance mask."""
    return split_ending(os.path.basename(path))[0].split("_")[-1] == "spine"
