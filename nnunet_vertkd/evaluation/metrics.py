"""Per-vertebra segmentation metrics and VerSe labelling metrics, as pure NumPy/SciPy functions.

Conventions (valid for every function in this module):

* Arrays are NumPy arrays indexed ``[k, j, i]``, i.e. exactly as ``SimpleITK.GetArrayFromImage`` returns
  them. ``spacing_mm`` is given **in the same array axis order** ``(s_k, s_j, s_i)`` — that is
  ``tuple(reversed(image.GetSpacing()))`` for a SimpleITK image. A scalar spacing means isotropic.
* Centroids follow the VerSe/``nnunet_vertkd.centroids`` convention: ``{label: (X, Y, Z)}`` with X, Y, Z
  voxel indices along i, j, k of the *same* grid as the masks. Distances in millimetres are computed as
  ``sqrt(((X-X')*s_i)^2 + ((Y-Y')*s_j)^2 + ((Z-Z')*s_k)^2)`` (the direction matrix is orthonormal, so the
  voxel-grid distance with spacing is the physical distance).
* Surfaces are the mask voxels that have at least one 6-connected background neighbour (voxels outside the
  array count as background). Surface distances are Euclidean distances between surface voxel centres,
  computed with ``scipy.ndimage.distance_transform_edt(..., sampling=spacing_mm)`` on the bounding box of
  both masks plus a one-voxel margin (exact: the distance transform is not path constrained, and every
  surface voxel lies inside that box).

Empty masks:

* ``dice``: both empty -> ``nan`` (undefined, same convention as nnU-Net's evaluation); one empty -> 0.0.
* ``hausdorff_distance_mm`` and ``assd_mm``: both empty -> ``nan``; exactly one empty -> ``inf``.
  ``evaluate_case`` never calls them with an empty mask: a reference vertebra without a matched prediction is
  reported as *missing* with ``hd_mm``/ASSD ``None`` (excluded from those averages) and Dice 0.

Instance matching: a one-to-one assignment maximising the summed Dice between reference and predicted
instances (``scipy.optimize.linear_sum_assignment`` on the Dice matrix built from a joint histogram);
pairs with zero overlap are never matches. panoptica (PyPI) was considered: installing it would pull
pandas, plotly, rich, typer and *downgrade NumPy* in the shared environment, for a matching that is a few
lines of SciPy here, so it is not used.

VerSe labelling metrics (Sekuboyina et al. 2021, the VerSe benchmark):

* A reference vertebra ``v`` (true centroid ``x_v``) is *localised* when it has a matched prediction whose
  centroid ``x̂`` is the closest of **all** predicted centroids to ``x_v`` and ``||x̂ - x_v|| < 20 mm``
  (``ID_RADIUS_MM``). ``localisation_rate`` = localised / annotated (all reference vertebrae of the scan,
  missing ones included).
* VerSe's *identification* rate is the same test where the match is made by the **label** (the prediction
  names the vertebra: predicted L1 against true L1). Only then does it measure identification: with
  sequential labels 1, 2, 3 … matched to the reference by overlap (the paper's method), the criterion says the
  vertebra was found and placed, not named. So ``identified`` / ``id_rate`` are reported only for
  ``match="label"`` and are ``None`` for ``match="overlap"``; ``localised`` / ``localisation_rate`` always.
* ``d_mean_mm`` = mean of ``||x̂ - x_v||`` over the matched reference vertebrae (missing ones excluded, as in
  the VerSe'20 convention; ``None`` when no vertebra is matched).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from nnunet_vertkd.centroids import centroids_from_mask
from nnunet_vertkd.labels import region_of_nnunet_label, region_of_verse_label

#: a vertebra whose Dice is below this value counts as a failure (Serrador et al. 2024: "Dice < 50 %").
FAILURE_DICE = 0.5
#: identification radius in millimetres (VerSe: predicted centroid within 20 mm of the true one).
ID_RADIUS_MM = 20.0

Spacing = Union[float, Sequence[float]]
Centroids = Dict[int, Tuple[float, float, float]]

_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)


def _spacing3(spacing_mm: Spacing, ndim: int) -> Tuple[float, ...]:
    if np.isscalar(spacing_mm):
        return (float(spacing_mm),) * ndim
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) != ndim:
        raise ValueError(f"spacing_mm has {len(sp)} entries but the masks have {ndim} dimensions "
                         "(give the spacing in array axis order, e.g. (s_k, s_j, s_i))")
    if any(s <= 0 for s in sp):
        raise ValueError(f"spacing_mm must be positive, got {sp}")
    return sp


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two masks (non-zero = foreground). Both empty -> nan."""
    a = np.asarray(a) != 0
    b = np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    denom = int(a.sum()) + int(b.sum())
    if denom == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / denom


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a 6-connected background neighbour (array border counts as background)."""
    if mask.ndim == 3:
        structure = _SIX_CONNECTED
    else:
        structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def _crop_pair(a: np.ndarray, b: np.ndarray, margin: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union, padded by ``margin`` background voxels."""
    union = a | b
    coords = np.nonzero(union)
    slices = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)
    a_c = np.pad(a[slices], margin, mode="constant", constant_values=False)
    b_c = np.pad(b[slices], margin, mode="constant", constant_values=False)
    return a_c, b_c


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing_mm: Spacing):
    """(distances from a's surface voxels to b's surface, distances from b's surface to a's surface) in mm,
    or None when either mask is empty."""
    a = np.asarray(a) != 0
    b = np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    sp = _spacing3(spacing_mm, a.ndim)
    if not a.any() or not b.any():
        return None
    a_c, b_c = _crop_pair(a, b)
    sa, sb = _surface(a_c), _surface(b_c)
    dt_to_b = ndimage.distance_transform_edt(~sb, sampling=sp)
    dt_to_a = ndimage.distance_transform_edt(~sa, sampling=sp)
    return dt_to_b[sa], dt_to_a[sb]


