"""Less whole-scan work outside the network: resampling as the converter did, spine region only.

The default preprocessing of ``VertKDPredictor`` (``preprocessing="converter"``):

1. **Spine step at the spine model's spacing.** The (reoriented) CT is smoothed and linearly resampled onto the
   spine grid as ``vertkd_convert_verse`` made the spine model's training images (Gaussian of
   sigma = (target - spacing) / 2 mm per axis, then linear interpolation onto ``target_grid``, the
   converter's grid that keeps the outer voxel corners), computed as one separable sparse operator per axis
   slab by slab (``downsample_like_converter``: one pass, no full-size float copy; SimpleITK's recursive
   Gaussian on a full-size scan is much slower). ``nnUNetPredictor`` then runs on that small image, where
   its own resampling is the identity, and returns P(spine) on the spine grid. nnU-Net's default route instead
   resamples the full-resolution scan with third-order splines, runs, and resamples two probability channels
   back to full resolution (most of the spine step on a 512×512×600 scan, docs/inference.md).
2. **The spine region.** The vertebra grid (``target_grid`` at the vertebra model's spacing, the converter's
   grid for the vertebra dataset) is cut in the two in-plane axes to the bounding box of P(spine) >=
   ``START_THRESHOLD`` plus ``margin_mm`` (default: half the patch's field of view + 32 mm, so every patch the
   loop can crop around a vertebra of the spine sees the same voxels as on the full grid); the
   superior-inferior axis is kept whole. Only that box is resampled (linear, as the converter) and given to
   nnU-Net's preprocessor (transpose, crop, CTNormalization; its resampling is the identity there).
3. **Export** by SimpleITK nearest-neighbour resampling of the label map from the vertebra sub-grid onto the
   reoriented input grid (physical positions), then the usual reorientation back (``geometry``).

Without a spine model the bone-threshold heuristic runs on the full-resolution image as before and defines the
region. ``preprocessing="nnunet"`` keeps nnU-Net's full-volume route (the previous behaviour).

Why this is not less faithful: the models were trained on images made by the converter (linear interpolation,
Gaussian pre-smoothing for the spine dataset), not by nnU-Net's spline resampling, so this route shows the
networks what they were trained on; for images already at the model's spacing the vertebra resampling is the
identity.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_vertkd.inference import geometry


def sitk_spacing(plans_spacing: Sequence[float], transpose_forward: Sequence[int]) -> Tuple[float, float, float]:
    """Spacing in SimpleITK (x, y, z) order of a configuration whose ``spacing`` is in nnU-Net's preprocessed
    (transposed) axes of (z, y, x) arrays."""
    arr = [0.0, 0.0, 0.0]
    for i, a in enumerate(transpose_forward):
        arr[int(a)] = float(plans_spacing[i])
    return (arr[2], arr[1], arr[0])


def target_grid(image: sitk.Image, spacing_xyz: Sequence[float]) -> sitk.Image:
    """The converter's grid (``case_conversion.target_grid``) with a per-axis spacing: same physical extent,
    outer voxel corners kept."""
    old_sp = np.array(image.GetSpacing(), float)
    new_sp = np.array(spacing_xyz, float)
    size = [max(1, int(round(s))) for s in np.array(image.GetSize(), float) * old_sp / new_sp]
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing(tuple(new_sp))
    ref.SetOrigin(tuple(np.array(image.GetOrigin(), float) + direction @ ((new_sp - old_sp) / 2.0)))
    ref.SetDirection(image.GetDirection())
    return ref


def smooth_for_downsampling(image: sitk.Image, target_xyz: Sequence[float]) -> sitk.Image:
    """The converter's anti-aliasing before downsampling (sigma = (target - spacing) / 2 mm per axis)."""
    sigmas = [max(0.0, (t - s) / 2.0) for t, s in zip(target_xyz, image.GetSpacing())]
    if max(sigmas) <= 0 or min(image.GetSize()) < 4:
        return image
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), [max(s, 1e-3) for s in sigmas])


def _axis_operator(n_in: int, sp_in: float, n_out: int, sp_out: float, sigma_mm: float):
    """Sparse (n_out, n_in) matrix of one axis: Gaussian smoothing (sigma_mm, sampled kernel truncated at 4 sigma,
    renormalised at the borders) followed by linear interpolation at the output voxel centres of the converter's
    grid (continuous input index (j + 0.5) * sp_out / sp_in - 0.5, clamped to the volume)."""
    from scipy import sparse
    c = (np.arange(n_out) + 0.5) * sp_out / sp_in - 0.5
    c = np.clip(c, 0.0, n_in - 1.0)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = c - i0
    interp = sparse.csr_matrix((np.concatenate([1 - w1, w1]), (np.concatenate([np.arange(n_out)] * 2),
                                                                np.concatenate([i0, i1]))), shape=(n_out, n_in))
    s = sigma_mm / sp_in
    if s <= 1e-3:
        return interp
    r = int(np.ceil(4 * s))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
    rows, cols, vals = [], [], []
    for off, w in zip(range(-r, r + 1), k):
        idx = np.arange(n_in)
        ok = (idx + off >= 0) & (idx + off < n_in)
        rows.append(idx[ok])
        cols.append(idx[ok] + off)
        vals.append(np.full(ok.sum(), w))
    g = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_in, n_in))
    g = sparse.diags(1.0 / np.asarray(g.sum(axis=1)).ravel()) @ g
    return (interp @ g).tocsr()


