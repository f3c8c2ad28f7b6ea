"""Tiny stand-in nnU-Net model folders and synthetic CTs for the inference tests.

The model folders come from the package (``nnunet_vertkd.benchmarks.stand_in_model``, shared with the memory
benchmark): the vertebra "model" returns the topmost slab of bone (> 400 HU) that is not in memory, i.e. what a
perfect vertebra model returns on a phantom of separated bone blocks; the spine "model" is a stock nnUNetTrainer
with an untrained tiny PlainConvUNet. This file adds the phantom and the grid helpers of the tests.
"""
import os

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_vertkd.benchmarks.stand_in_model import (  # noqa: F401  (re-exported for the tests)
    STANDIN_SOURCE, STANDIN_TRAINER, make_standin_vertebra_model, make_untrained_spine_model, plans_dict,
    write_json)


def phantom(n_blocks=4, block_mm=10.0, gap_mm=6.0):
    """LPI phantom at 1 mm: body cylinder (40 HU) in air (-1000), ``n_blocks`` bone blocks (700 HU) stacked
    along the superior-inferior axis. Returns (ct image, label image with 1..n from the top)."""
    top_margin = 6
    nz = int(top_margin * 2 + n_blocks * block_mm + (n_blocks - 1) * gap_mm)
    ny, nx = 40, 44
    ct = np.full((nz, ny, nx), -1000, np.int16)
    yy, xx = np.mgrid[:ny, :nx]
    ct[:, ((yy - ny / 2) ** 2 / 18 ** 2 + (xx - nx / 2) ** 2 / 20 ** 2) <= 1] = 40
    lab = np.zeros(ct.shape, np.uint8)
    for b in range(n_blocks):  # LPI: k grows towards inferior, so index 0 is the top
        z0 = int(top_margin + b * (block_mm + gap_mm))
        lab[z0:z0 + int(block_mm), 20:32, 16:28] = b + 1
    ct[lab > 0] = 700
    img = sitk.GetImageFromArray(ct)
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # i -> L, j -> P, k -> I ("LPI")
    img.SetOrigin((-22.0, -20.0, 30.0))
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(img)
    return img, lab_img


def resample_onto(image, reference_size, spacing, direction, origin, default, nearest):
    ref = sitk.Image([int(s) for s in reference_size], image.GetPixelID())
    ref.SetSpacing(spacing)
    ref.SetDirection(direction)
    ref.SetOrigin(origin)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, ref, sitk.Transform(), interp, default, image.GetPixelID())


def grid_like(image, spacing, direction):
    """Size/origin for a grid of ``spacing`` and ``direction`` covering ``image``'s physical extent."""
    corners = []
    size = image.GetSize()
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k in (0, size[2] - 1):
                corners.append(image.TransformIndexToPhysicalPoint((i, j, k)))
    d = np.array(direction).reshape(3, 3)
    local = np.array(corners) @ d  # coordinates along the new axes
    lo, hi = local.min(0), local.max(0)
    new_size = np.ceil((hi - lo) / np.array(spacing)).astype(int) + 1
    origin = d @ lo
    return new_size, tuple(origin)


def set_env(monkeypatch, ext_dir):
    from nnunet_vertkd.ext_trainers_path import EXT_TRAINER_DIR
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(ext_dir), EXT_TRAINER_DIR]))
    monkeypatch.setenv("nnUNet_compile", "false")
    torch.set_num_threads(1)