def _empty_value(a: np.ndarray, b: np.ndarray) -> float:
    return float("nan") if (not np.any(a) and not np.any(b)) else float("inf")


def hausdorff_distance_mm(a: np.ndarray, b: np.ndarray, spacing_mm: Spacing) -> float:
    """Symmetric Hausdorff distance (mm) between the surfaces of two masks (max of both directed maxima).

    ``spacing_mm`` in array axis order. Both empty -> nan; exactly one empty -> inf.
    """
    d = _surface_distances(a, b, spacing_mm)
    if d is None:
        return _empty_value(a, b)
    return float(max(d[0].max(), d[1].max()))


def assd_mm(a: np.ndarray, b: np.ndarray, spacing_mm: Spacing) -> float:
    """Directed average surface distance (mm): mean over a's surface voxels of the distance to b's surface.

    ``assd_mm(ref, pred, sp)`` is the paper's "GT-Surf" (GT → prediction), ``assd_mm(pred, ref, sp)`` its
    "Surf-GT". ``spacing_mm`` in array axis order. Both empty -> nan; exactly one empty -> inf.
    """
    d = _surface_distances(a, b, spacing_mm)
    if d is None:
        return _empty_value(a, b)
    return float(d[0].mean())


def surface_metrics_mm(a: np.ndarray, b: np.ndarray, spacing_mm: Spacing) -> Dict[str, float]:
    """{'hd_mm', 'assd_a_to_b_mm', 'assd_b_to_a_mm'} from one pair of distance transforms."""
    d = _surface_distances(a, b, spacing_mm)
    if d is None:
        v = _empty_value(a, b)
        return {"hd_mm": v, "assd_a_to_b_mm": v, "assd_b_to_a_mm": v}
    return {"hd_mm": float(max(d[0].max(), d[1].max())),
            "assd_a_to_b_mm": float(d[0].mean()), "assd_b_to_a_mm": float(d[1].mean())}


def overlap_table(ref: np.ndarray, pred: np.ndarray):
    """(ref_labels, pred_labels, overlap[n_ref, n_pred], ref_sizes, pred_sizes) from a joint histogram."""
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {pred.shape}")
    ref_flat = ref.ravel()
    pred_flat = pred.ravel()
    ref_labels = np.array([int(v) for v in np.unique(ref_flat) if v != 0], dtype=np.int64)
    pred_labels = np.array([int(v) for v in np.unique(pred_flat) if v != 0], dtype=np.int64)
    nr, npr = len(ref_labels), len(pred_labels)
    ref_fg = ref_flat != 0
    pred_fg = pred_flat != 0
    ref_sizes = np.bincount(np.searchsorted(ref_labels, ref_flat[ref_fg]), minlength=nr).astype(np.int64) \
        if nr else np.zeros(0, dtype=np.int64)
    pred_sizes = np.bincount(np.searchsorted(pred_labels, pred_flat[pred_fg]), minlength=npr).astype(np.int64) \
        if npr else np.zeros(0, dtype=np.int64)
    ov = np.zeros((nr, npr), dtype=np.int64)
    both = ref_fg & pred_fg
    if nr and npr and both.any():
        ri = np.searchsorted(ref_labels, ref_flat[both])
        pi = np.searchsorted(pred_labels, pred_flat[both])
        ov = np.bincount(ri * npr + pi, minlength=nr * npr).reshape(nr, npr).astype(np.int64)
    return ref_labels, pred_labels, ov, ref_sizes, pred_sizes


