"""PNG preview of a result (like VerSe's ``_snp.png``): sagittal and coronal views with coloured labels.

Left panel: sagittal, right panel: coronal; head at the top. The CT is shown as a slice through the labels'
centre (bone window, -300..1200 HU) and the labels as their maximum projection, alpha-blended, each label in
its own colour. Works on arrays in a canonical LPI-like orientation ([k, j, i] = [SI, AP, LR]) with the
voxel spacing used to get the physical aspect ratio right. numpy + pillow only.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

WINDOW_HU = (-300.0, 1200.0)
ALPHA = 0.5
#: small scans are enlarged to at least this height (pixels)
MIN_HEIGHT_PX = 400
#: 26 well separated colours (RGB), cycled for higher labels
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128), (255, 99, 71), (46, 139, 87), (218, 165, 32), (65, 105, 225),
    (199, 21, 133), (0, 191, 255)], dtype=np.float32)


def _label_projection(labels_2d_stack: np.ndarray, axis: int) -> np.ndarray:
    """For each ray the label of the first non-zero voxel (a maximum projection keeping label identity)."""
    nz = labels_2d_stack != 0
    first = np.argmax(nz, axis=axis)
    proj = np.take_along_axis(labels_2d_stack, np.expand_dims(first, axis), axis=axis).squeeze(axis)
    return np.where(nz.any(axis=axis), proj, 0)


def _render(ct_2d: np.ndarray, lab_2d: np.ndarray, row_mm: float, col_mm: float) -> Image.Image:
    lo, hi = WINDOW_HU
    grey = np.clip((ct_2d.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = lab_2d > 0
    if mask.any():
        colours = PALETTE[(lab_2d[mask].astype(np.int64) - 1) % len(PALETTE)]
        rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * colours
    img = Image.fromarray(rgb.astype(np.uint8), "RGB")
    rows, cols = lab_2d.shape
    scale = 1.0 / min(row_mm, col_mm)  # at least 1 pixel per voxel, physical aspect ratio
    scale *= max(1.0, MIN_HEIGHT_PX / (rows * row_mm * scale))
    size = (max(1, int(round(cols * col_mm * scale))), max(1, int(round(rows * row_mm * scale))))
    return img.resize(size, Image.NEAREST)


def make_preview(ct_kji: np.ndarray, labels_kji: np.ndarray, spacing_kji: Sequence[float]) -> Image.Image:
    """Sagittal | coronal preview; arrays [SI, AP, LR] (index 0 = superior), spacing in the same order."""
    ct = np.asarray(ct_kji)
    lab = np.asarray(labels_kji)
    if lab.any():
        centre = [int(round(c.mean())) for c in np.nonzero(lab)]
    else:
        centre = [s // 2 for s in lab.shape]
    sag = _render(ct[:, :, centre[2]], _label_projection(lab, axis=2), spacing_kji[0], spacing_kji[1])
    cor = _render(ct[:, centre[1], :], _label_projection(lab, axis=1), spacing_kji[0], spacing_kji[2])
    h = max(sag.height, cor.height)
    out = Image.new("RGB", (sag.width + cor.width + 4, h), (0, 0, 0))
    out.paste(sag, (0, 0))
    out.paste(cor, (sag.width + 4, 0))
    return out


def save_preview(path: str, ct_kji: np.ndarray, labels_kji: np.ndarray, spacing_kji: Sequence[float]) -> None:
    """Write the preview PNG atomically."""
    img = make_preview(ct_kji, labels_kji, spacing_kji)
    tmp = f"{path}.tmp{os.getpid()}.png"
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
