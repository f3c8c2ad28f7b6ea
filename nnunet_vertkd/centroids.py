"""Centroid files in VerSe format, read and written the same way everywhere in the plugin.

Format (VerSe ``_seg-subreg_ctd.json``): a JSON list whose first entry names the voxel axes,
``{"direction": ["L", "P", "I"]}``, followed by one entry per vertebra,
``{"label": 20, "X": 51.2, "Y": 88.0, "Z": 40.5}``, where X, Y, Z are voxel indices along the image's
axes i, j, k (SimpleITK index order; NumPy arrays from SimpleITK are indexed [k, j, i]). Labels are VerSe
labels unless a file says otherwise. Older files without a direction entry are accepted; entries with
NaN coordinates are skipped.

``transform_centroids`` carries such voxel coordinates from one image grid to another through physical space
(the converter onto its resampled grid, the evaluator onto the reference grid).
"""
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

Centroids = Dict[int, Tuple[float, float, float]]


class CentroidFileError(ValueError):
    """A centroid file that cannot be read; the message names the file."""


def read_centroids(path: str) -> Tuple[Optional[List[str]], Centroids]:
    """Returns (direction or None, {label: (X, Y, Z)}) from a VerSe centroid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CentroidFileError(f"{path}: cannot read centroid JSON ({e})") from e
    if not isinstance(content, list):
        raise CentroidFileError(f"{path}: expected a JSON list of centroid entries, got {type(content).__name__}")
    direction = None
    centroids: Centroids = {}
    for entry in content:
        if not isinstance(entry, dict):
            raise CentroidFileError(f"{path}: entry {entry!r} is not an object")
        if "direction" in entry:
            direction = [str(d) for d in entry["direction"]]
            continue
        if "label" not in entry:
            continue
        try:
            xyz = tuple(float(entry[k]) for k in ("X", "Y", "Z"))
        except (KeyError, TypeError, ValueError) as e:
            raise CentroidFileError(f"{path}: entry {entry!r} lacks numeric X, Y, Z") from e
        if any(math.isnan(c) for c in xyz):
            continue
        centroids[int(entry["label"])] = xyz
    return direction, centroids


def write_centroids(path: str, direction: Sequence[str], centroids: Centroids) -> None:
    """Write a VerSe centroid JSON atomically (a temporary file renamed into place)."""
    content = [{"direction": list(direction)}]
    for label in sorted(centroids):
        x, y, z = (round(float(c), 3) for c in centroids[label])
        content.append({"label": int(label), "X": x, "Y": y, "Z": z})
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, path)


def transform_centroids(centroids: Centroids, source_grid, target_grid) -> Centroids:
    """Voxel coordinates (X=i, Y=j, Z=k) in ``source_grid`` -> physical point (mm) -> continuous voxel coordinates
    in ``target_grid`` (both SimpleITK images; only their geometry is used)."""
    out = {}
    for label, xyz in centroids.items():
        point = source_grid.TransformContinuousIndexToPhysicalPoint([float(c) for c in xyz])
        out[label] = tuple(float(c) for c in target_grid.TransformPhysicalPointToContinuousIndex(point))
    return out


def centroids_from_mask(mask_kji: np.ndarray) -> Centroids:
    """Centre of mass of every non-zero label of a SimpleITK-ordered array ([k, j, i]), as (X=i, Y=j, Z=k)."""
    mask_kji = np.asarray(mask_kji)
    if mask_kji.size == 0:
        return {}
    if (not np.issubdtype(mask_kji.dtype, np.integer) or int(mask_kji.min()) < 0
            or int(mask_kji.max()) > 100000):
        labels = [int(v) for v in np.unique(mask_kji) if v != 0]
        if not labels:
            return {}
        coms = ndimage.center_of_mass(np.ones_like(mask_kji, dtype=np.uint8), mask_kji, labels)
        return {lab: (float(c[2]), float(c[1]), float(c[0])) for lab, c in zip(labels, coms)}
    # label by label inside its bounding box: no full-size float64 temporaries (1.3 GB each for a 512x512x600
    # scan with ndimage.center_of_mass on the whole array); the same values
    out = {}
    for lab, box in enumerate(ndimage.find_objects(mask_kji), start=1):
        if box is None:
            continue
        k, j, i = np.nonzero(mask_kji[box] == lab)
        out[lab] = (float(i.mean() + box[2].start), float(j.mean() + box[1].start), float(k.mean() + box[0].start))
    return out