def downsample_like_converter(image: sitk.Image, ref: sitk.Image, slab: int = 16) -> sitk.Image:
    """``smooth_for_downsampling`` + linear resampling onto ``ref`` (a ``target_grid`` of ``image``) as separable
    sparse operators, slab by slab (bounded memory, one pass over the full-resolution voxels): what the converter
    does to make the spine dataset, without a full-size float copy. Returns a float32 image on ``ref``."""
    arr = sitk.GetArrayViewFromImage(image)  # (z, y, x)
    n_in = image.GetSize()[::-1]
    n_out = ref.GetSize()[::-1]
    sp_in, sp_out = image.GetSpacing()[::-1], ref.GetSpacing()[::-1]
    ops = [_axis_operator(n_in[a], sp_in[a], n_out[a], sp_out[a], max(0.0, (sp_out[a] - sp_in[a]) / 2.0)
                          ).astype(np.float32) for a in range(3)]
    mz, my, mx = ops
    out_yx = np.empty((n_in[0], n_out[1], n_out[2]), np.float32)
    for z0 in range(0, n_in[0], slab):
        chunk = np.asarray(arr[z0:z0 + slab], dtype=np.float32)             # (s, y, x)
        c = (mx @ chunk.reshape(-1, n_in[2]).T).T.reshape(chunk.shape[0], n_in[1], n_out[2])
        c = (my @ c.transpose(1, 0, 2).reshape(n_in[1], -1)).reshape(n_out[1], chunk.shape[0], n_out[2])
        out_yx[z0:z0 + chunk.shape[0]] = c.transpose(1, 0, 2)
    out = (mz @ out_yx.reshape(n_in[0], -1)).reshape(n_out).astype(np.float32)
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(ref)
    return img


def _resample(image: sitk.Image, ref: sitk.Image, interpolator, default: float, pixel) -> sitk.Image:
    return sitk.Resample(image, ref, sitk.Transform(), interpolator, float(default), pixel)


def superior_inferior_axis(image: sitk.Image) -> int:
    """SimpleITK axis (0, 1, 2) whose direction is closest to the patient's superior-inferior axis."""
    d = np.abs(np.array(image.GetDirection(), float).reshape(3, 3))
    return int(np.argmax(d[2]))


def region_of(prob: sitk.Image, threshold: float, grid: sitk.Image, margin_mm: float
              ) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """(start, stop) index of ``grid`` (x, y, z) covering the voxels of ``prob`` >= threshold plus
    ``margin_mm`` in the two in-plane axes; the superior-inferior axis is kept whole. The whole grid when
    nothing reaches the threshold."""
    size = grid.GetSize()
    arr = sitk.GetArrayViewFromImage(prob) >= threshold
    if not arr.any():
        return (0, 0, 0), tuple(size)
    idx = np.argwhere(arr)  # (k, j, i)
    lo, hi = idx.min(0)[::-1], idx.max(0)[::-1]  # (i, j, k)
    corners = [(a, b, c) for a in (lo[0] - 0.5, hi[0] + 0.5) for b in (lo[1] - 0.5, hi[1] + 0.5)
               for c in (lo[2] - 0.5, hi[2] + 0.5)]
    cont = np.array([grid.TransformPhysicalPointToContinuousIndex(
        prob.TransformContinuousIndexToPhysicalPoint([float(v) for v in c])) for c in corners])
    margin = np.array([margin_mm / s for s in grid.GetSpacing()])
    start = np.floor(cont.min(0) - margin).astype(int)
    stop = np.ceil(cont.max(0) + margin).astype(int) + 1
    si = superior_inferior_axis(grid)
    start[si], stop[si] = 0, size[si]
    start = np.clip(start, 0, size)
    stop = np.clip(stop, start + 1, size)
    return tuple(int(v) for v in start), tuple(int(v) for v in stop)


def sub_grid(grid: sitk.Image, start: Sequence[int], stop: Sequence[int]) -> sitk.Image:
    ref = sitk.Image([int(b - a) for a, b in zip(start, stop)], sitk.sitkUInt8)
    ref.SetSpacing(grid.GetSpacing())
    ref.SetDirection(grid.GetDirection())
    ref.SetOrigin(grid.TransformIndexToPhysicalPoint([int(v) for v in start]))
    return ref