def match_instances(ref: np.ndarray, pred: np.ndarray) -> Dict[int, int]:
    """One-to-one matching {ref_label: pred_label} of two instance label maps by overlap.

    Maximises the summed Dice of the matched pairs (Hungarian algorithm, ``linear_sum_assignment``);
    pairs without any overlapping voxel are never matched, so unmatched labels on either side are simply
    absent from the result.
    """
    ref_labels, pred_labels, ov, rs, ps = overlap_table(ref, pred)
    if ov.size == 0 or not ov.any():
        return {}
    dice_m = 2.0 * ov / (rs[:, None] + ps[None, :])
    rows, cols = linear_sum_assignment(dice_m, maximize=True)
    return {int(ref_labels[r]): int(pred_labels[c]) for r, c in zip(rows, cols) if ov[r, c] > 0}


def match_by_label(ref: np.ndarray, pred: np.ndarray) -> Dict[int, int]:
    """{label: label} for every non-zero label present in both maps (predictions carrying anatomical labels
    in the reference's label space)."""
    r = {int(v) for v in np.unique(ref) if v != 0}
    p = {int(v) for v in np.unique(pred) if v != 0}
    return {lab: lab for lab in sorted(r & p)}


def centroid_distance_mm(c1: Sequence[float], c2: Sequence[float], spacing_mm: Spacing) -> float:
    """Euclidean distance (mm) between two (X, Y, Z) voxel-index centroids; ``spacing_mm`` in ARRAY order
    (s_k, s_j, s_i), i.e. s_i multiplies X and s_k multiplies Z."""
    sk, sj, si = _spacing3(spacing_mm, 3)
    d = np.subtract(np.asarray(c1, dtype=float), np.asarray(c2, dtype=float)) * np.array([si, sj, sk])
    return float(np.sqrt((d ** 2).sum()))


def _region_fn(ref_labels: Optional[str]) -> Callable[[int], Optional[str]]:
    if ref_labels is None:
        return lambda lab: None
    base = {"verse": region_of_verse_label, "nnunet": region_of_nnunet_label}[ref_labels]

    def fn(lab: int) -> Optional[str]:
        try:
            return base(lab)
        except (KeyError, ValueError):
            return None
    return fn


