"""Per-vertebra evidence for the label decoder: a small 3D CNN that looks at one vertebra in its context.

Input: two channels of a cube of ``patch_size`` voxels (144 mm at the 3 mm the recipe uses) of nnU-Net's
preprocessed space, centred on the vertebra's centre of mass: the normalised CT and the vertebra's own mask
(which of the vertebrae in view is meant). The cube is large enough to show the cues that name a vertebra: ribs
beside the thoracic ones (and beside a T13, none beside L1 or an L6), the sacrum below the last lumbar one, the
skull base above C1, the dens of C2, the size and shape of the vertebra and of its neighbours. Output: 26 logits,
one per label in cranio-caudal order (the consecutive labels of the vertebra dataset, 1 = C1 ... 20 = T13 ...
26 = L6, i.e. ``decoder.STATES``). The decoder combines the softmax rows of all vertebrae of a scan.

Shared by the trainer (``nnunet_vertkd.trainers.label_classifier``) and inference (``labeller``), so both cut the
patches the same way. numpy + torch only.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage
from torch import nn

N_CLASSES = 26
DEFAULT_FEATURES = (16, 32, 64, 96)


class VertebraLabelNet(nn.Module):
    """Strided 3D CNN: per level conv(stride 2) + conv, instance norm, leaky ReLU; global average pooling; linear
    layer to 26 logits."""

    def __init__(self, in_channels: int = 2, n_classes: int = N_CLASSES, features: Sequence[int] = DEFAULT_FEATURES,
                 dropout: float = 0.2):
        super().__init__()
        layers = []
        c = in_channels
        for f in features:
            layers += [nn.Conv3d(c, f, 3, stride=2, padding=1), nn.InstanceNorm3d(f, affine=True),
                       nn.LeakyReLU(0.01, inplace=True),
                       nn.Conv3d(f, f, 3, padding=1), nn.InstanceNorm3d(f, affine=True),
                       nn.LeakyReLU(0.01, inplace=True)]
            c = f
        self.encoder = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool3d(x, 1), 1)
        return self.head(self.dropout(x))


def vertebra_centres(seg: np.ndarray, labels: Sequence[int]) -> Dict[int, np.ndarray]:
    """{label: centre of mass (voxel coordinates)} of the given labels of an instance array."""
    seg = np.asarray(seg)
    labels = [int(v) for v in labels]
    if not labels:
        return {}
    coms = ndimage.center_of_mass(np.ones(seg.shape, dtype=np.uint8), seg, labels)
    return {lab: np.asarray(c, dtype=np.float64) for lab, c in zip(labels, coms) if np.all(np.isfinite(c))}


def extract_patch(ct: np.ndarray, seg: np.ndarray, label: int, centre: Sequence[float],
                  patch_size: Sequence[int], pad_value: float, shift: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """(2, *patch_size) float32: CT (``pad_value`` outside the volume) and the mask of ``label``, the cube centred on
    ``centre`` (+ an integer ``shift``)."""
    patch_size = np.asarray(patch_size, dtype=int)
    start = np.floor(np.asarray(centre, dtype=np.float64) + 0.5).astype(int) - patch_size // 2 + np.asarray(shift, int)
    out = np.empty((2, *patch_size), dtype=np.float32)
    out[0] = pad_value
    out[1] = 0.0
    src, dst = [], []
    for d in range(3):
        lo, hi = start[d], start[d] + patch_size[d]
        s0, s1 = max(lo, 0), min(hi, ct.shape[d])
        if s1 <= s0:
            return out
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    src, dst = tuple(src), tuple(dst)
    out[0][dst] = ct[src]
    out[1][dst] = (seg[src] == label)
    return out


@torch.no_grad()
def predict_probabilities(network: nn.Module, patches: np.ndarray, device: torch.device,
                          left_right_axis: int = None, batch_size: int = 8) -> np.ndarray:
    """Softmax (N, 26) of the network on (N, 2, *patch) patches; with ``left_right_axis`` (spatial axis 0..2) the
    left-right mirrored patch is averaged in (test-time mirroring)."""
    network.eval()
    out = []
    for i in range(0, len(patches), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(patches[i:i + batch_size])).to(device)
        p = torch.softmax(network(x).float(), dim=1)
        if left_right_axis is not None:
            p = 0.5 * (p + torch.softmax(network(torch.flip(x, (2 + int(left_right_axis),))).float(), dim=1))
        out.append(p.cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, N_CLASSES))


def likelihood_prior(label_frequencies, uniform_mix: float = 0.5) -> np.ndarray:
    """The prior the decoder divides the classifier's posteriors by: the training frequencies of the labels mixed
    with the uniform distribution (``uniform_mix``), so that a label seen rarely in training (T13, L6) is not
    inflated without bound; always positive."""
    f = np.asarray(label_frequencies, dtype=np.float64)
    f = f / f.sum() if f.sum() > 0 else np.full(N_CLASSES, 1.0 / N_CLASSES)
    return (1.0 - uniform_mix) * f + uniform_mix / N_CLASSES


def patch_size_for(spacing_mm: Sequence[float], field_of_view_mm: float = 144.0) -> Tuple[int, int, int]:
    """Patch size (voxels, multiple of 16) that covers ``field_of_view_mm`` at the given spacing."""
    return tuple(int(max(16, 16 * round(field_of_view_mm / float(s) / 16))) for s in spacing_mm)
