"""One synthetic scan: pick a field of view, spacing and orientation, render, crop, label, reorient.

Vertebrae cut by the upper or lower border of the field of view stay visible in the CT but are left
unlabelled (0), as in VerSe: a vertebra is labelled only when none of its voxels lies in the first or
last slice along the superior-inferior axis or beyond.
"""
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.centroids import centroids_from_mask
from nnunet_vertkd.labels import VERSE_LABEL_NAMES
from nnunet_vertkd.orientation import orientation_of

from . import bones
from .anatomy import FOV_KINDS, make_patient, fov_levels, fov_z_range
from .render import render
from .shapes import Grid

ORIENTATIONS = ("PIR", "RAS", "LPS", "LPI", "RAI", "ASL")
SPACING_KINDS = ("iso1", "thick3", "inplane08")
_THICK = 3  # sub-slices rendered per thick slice


@dataclass
class ScanSpec:
    fov: str                 # one of FOV_KINDS (or "upper"/"lower" for a patient scanned in two parts)
    orientation: str         # DICOM "points-to" letters of the voxel axes i, j, k
    spacing_kind: str        # iso1 | thick3 | inplane08
    acquisition: str         # "ax" (slices along superior-inferior) or "sag" (slices along left-right)
    noise_sd: float
    blur_mm: float

    @property
    def spacing_lps(self) -> Tuple[float, float, float]:
        """Spacing along world x (left-right), y (anterior-posterior), z (superior-inferior)."""
        if self.spacing_kind == "iso1":
            return 1.0, 1.0, 1.0
        if self.spacing_kind == "thick3":
            return (1.0, 1.0, 3.0) if self.acquisition == "ax" else (3.0, 1.0, 1.0)
        if self.spacing_kind == "inplane08":
            return (0.8, 0.8, 1.0) if self.acquisition == "ax" else (1.0, 0.8, 0.8)
        raise ValueError(f"unknown spacing kind {self.spacing_kind!r}; choose from {SPACING_KINDS}")


def sample_scan(rng: np.random.Generator, scale: float, fov: Optional[str] = None,
                orientation: Optional[str] = None, spacing: Optional[str] = None,
                acquisition: Optional[str] = None) -> ScanSpec:
    """Random scan parameters; anything given is kept. At small scale (< 0.75), drawn thick slices run
    left-right only (3 mm axial slices would swallow the scaled-down discs) and 0.8 mm in-plane is rarer."""
    fov = fov or str(rng.choice(FOV_KINDS))
    orientation = orientation or str(rng.choice(ORIENTATIONS, p=[0.35, 0.2, 0.2, 0.1, 0.1, 0.05]))
    drawn = rng.choice(SPACING_KINDS, p=[0.4, 0.35, 0.25] if scale >= 0.75 else [0.6, 0.25, 0.15])
    drawn_acq = str(rng.choice(["ax", "sag"]))
    if spacing is None:
        spacing = str(drawn)
        if scale < 0.75 and spacing == "thick3" and acquisition == "ax":
            spacing = "iso1"
    if scale < 0.75 and spacing == "thick3":
        drawn_acq = "sag"
    acquisition = acquisition or drawn_acq
    return ScanSpec(fov=fov, orientation=orientation, spacing_kind=spacing, acquisition=acquisition,
                    noise_sd=float(rng.uniform(8, 35)), blur_mm=float(rng.uniform(0.3, 0.7)))


def _vertebra_bbox(patient, indices):
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for i in indices:
        for prim in bones.vertebra(patient, i):
            a, b = prim.bbox()
            lo, hi = np.minimum(lo, a), np.maximum(hi, b)
    return lo, hi


