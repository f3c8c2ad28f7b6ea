"""Convert one VerSe case (CT + vertebra mask + optional centroid JSON) into the two nnU-Net raw datasets.

Steps: read and validate; reorient to LPI (``nnunet_vertkd.orientation.to_canonical``); resample to the target
spacing on a grid that keeps the scan's physical extent (CT linear, mask nearest neighbour); round float
masks and cast them to integers; remap VerSe labels to the consecutive cranio-caudal nnU-Net labels
(``nnunet_vertkd.labels.VERSE_TO_NNUNET``); carry the centroids into the written label grid; and write the
coarse spine-dataset image (CT at ``SPINE_SPACING_MM``) with the union of vertebrae as its label.

Unknown label values: 26 (sacrum) and 27 (coccyx) are not vertebrae of the method and are dropped with a
warning; any other value that is not a VerSe vertebra label (e.g. 99, negative values) means the file is not
a VerSe vertebra mask (a sub-region mask, a wrong file), so the case is skipped with a clear reason.

Every output file is first written under a temporary name in the dataset's staging folder and moved into
place with ``os.replace`` only after all files of the case were written, so an interrupted conversion never
leaves a half-written case in imagesTr/labelsTr.
"""
import os
import signal
import uuid
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import (CentroidFileError, centroids_from_mask, read_centroids,
                                     transform_centroids, write_centroids)
from nnunet_vertkd.image_checks import geometry_problems
from nnunet_vertkd.image_io import ImageReadError, scalar_3d_problem
from nnunet_vertkd.image_io import read_image as read_checked_image
from nnunet_vertkd.labels import DROPPED_VERSE_LABELS, NNUNET_TO_VERSE, VERSE_TO_NNUNET, classify_verse_labels
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, orientation_of, to_canonical

from .verse_discovery import TEST, CaseSource

#: isotropic spacing (mm) of the spine-location dataset.
SPINE_SPACING_MM = 4.0
STAGING_FOLDER = ".vertkd_staging"

_SPACING_RTOL = 1e-3
_ORIGIN_ATOL_MM = 1e-2
_DIRECTION_ATOL = 1e-3


class CaseError(Exception):
    """A case that cannot be converted; the message names the file and the problem."""


@dataclass
class CaseJob:
    source: CaseSource
    vertebra_dir: str
    spine_dir: str
    spacing_mm: float = 1.0
    spine_spacing_mm: float = SPINE_SPACING_MM


@dataclass
class CaseResult:
    case_id: str
    patient: str
    split: str
    converted: bool
    reason: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    inputs: Dict[str, Optional[str]] = field(default_factory=dict)
    verse_labels: List[int] = field(default_factory=list)
    centroids_source: Optional[str] = None
    shape_kji: Optional[List[int]] = None
    write_error: Optional[str] = None

    def to_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- reading
def read_image(path: str, what: str, warnings: Optional[List[str]] = None) -> sitk.Image:
    """Read a 3D image (``nnunet_vertkd.image_io.read_image``); unreadable, truncated or non-3D files and
    impossible geometry (see ``nnunet_vertkd.image_checks``: zero/negative/absurd spacing, singular direction, a
    single slice) raise CaseError naming the file. Accepted oddities (no qform/sform) are appended to
    ``warnings``."""
    try:
        image, header_warnings = read_checked_image(path)
    except ImageReadError as e:
        raise CaseError(f"{what}: {e}") from None
    not_3d = scalar_3d_problem(image)
    problems = [not_3d] if not_3d else geometry_problems(image.GetSize(), image.GetSpacing(), image.GetDirection())
    if problems:
        raise CaseError(f"{path}: {what}: " + "; ".join(problems))
    if warnings is not None:
        warnings.extend(f"{path}: {w}" for w in header_warnings)
    return image