@dataclass
class PreparedCase:
    ct_pp: np.ndarray
    start_prob: np.ndarray
    spine_source: str
    pp_props: dict
    grid: sitk.Image                 # the vertebra sub-grid (before nnU-Net's transpose)
    spine_prob: sitk.Image           # P(spine) on the spine grid (or the input grid for the heuristic)
    info: dict = field(default_factory=dict)

    def labels_to_raw(self, labels_pp: np.ndarray, transpose_backward, reoriented: sitk.Image) -> np.ndarray:
        """Label map of the loop -> (z, y, x) array on the reoriented input grid (nearest neighbour)."""
        sub = geometry.preprocessed_to_raw(labels_pp, self.pp_props, transpose_backward)
        img = sitk.GetImageFromArray(sub)
        img.CopyInformation(self.grid)
        return sitk.GetArrayFromImage(_resample(img, reoriented, sitk.sitkNearestNeighbor, 0, img.GetPixelID()))

    def spine_on(self, reoriented: sitk.Image) -> np.ndarray:
        """P(spine) on the reoriented input grid (for --save-spine)."""
        return sitk.GetArrayFromImage(_resample(self.spine_prob, reoriented, sitk.sitkLinear, 0.0,
                                                sitk.sitkFloat32))


def prepare(reoriented: sitk.Image, model, spine_model, start_threshold: float, margin_mm: Optional[float] = None,
            seconds: Optional[dict] = None) -> PreparedCase:
    """Spine step + vertebra preprocessing of one reoriented CT (see the module docstring). ``model``: the
    ``LoadedModel``; ``spine_model``: a ``SpineModel`` or None (heuristic). ``seconds`` gets "spine" and
    "preprocess"."""
    import time
    from nnunet_vertkd.inference import lean_preprocessing
    from nnunet_vertkd.inference.spine_location import heuristic_spine_mask, to_preprocessed_space
    from nnunet_vertkd.orientation import _array_axis_of

    seconds = seconds if seconds is not None else {}
    pm, cm = model.plans_manager, model.configuration_manager
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(reoriented)
    ct_min = float(stats.GetMinimum())

    t = time.perf_counter()
    if spine_model is not None:
        spm = spine_model.predictor
        sp_xyz = sitk_spacing(spm.configuration_manager.spacing, spm.plans_manager.transpose_forward)
        spine_ref = target_grid(reoriented, sp_xyz)
        small = downsample_like_converter(reoriented, spine_ref)
        data, props = geometry.nnunet_input(small)
        prob = sitk.GetImageFromArray(spine_model.probability_raw(data, props).astype(np.float32))
        prob.CopyInformation(small)
        source = "model"
    else:
        lr_axis, _ = _array_axis_of(model.orientation, "LR")
        si_axis, _ = _array_axis_of(model.orientation, "IS")
        mask = heuristic_spine_mask(sitk.GetArrayViewFromImage(reoriented), reoriented.GetSpacing()[::-1],
                                    lr_axis, si_axis)
        prob = sitk.GetImageFromArray(mask.astype(np.float32))
        prob.CopyInformation(reoriented)
        source = "heuristic"
    seconds["spine"] = time.perf_counter() - t

    t = time.perf_counter()
    vx_xyz = sitk_spacing(cm.spacing, pm.transpose_forward)
    full = target_grid(reoriented, vx_xyz)
    if margin_mm is None:
        margin_mm = 0.5 * max(p * s for p, s in zip(model.patch_size, cm.spacing)) + 32.0
    start, stop = region_of(prob, start_threshold, full, margin_mm)
    grid = sub_grid(full, start, stop)
    ct = sitk.GetArrayFromImage(_resample(reoriented, grid, sitk.sitkLinear, ct_min, sitk.sitkFloat32))[None]
    props = {"sitk_stuff": {"spacing": grid.GetSpacing(), "origin": grid.GetOrigin(),
                            "direction": grid.GetDirection()},
             "spacing": [abs(s) for s in grid.GetSpacing()[::-1]]}
    preprocessor = cm.preprocessor_class(verbose=False)
    data_pp, _, pp_props = lean_preprocessing.run_case_npy(preprocessor, ct, copy.deepcopy(props), pm, cm,
                                                           model.dataset_json)
    del ct
    ct_pp = np.ascontiguousarray(data_pp[0], dtype=np.float32)
    del data_pp
    start_raw = sitk.GetArrayFromImage(_resample(prob, grid, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    start_prob = to_preprocessed_space(start_raw, pp_props, pm.transpose_forward, ct_pp.shape)
    seconds["preprocess"] = time.perf_counter() - t
    info = {"preprocessing": "converter", "grid_size": list(full.GetSize()), "region_start": list(start),
            "region_stop": list(stop), "margin_mm": round(float(margin_mm), 1)}
    return PreparedCase(ct_pp, start_prob, source, pp_props, grid, prob, info)
