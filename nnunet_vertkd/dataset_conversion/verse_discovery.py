"""Find VerSe cases (CT, vertebra mask, centroid JSON) under one or more folders, at any nesting depth.

Recognised names (``.nii.gz`` or ``.nii``):

* BIDS naming (VerSe'19 / VerSe'20 releases), optional entities such as ``dir-ax`` or ``split-verse201``::

      sub-verse500_dir-ax_ct.nii.gz                 CT
      sub-verse500_dir-ax_seg-vert_msk.nii.gz       vertebra mask
      sub-verse500_dir-ax_seg-subreg_ctd.json       centroids (``_seg-vert_ctd.json`` is accepted too)

* older challenge naming::

      verse004.nii.gz   verse004_seg.nii.gz   verse004_ctd.json

The case identifier is the full stem (BIDS name without ``_ct``, e.g. ``sub-verse500_dir-ax``, or ``verse004``);
CT and mask are paired by that stem, never by subject alone. The patient is the BIDS subject label
(``sub-verse401_split-verse201`` -> ``verse401``; old naming ``verse004`` -> ``verse004``, so the same
patient in both namings is grouped together).

The official split is the nearest enclosing folder (the root's own name included) named like a VerSe split
folder: ``01_training``, ``dataset-01training``, ``dataset-verse19training``, ``training``, ``02_validation``,
``dataset-02validation``, ``03_test``, ``dataset-verse19test``, ... Files outside any split folder count as
training (with a note in the report).
"""
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

TRAIN, VALIDATION, TEST = "training", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)

_NII = r"\.nii(?:\.gz)?"
_BIDS_STEM = r"(sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*?)"
_OLD_STEM = r"(verse[A-Za-z0-9-]*)"
_PATTERNS: List[Tuple[str, "re.Pattern[str]"]] = [
    ("ct", re.compile(rf"^{_BIDS_STEM}_ct{_NII}$")),
    ("mask", re.compile(rf"^{_BIDS_STEM}_seg-vert_msk{_NII}$")),
    ("ctd", re.compile(rf"^{_BIDS_STEM}_seg-(?:subreg|vert)_ctd\.json$")),
    ("ct", re.compile(rf"^{_OLD_STEM}{_NII}$")),
    ("mask", re.compile(rf"^{_OLD_STEM}_seg{_NII}$")),
    ("ctd", re.compile(rf"^{_OLD_STEM}_ctd\.json$")),
]
_SPLIT_FOLDER = re.compile(
    r"^(?:\d+[_-]?)?(?:dataset[_-]?)?(?:verse\d*[_-]?)?(?:\d+[_-]?)?"
    r"(training|train|validation|val|test|testing)$", re.IGNORECASE)
_SPLIT_WORD = {"training": TRAIN, "train": TRAIN, "validation": VALIDATION, "val": VALIDATION,
               "test": TEST, "testing": TEST}
# file names that look like VerSe data but are not used (no note for these)
_KNOWN_UNUSED = re.compile(r"(_seg-subreg_msk" + _NII + r"|_snp\.png|\.png)$")


def classify_name(name: str) -> Optional[Tuple[str, str]]:
    """(kind, stem) for a VerSe file name, kind in 'ct', 'mask', 'ctd'; None if not a VerSe file."""
    for kind, pattern in _PATTERNS:
        m = pattern.match(name)
        if m:
            return kind, m.group(1)
    return None


def patient_of(stem: str) -> str:
    """Patient (subject) identifier of a case stem: 'sub-verse401_split-verse201' -> 'verse401'."""
    if stem.startswith("sub-"):
        return stem[4:].split("_")[0]
    return stem


def split_of_folder(name: str) -> Optional[str]:
    """'training' / 'validation' / 'test' for a VerSe split folder name, else None."""
    m = _SPLIT_FOLDER.match(name)
    return _SPLIT_WORD[m.group(1).lower()] if m else None


def split_of_path(path: str, root: str) -> Optional[str]:
    """Split given by the nearest enclosing split folder between the file and the root (root name included)."""
    rel = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(root))
    parts = [os.path.basename(os.path.abspath(root))] + ([] if rel == "." else rel.split(os.sep))
    for part in reversed(parts):
        split = split_of_folder(part)
        if split:
            return split
    return None