def make_case_with_info(rng_seed, scale: float = 1.0, fov: Optional[str] = None,
                        orientation: Optional[str] = None, spacing: Optional[str] = None,
                        patient_seed=None, variant: Optional[str] = None, acquisition: Optional[str] = None):
    """(ct, mask, centroids, info) for one synthetic scan.

    ``rng_seed`` drives the scan (field of view, spacing, orientation, noise); ``patient_seed`` (default:
    ``rng_seed``) the anatomy, so two scans with the same patient seed show the same spine.
    ``variant``: None (random), "normal", "T13" or "L6"; ``acquisition``: None (random), "ax" or "sag"
    (the slice axis of thick-slice scans). Arrays are identical for identical arguments.
    """
    if patient_seed is None:
        patient_seed = rng_seed
    patient = make_patient(np.random.default_rng([_seed_int(patient_seed), 1]), scale=scale, variant=variant)
    rng = np.random.default_rng([_seed_int(rng_seed), 2])
    spec = sample_scan(rng, scale, fov, orientation, spacing, acquisition)
    first, last = fov_levels(patient, spec.fov, rng)
    z_bot, z_top = fov_z_range(patient, first, last, rng)

    n_vert = len(patient.levels) - 1
    lo, hi = _vertebra_bbox(patient, range(max(first - 1, 0), min(last + 2, n_vert)))
    s = scale
    x0 = lo[0] - rng.uniform(2, 25) * s - 2
    x1 = hi[0] + rng.uniform(2, 25) * s + 2
    y0 = lo[1] - rng.uniform(3, 35) * s - 2
    y1 = hi[1] + rng.uniform(3, 60) * s + 2

    sp = np.array(spec.spacing_lps)
    n = np.ceil(np.array([x1 - x0, y1 - y0, z_top - z_bot]) / sp).astype(int) + 1
    n[2] += 2  # one extra slice above and below, to see which vertebrae the borders cut
    origin = np.array([x0, y0, z_bot - sp[2]])
    thick_axis = int(np.argmax(sp)) if sp.max() >= 2.0 else None  # world axis x=0 / z=2
    fine_sp, fine_n, fine_origin = sp.copy(), n.copy(), origin.copy()
    if thick_axis is not None:
        fine_sp[thick_axis] = sp[thick_axis] / _THICK
        fine_n[thick_axis] = n[thick_axis] * _THICK
        fine_origin[thick_axis] = origin[thick_axis] - fine_sp[thick_axis]
    grid = Grid(fine_origin, fine_sp, fine_n[::-1])
    ct, owner = render(patient, grid, rng, spec.noise_sd, spec.blur_mm)
    if thick_axis is not None:
        ax = 2 - thick_axis  # array axis
        shp = list(ct.shape)
        shp[ax:ax + 1] = [n[thick_axis], _THICK]
        ct = ct.reshape(shp).mean(axis=ax + 1)
        owner = np.take(owner, np.arange(1, owner.shape[ax], _THICK), axis=ax)

    valid = np.zeros(256, dtype=bool)
    valid[list(VERSE_LABEL_NAMES)] = True
    mask = np.where(valid[owner], owner, 0).astype(np.uint8)
    border = np.unique(np.concatenate([mask[:2].ravel(), mask[-2:].ravel()]))
    partial = sorted(int(v) for v in border if v != 0)
    for lab in partial:
        mask[mask == lab] = 0
    ct, mask = ct[1:-1], mask[1:-1]
    origin[2] += sp[2]

    ct_img = sitk.GetImageFromArray(np.clip(np.rint(ct), -1024, 3071).astype(np.int16))
    ct_img.SetSpacing(tuple(float(v) for v in sp))
    ct_img.SetOrigin(tuple(float(v) for v in origin))
    ct_img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    mask_img = sitk.GetImageFromArray(mask)
    mask_img.CopyInformation(ct_img)
    ct_img = sitk.DICOMOrient(ct_img, spec.orientation)
    mask_img = sitk.DICOMOrient(mask_img, spec.orientation)
    mask_img.CopyInformation(ct_img)
    centroids = centroids_from_mask(sitk.GetArrayViewFromImage(mask_img))

    info = dict(asdict(spec), scale=scale, variant=patient.variant, orientation_written=orientation_of(ct_img), spacing=list(ct_img.GetSpacing()),
                size=list(ct_img.GetSize()), labels=sorted(centroids), partial_unlabelled=partial)
    return ct_img, mask_img, centroids, info


def make_case(rng_seed, scale: float = 1.0, **kwargs) -> Tuple[sitk.Image, sitk.Image, Dict[int, tuple]]:
    """(CT image int16 HU, vertebra mask uint8 with VerSe labels, centroids {label: (X, Y, Z) voxel indices}).

    Keyword arguments as :func:`make_case_with_info` (fov, orientation, spacing, patient_seed, variant).
    """
    ct, mask, ctd, _ = make_case_with_info(rng_seed, scale=scale, **kwargs)
    return ct, mask, ctd


def _seed_int(seed) -> int:
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    if isinstance(seed, (tuple, list)):
        return int(np.random.SeedSequence([int(v) for v in seed]).generate_state(1)[0])
    raise TypeError(f"seed must be an int or a sequence of ints, got {seed!r}")