def check_same_geometry(ct: sitk.Image, mask: sitk.Image, ct_path: str, mask_path: str) -> None:
    problems = []
    if ct.GetSize() != mask.GetSize():
        problems.append(f"shape {ct.GetSize()} vs {mask.GetSize()}")
    if not np.allclose(ct.GetSpacing(), mask.GetSpacing(), rtol=_SPACING_RTOL, atol=0):
        problems.append(f"spacing {_fmt(ct.GetSpacing())} vs {_fmt(mask.GetSpacing())}")
    if not np.allclose(ct.GetOrigin(), mask.GetOrigin(), rtol=0, atol=_ORIGIN_ATOL_MM):
        problems.append(f"origin {_fmt(ct.GetOrigin())} vs {_fmt(mask.GetOrigin())}")
    if not np.allclose(ct.GetDirection(), mask.GetDirection(), rtol=0, atol=_DIRECTION_ATOL):
        problems.append(f"orientation {orientation_of(ct)} vs {orientation_of(mask)} (direction cosines differ)")
    if problems:
        raise CaseError(f"CT {ct_path} and mask {mask_path} differ in geometry: " + "; ".join(problems))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# --------------------------------------------------------------------------------------------- labels
def mask_to_nnunet_labels(mask_kji: np.ndarray, mask_path: str, warnings: List[str]) -> np.ndarray:
    """Round a (possibly float) VerSe mask, drop 26/27, check labels and remap to consecutive nnU-Net labels.

    Returns a uint8 array of nnU-Net labels. Raises CaseError for unknown labels or an empty mask.
    """
    if not np.all(np.isfinite(mask_kji)):
        raise CaseError(f"{mask_path}: mask contains NaN or infinite values")
    if mask_kji.dtype.kind == "f":
        rounded = np.rint(mask_kji)
        off = float(np.max(np.abs(mask_kji - rounded))) if mask_kji.size else 0.0
        if off > 1e-3:
            warnings.append(f"{mask_path}: float mask has non-integer values (up to {off:.3g} away); rounded")
        mask_kji = rounded
    kept, dropped, unknown = classify_verse_labels(np.unique(mask_kji).astype(np.int64))
    if unknown:
        raise CaseError(
            f"{mask_path}: unknown label values {unknown} (VerSe vertebra labels are 1-25 and 28; "
            f"26/27 are dropped): not a VerSe vertebra mask?")
    if dropped:
        warnings.append(f"{mask_path}: labels {dropped} (26 sacrum, 27 coccyx) are not vertebrae; set to background")
    lut = np.zeros(max(max(VERSE_TO_NNUNET), max(DROPPED_VERSE_LABELS)) + 1, dtype=np.uint8)
    for verse_label, nnunet_label in VERSE_TO_NNUNET.items():
        lut[verse_label] = nnunet_label
    if not kept:
        raise CaseError(f"{mask_path}: empty mask (no vertebra labels)")
    return lut[mask_kji.astype(np.uint8)]  # all values are in 0..28 here


