"""Fill the holes of a predicted vertebra before the loop accepts it.

A small network, at 2 mm, often predicts the cortical shell of a vertebral body and leaves gaps in its cancellous
interior; the reference masks (VerSe's) are solid. Left as they are, the holes cost Dice and they go into the
memory channel, which in training always held solid reference masks.

``fill_fragment`` fills, in this order:

1. optionally, narrow gaps of the surface: a morphological closing with the 6-connected cross, ``closing_iterations``
   times (each iteration bridges gaps of about two voxels), on a copy padded so that the patch border does not erode;
2. holes in 3-D (background not connected to the patch border);
3. holes in every 2-D slice of the planes that contain the superior-inferior axis (sagittal and coronal). Axial
   slices are left out on purpose: there the vertebral arch encloses the spinal canal, which is not bone. In the
   sagittal and coronal planes the canal and the foramina run out of the vertebra, so they are never enclosed.

Filling only adds voxels inside or between the fragment's own voxels; the loop still writes only voxels that are not
in the memory.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_CROSS_3D = ndi.generate_binary_structure(3, 1)


def _planar_structure(normal_axis: int) -> np.ndarray:
    """4-connected cross in the planes perpendicular to ``normal_axis`` (no connection across slices), so that
    one ``binary_fill_holes`` call fills every slice of that stack in 2-D."""
    s = np.zeros((3, 3, 3), dtype=bool)
    index = [slice(None)] * 3
    index[normal_axis] = 1
    s[tuple(index)] = ndi.generate_binary_structure(2, 1)
    return s


def close_gaps(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``mask`` OR its closing with the 6-connected cross (``iterations`` times), border-safe."""
    if iterations <= 0 or not mask.any():
        return mask
    padded = np.pad(mask, iterations + 1)
    closed = ndi.binary_closing(padded, structure=_CROSS_3D, iterations=iterations)
    inner = tuple(slice(iterations + 1, -(iterations + 1)) for _ in range(mask.ndim))
    return mask | closed[inner]


def fill_fragment(fragment: np.ndarray, superior_axis: int, closing_iterations: int = 0) -> np.ndarray:
    """The fragment with its holes filled (see the module docstring); a new boolean array of the same shape."""
    mask = np.asarray(fragment, dtype=bool)
    if not mask.any():
        return mask.copy()
    mask = close_gaps(mask, int(closing_iterations))
    mask = ndi.binary_fill_holes(mask)
    for axis in range(3):
        if axis != superior_axis:  # slices perpendicular to this axis contain the superior-inferior axis
            mask = ndi.binary_fill_holes(mask, structure=_planar_structure(axis))
    return mask