def evaluate_case(ref: np.ndarray, pred: np.ndarray, spacing_mm: Spacing, match: str = "overlap",
                  ref_centroids: Optional[Centroids] = None, pred_centroids: Optional[Centroids] = None,
                  ref_labels: Optional[str] = "verse") -> dict:
    """All metrics of one scan.

    Args:
        ref, pred: instance label maps, same shape, array order [k, j, i] (as SimpleITK returns them).
        spacing_mm: voxel spacing in ARRAY order (s_k, s_j, s_i) — ``tuple(reversed(img.GetSpacing()))``.
        match: "overlap" (one-to-one assignment, ``match_instances``) or "label" (same label = same vertebra;
            the prediction must carry labels in the reference's label space).
        ref_centroids, pred_centroids: optional {label: (X, Y, Z)} voxel centroids (VerSe convention, same
            grid). Labels of the mask that are absent from a given dict get their centroid from the mask
            (``centroids_from_mask``); every entry of ``pred_centroids`` counts as a predicted landmark.
        ref_labels: label space of ``ref`` for the region column: "verse", "nnunet" or None.

    Returns a dict:
        per_vertebra: one entry per reference vertebra, in label order: label, region, dice (0 when missing),
            hd_mm, assd_ref_to_pred_mm, assd_pred_to_ref_mm (None when missing), failed (dice < 0.5),
            matched_pred_label (None when missing), centroid_distance_mm (None when missing or no predicted
            centroid), localised (bool), identified (bool for label matching, None for overlap).
        missing: reference labels without a matched prediction; extra: predicted labels not matched.
        n_ref, n_pred, n_localised, localisation_rate (localised / annotated, None without reference vertebrae);
        n_identified, id_rate (the same with label matching: VerSe's identification rate; None for overlap);
        d_mean_mm (mean centroid distance over matched vertebrae, None if none matched);
        dice_mean (over all reference vertebrae, missing = 0), hd_mean_mm, assd_ref_to_pred_mean_mm,
        assd_pred_to_ref_mean_mm (over matched vertebrae), failure_rate (failed / reference vertebrae).
    """
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"reference and prediction shapes differ: {ref.shape} vs {pred.shape}")
    sp = _spacing3(spacing_mm, ref.ndim)
    if match == "overlap":
        mapping = match_instances(ref, pred)
    elif match == "label":
        mapping = match_by_label(ref, pred)
    else:
        raise ValueError(f"match must be 'overlap' or 'label', got {match!r}")
    region = _region_fn(ref_labels)

    ref_label_list = sorted(int(v) for v in np.unique(ref) if v != 0)
    pred_label_list = sorted(int(v) for v in np.unique(pred) if v != 0)

    # centroids: given ones first, the rest from the masks
    ref_ctd: Centroids = {}
    pred_ctd: Centroids = {}
    if ref_centroids is not None:
        ref_ctd.update({int(k): tuple(v) for k, v in ref_centroids.items()})
    if pred_centroids is not None:
        pred_ctd.update({int(k): tuple(v) for k, v in pred_centroids.items()})
    if any(lab not in ref_ctd for lab in ref_label_list):
        for lab, c in centroids_from_mask(ref).items():
            ref_ctd.setdefault(lab, c)
    if any(lab not in pred_ctd for lab in pred_label_list):
        for lab, c in centroids_from_mask(pred).items():
            pred_ctd.setdefault(lab, c)
    pred_landmarks = list(pred_ctd.items())

    # bounding boxes of every label once, to crop before the per-vertebra metrics
    max_lab = max([0] + ref_label_list + pred_label_list)
    ref_boxes = ndimage.find_objects(ref.astype(np.int64, copy=False), max_label=max_lab) if ref_label_list else []
    pred_boxes = ndimage.find_objects(pred.astype(np.int64, copy=False), max_label=max_lab) if pred_label_list else []

    per_vertebra: List[dict] = []
    for lab in ref_label_list:
        row = {"label": lab, "region": region(lab), "dice": 0.0, "hd_mm": None, "assd_ref_to_pred_mm": None,
               "assd_pred_to_ref_mm": None, "failed": True, "matched_pred_label": None,
               "centroid_distance_mm": None, "localised": False,
               "identified": False if match == "label" else None}
        p = mapping.get(lab)
        if p is not None:
            box = _union_box(ref_boxes[lab - 1], pred_boxes[p - 1])
            r_m = ref[box] == lab
            p_m = pred[box] == p
            d = dice(r_m, p_m)
            s = surface_metrics_mm(r_m, p_m, sp)
            row.update(dice=d, hd_mm=s["hd_mm"], assd_ref_to_pred_mm=s["assd_a_to_b_mm"],
                       assd_pred_to_ref_mm=s["assd_b_to_a_mm"], failed=bool(d < FAILURE_DICE),
                       matched_pred_label=p)
            if lab in ref_ctd and p in pred_ctd:
                dist = centroid_distance_mm(pred_ctd[p], ref_ctd[lab], sp)
                row["centroid_distance_mm"] = dist
                nearest = min(pred_landmarks, key=lambda kv: centroid_distance_mm(kv[1], ref_ctd[lab], sp))
                nearest_dist = centroid_distance_mm(nearest[1], ref_ctd[lab], sp)
                # the matched landmark must be (one of) the closest and within the radius
                row["localised"] = bool(dist < ID_RADIUS_MM and dist <= nearest_dist)
                if match == "label":
                    row["identified"] = row["localised"]
        per_vertebra.append(row)

    matched_pred = set(mapping.values())
    missing = [r["label"] for r in per_vertebra if r["matched_pred_label"] is None]
    extra = [p for p in pred_label_list if p not in matched_pred]
    n_ref = len(per_vertebra)
    n_localised = sum(r["localised"] for r in per_vertebra)
    n_identified = sum(bool(r["identified"]) for r in per_vertebra) if match == "label" else None
    matched_rows = [r for r in per_vertebra if r["matched_pred_label"] is not None]
    dists = [r["centroid_distance_mm"] for r in matched_rows if r["centroid_distance_mm"] is not None]

    def _mean(vals):
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "per_vertebra": per_vertebra,
        "missing": missing,
        "extra": extra,
        "n_ref": n_ref,
        "n_pred": len(pred_label_list),
        "n_localised": int(n_localised),
        "localisation_rate": (n_localised / n_ref) if n_ref else None,
        "n_identified": n_identified,
        "id_rate": (n_identified / n_ref) if (n_ref and n_identified is not None) else None,
        "d_mean_mm": _mean(dists),
        "dice_mean": _mean([r["dice"] for r in per_vertebra]),
        "hd_mean_mm": _mean([r["hd_mm"] for r in matched_rows]),
        "assd_ref_to_pred_mean_mm": _mean([r["assd_ref_to_pred_mm"] for r in matched_rows]),
        "assd_pred_to_ref_mean_mm": _mean([r["assd_pred_to_ref_mm"] for r in matched_rows]),
        "failure_rate": (sum(r["failed"] for r in per_vertebra) / n_ref) if n_ref else None,
        "match": match,
        "spacing_mm": list(sp),
    }


def _union_box(a: Optional[tuple], b: Optional[tuple]) -> tuple:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