@dataclass
class FoundFile:
    path: str
    root: str
    root_index: int
    kind: str
    stem: str
    split: Optional[str]


@dataclass
class CaseSource:
    """One scan to convert: CT, mask and optional centroid JSON of one stem."""
    case_id: str
    patient: str
    split: str
    ct: str
    mask: str
    ctd: Optional[str] = None
    notes: List[str] = field(default_factory=list)


@dataclass
class Skipped:
    case_id: str
    reason: str
    files: List[str] = field(default_factory=list)


@dataclass
class Discovery:
    cases: List[CaseSource]
    skipped: List[Skipped]
    notes: List[str]


def _find_files(roots: Sequence[str]) -> Tuple[List[FoundFile], List[str]]:
    found: List[FoundFile] = []
    notes: List[str] = []
    seen_files, seen_dirs = set(), set()
    for root_index, root in enumerate(roots):
        root = os.path.abspath(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real_dir = os.path.realpath(dirpath)
            if real_dir in seen_dirs:  # a root inside another root, or a symlink loop: each folder once
                dirnames[:] = []
                continue
            seen_dirs.add(real_dir)
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.realpath(path) in seen_files:
                    continue
                seen_files.add(os.path.realpath(path))
                kind_stem = classify_name(name)
                if kind_stem is None:
                    if re.search(_NII + "$", name) and not _KNOWN_UNUSED.search(name):
                        notes.append(f"{path}: ignored, not a VerSe CT/mask file name")
                    continue
                kind, stem = kind_stem
                found.append(FoundFile(path, root, root_index, kind, stem, split_of_path(path, root)))
    return found, notes


def discover(roots: Sequence[str]) -> Discovery:
    """Find and pair all VerSe cases under ``roots`` (earlier roots win for stems found more than once)."""
    missing = [r for r in roots if not os.path.isdir(r)]
    if missing:
        raise FileNotFoundError(f"input folder(s) not found: {', '.join(missing)}")
    found, notes = _find_files(roots)
    by_stem: Dict[str, Dict[str, List[FoundFile]]] = {}
    for f in found:
        by_stem.setdefault(f.stem, {"ct": [], "mask": [], "ctd": []})[f.kind].append(f)

    cases: List[CaseSource] = []
    skipped: List[Skipped] = []
    for stem in sorted(by_stem):
        files = by_stem[stem]
        for kind in files:
            files[kind].sort(key=lambda f: (f.root_index, f.path))
        cts, masks, ctds = files["ct"], files["mask"], files["ctd"]
        if not cts:
            skipped.append(Skipped(stem, "mask without CT: no CT image found for this mask"
                                   if masks else "centroid JSON without CT and mask",
                                   [f.path for f in masks + ctds]))
            continue
        if not masks:
            skipped.append(Skipped(stem, "CT without mask: no vertebra mask found for this CT",
                                   [f.path for f in cts + ctds]))
            continue
        ct = cts[0]
        # prefer the mask (and centroids) from the CT's root, then from the earliest root
        mask = next((m for m in masks if m.root_index == ct.root_index), masks[0])
        ctd = next((c for c in ctds if c.root_index == mask.root_index), ctds[0] if ctds else None)
        case_notes: List[str] = []
        for kind, chosen, candidates in (("CT", ct, cts), ("mask", mask, masks), ("centroids", ctd, ctds)):
            for other in candidates:
                if other is not chosen:
                    case_notes.append(f"duplicate {kind} {other.path} ignored (converted once, from {chosen.path})")
        split = ct.split
        if split is None:
            split = TRAIN
            case_notes.append(f"{ct.path}: not inside a split folder (01_training, 02_validation, 03_test, ...); "
                              "treated as training")
        if mask.split is not None and mask.split != split:
            case_notes.append(f"mask {mask.path} lies in a '{mask.split}' folder but the CT in a '{split}' folder; "
                              f"using '{split}'")
        cases.append(CaseSource(stem, patient_of(stem), split, ct.path, mask.path,
                                ctd.path if ctd else None, case_notes))
    return Discovery(cases, skipped, notes)