# ------------------------------------------------------------------------------------------ resampling
def target_grid(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Empty reference image covering the same physical extent as ``image`` with isotropic ``spacing_mm``.

    The outer voxel corners are kept: size = round(extent / spacing), first voxel centre half a new voxel
    inside the old first corner (same convention as a plain array resize).
    """
    old_spacing = np.array(image.GetSpacing(), dtype=float)
    old_size = np.array(image.GetSize(), dtype=float)
    new_spacing = np.full(3, float(spacing_mm))
    new_size = [max(1, int(round(s))) for s in old_size * old_spacing / new_spacing]
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.array(image.GetOrigin(), dtype=float) + direction @ ((new_spacing - old_spacing) / 2.0)
    ref = sitk.Image(new_size, sitk.sitkUInt8)
    ref.SetSpacing(tuple(new_spacing))
    ref.SetOrigin(tuple(origin))
    ref.SetDirection(image.GetDirection())
    return ref


def resample(image: sitk.Image, ref: sitk.Image, interpolator, default_value: float, pixel_type) -> sitk.Image:
    return sitk.Resample(image, ref, sitk.Transform(), interpolator, float(default_value), pixel_type)


def _ct_output(resampled: sitk.Image, integer_ct: bool) -> sitk.Image:
    """Store resampled CT as int16 (rounded) when the source was integer, else float32."""
    if not integer_ct:
        return sitk.Cast(resampled, sitk.sitkFloat32)
    arr = np.rint(sitk.GetArrayViewFromImage(resampled))
    out = sitk.GetImageFromArray(np.clip(arr, -32768, 32767).astype(np.int16))
    out.CopyInformation(resampled)
    return out


def _smooth_for_downsampling(ct: sitk.Image, target_mm: float) -> sitk.Image:
    sigmas = [max(0.0, (target_mm - s) / 2.0) for s in ct.GetSpacing()]
    if max(sigmas) <= 0 or min(ct.GetSize()) < 4:
        return ct
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(ct, sitk.sitkFloat32), [max(s, 1e-3) for s in sigmas])


# ------------------------------------------------------------------------------------------- centroids
def carry_centroids(ctd_path: Optional[str], source_mask: sitk.Image, out_mask: sitk.Image,
                    out_mask_kji: np.ndarray, warnings: List[str]) -> Tuple[Dict[int, Tuple[float, float, float]], str]:
    """Centroids (VerSe labels, voxel coordinates of the written label grid) and where they came from.

    From the JSON when given: its ``direction`` names the voxel grid of its coordinates (the source mask
    reoriented to that direction; without a direction entry the source mask's own grid). Only labels present
    in the written mask are kept; labels of the mask missing in the JSON are computed from the mask.
    Without a JSON (or an unreadable one) every centroid is the centre of mass in the written mask.
    """
    present = {NNUNET_TO_VERSE[int(v)] for v in np.unique(out_mask_kji) if v != 0}
    from_mask = {NNUNET_TO_VERSE[lab]: c for lab, c in centroids_from_mask(out_mask_kji).items()}
    if ctd_path is None:
        return from_mask, "mask"
    try:
        direction, json_centroids = read_centroids(ctd_path)
        grid = source_mask
        if direction is not None:
            orient = "".join(direction).upper()
            if not _valid_orientation(orient):
                raise CentroidFileError(f"{ctd_path}: direction {direction} is not a valid orientation")
            grid = sitk.DICOMOrient(source_mask, orient)
    except CentroidFileError as e:
        warnings.append(f"{e}; centroids computed from the mask instead")
        return from_mask, "mask"
    carried = transform_centroids({lab: c for lab, c in json_centroids.items() if lab in present}, grid, out_mask)
    not_in_mask = sorted(set(json_centroids) - present)
    if not_in_mask:
        warnings.append(f"{ctd_path}: centroids of labels {not_in_mask} not in the written mask; not carried")
    missing = sorted(present - set(carried))
    if missing:
        warnings.append(f"{ctd_path}: no centroid for labels {missing}; computed from the mask")
        for lab in missing:
            carried[lab] = from_mask[lab]
    return carried, "json" if not missing else "json+mask"


def _valid_orientation(orient: str) -> bool:
    axes = sorted({"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}.get(c, -1) for c in orient)
    return len(orient) == 3 and axes == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- writing
def output_paths(case_id: str, split: str, dataset_dir: str) -> Tuple[str, str]:
    images, labels = ("imagesTs", "labelsTs") if split == TEST else ("imagesTr", "labelsTr")
    return (os.path.join(dataset_dir, images, f"{case_id}_0000.nii.gz"),
            os.path.join(dataset_dir, labels, f"{case_id}.nii.gz"))


class CaseWriteError(Exception):
    """Writing a case's outputs failed (read-only folder, disk full): an environment problem that stops the
    conversion; the case's previous files are left as they were."""


JOURNAL_SUFFIX = ".commit.json"


class _Stager:
    """Writes files under temporary names, then moves all of them into place as one unit.

    ``commit`` first writes a journal (``STAGING_FOLDER/<id>.commit.json``: temporary, final and backup name
    of every file), moves the previous versions of the case's files aside into the staging folder, moves the
    new files into place and deletes the journal (the commit point). SIGINT/SIGTERM are held back meanwhile.
    If a move fails, the previous files are put back (``CaseWriteError``); if the process is killed (SIGKILL)
    in between, ``recover_interrupted_commits`` (run by the next conversion before anything else) puts them
    back. So a case's files are all old or all new, never mixed.
    """

    def __init__(self, staging_dir: str):
        self.staging_dir = staging_dir
        os.makedirs(staging_dir, exist_ok=True)
        self.pending: List[Tuple[str, str]] = []

    def _tmp(self, final: str) -> str:
        return os.path.join(self.staging_dir, f"{uuid.uuid4().hex}_{os.path.basename(final)}")

    def _write(self, final: str, write) -> None:
        tmp = self._tmp(final)
        self.pending.append((tmp, final))
        try:
            write(tmp)
        except (OSError, RuntimeError) as e:  # RuntimeError: SimpleITK's writer
            lines = str(e).strip().splitlines()
            detail = getattr(e, "strerror", None) or (lines[-1] if lines else type(e).__name__)
            raise CaseWriteError(f"cannot write {final} (staged in {self.staging_dir}): {detail[:200]}") from None

    def image(self, image: sitk.Image, final: str) -> None:
        self._write(final, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))

    def centroids(self, direction, centroids, final: str) -> None:
        self._write(final, lambda tmp: write_centroids(tmp, direction, centroids))

    def commit(self) -> List[str]:
        from .splits import write_json_atomic
        token = uuid.uuid4().hex
        entries = [{"tmp": tmp, "final": final, "backup": os.path.join(self.staging_dir, f"{token}_old_{i}"),
                    "had_old": os.path.exists(final)} for i, (tmp, final) in enumerate(self.pending)]
        journal = os.path.join(self.staging_dir, token + JOURNAL_SUFFIX)
        masking = hasattr(signal, "pthread_sigmask")
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if masking else None
        try:
            try:
                write_json_atomic(journal, entries)
                for e in entries:
                    os.makedirs(os.path.dirname(e["final"]), exist_ok=True)
                    if e["had_old"]:
                        os.replace(e["final"], e["backup"])
                for e in entries:
                    os.replace(e["tmp"], e["final"])
            except OSError as err:
                try:
                    _roll_back(entries)
                    if os.path.exists(journal):
                        os.remove(journal)
                except OSError:
                    pass  # the journal stays: recover_interrupted_commits finishes the roll-back
                raise CaseWriteError(f"cannot move the new files of this case into place "
                                     f"({err.strerror or err}: {err.filename}); its previous files were "
                                     f"kept") from None
            os.remove(journal)  # the commit point
            for e in entries:
                if e["had_old"] and os.path.exists(e["backup"]):
                    os.remove(e["backup"])
        finally:
            if masking:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        done = [final for _, final in self.pending]
        self.pending = []
        return done

    def abort(self) -> None:
        for tmp, _ in self.pending:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.pending = []


def _roll_back(entries: List[dict]) -> None:
    """Undo a partial commit: previous versions back in place, new files of cases that had none removed."""
    for e in entries:
        if os.path.exists(e["backup"]):
            os.replace(e["backup"], e["final"])
        elif not e["had_old"] and not os.path.exists(e["tmp"]) and os.path.exists(e["final"]):
            os.remove(e["final"])


def recover_interrupted_commits(staging_dir: str) -> List[str]:
    """Roll back commits that a killed process left half done (journals in ``staging_dir``); returns the
    finals that were restored or removed. Call before deleting the staging folder."""
    import json
    touched: List[str] = []
    if not os.path.isdir(staging_dir):
        return touched
    for name in sorted(os.listdir(staging_dir)):
        if not name.endswith(JOURNAL_SUFFIX):
            continue
        try:
            with open(os.path.join(staging_dir, name), encoding="utf-8") as f:
                entries = json.load(f)
        except (OSError, ValueError):
            continue  # the journal itself was not complete: nothing was moved yet
        _roll_back(entries)
        touched += [e["final"] for e in entries]
    return touched


# ---------------------------------------------------------------------------------------------- the case
def convert_case(job: CaseJob) -> CaseResult:
    """Convert one case; never raises for bad input (the result says why the case was skipped). A failed
    write sets ``result.write_error`` (the caller stops the conversion)."""
    src = job.source
    result = CaseResult(src.case_id, src.patient, src.split, converted=False, warnings=list(src.notes),
                        inputs={"ct": src.ct, "mask": src.mask, "centroids": src.ctd})
    stager = _Stager(os.path.join(job.vertebra_dir, STAGING_FOLDER))
    try:
        _convert(job, result, stager)
        result.files = stager.commit()
        result.converted = True
    except CaseWriteError as e:
        result.reason = result.write_error = f"{src.case_id}: {e}"
    except CaseError as e:
        result.reason = str(e)
    except Exception as e:  # a bug or an unexpected file problem: report it, keep converting the rest
        result.reason = f"unexpected error converting {src.ct} / {src.mask}: {type(e).__name__}: {e}"
    finally:
        stager.abort()
    return result


def _convert(job: CaseJob, result: CaseResult, stager: _Stager) -> None:
    src = job.source
    ct = read_image(src.ct, "CT", result.warnings)
    mask = read_image(src.mask, "mask", result.warnings)
    check_same_geometry(ct, mask, src.ct, src.mask)
    integer_ct = ct.GetPixelID() in (sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16,
                                     sitk.sitkInt32, sitk.sitkUInt32, sitk.sitkInt64, sitk.sitkUInt64)

    labels_kji = mask_to_nnunet_labels(sitk.GetArrayFromImage(mask), src.mask, result.warnings)
    label_image = sitk.GetImageFromArray(labels_kji)
    label_image.CopyInformation(mask)

    ct_lpi = to_canonical(ct, CANONICAL_ORIENTATION)
    labels_lpi = to_canonical(label_image, CANONICAL_ORIENTATION)
    # the mask is put on the CT's grid (they agree within tolerance), so both outputs share one geometry
    labels_lpi.CopyInformation(ct_lpi)
    ct_min = float(np.min(sitk.GetArrayViewFromImage(ct_lpi)))

    # vertebra dataset
    ref = target_grid(ct_lpi, job.spacing_mm)
    out_ct = _ct_output(resample(ct_lpi, ref, sitk.sitkLinear, ct_min, sitk.sitkFloat32), integer_ct)
    out_labels = resample(labels_lpi, ref, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out_labels_kji = sitk.GetArrayFromImage(out_labels)
    before = {NNUNET_TO_VERSE[int(v)] for v in np.unique(labels_kji) if v != 0}
    after = {NNUNET_TO_VERSE[int(v)] for v in np.unique(out_labels_kji) if v != 0}
    if not after:
        raise CaseError(f"{src.mask}: no vertebra voxel left after resampling to {job.spacing_mm} mm")
    if before - after:
        result.warnings.append(f"{src.mask}: labels {sorted(before - after)} vanished when resampling to "
                               f"{job.spacing_mm} mm (too small)")
    centroids, result.centroids_source = carry_centroids(
        src.ctd, _source_grid(mask, ct), out_labels, out_labels_kji, result.warnings)

    # spine dataset: coarse CT, union of vertebrae (linear interpolation of the binary mask, threshold 0.5)
    spine_ref = target_grid(ct_lpi, job.spine_spacing_mm)
    spine_ct = _ct_output(resample(_smooth_for_downsampling(ct_lpi, job.spine_spacing_mm), spine_ref,
                                   sitk.sitkLinear, ct_min, sitk.sitkFloat32), integer_ct)
    union = sitk.Cast(labels_lpi > 0, sitk.sitkFloat32)
    spine_label = sitk.Cast(resample(union, spine_ref, sitk.sitkLinear, 0, sitk.sitkFloat32) >= 0.5, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(spine_label)):
        result.warnings.append(f"{src.mask}: the spine label is empty at {job.spine_spacing_mm} mm (vertebrae too small)")

    img_path, lab_path = output_paths(src.case_id, src.split, job.vertebra_dir)
    spine_img_path, spine_lab_path = output_paths(src.case_id, src.split, job.spine_dir)
    stager.image(out_ct, img_path)
    stager.image(out_labels, lab_path)
    stager.centroids(list(CANONICAL_ORIENTATION), centroids, lab_path[:-len(".nii.gz")] + "_ctd.json")
    stager.image(spine_ct, spine_img_path)
    stager.image(spine_label, spine_lab_path)
    result.verse_labels = sorted(after, key=lambda v: VERSE_TO_NNUNET[v])
    result.shape_kji = list(out_labels_kji.shape)


def _source_grid(mask: sitk.Image, ct: sitk.Image) -> sitk.Image:
    """The source voxel grid that centroid coordinates refer to (mask geometry, pixel data irrelevant)."""
    grid = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(ct)  # outputs live on the CT grid; mask and CT agree within tolerance
    return grid
