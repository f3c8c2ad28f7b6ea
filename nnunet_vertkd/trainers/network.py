"""Networks of the vertebra segmentation step (and the spine step) of Serrador et al. 2024.

``VertKDUNet`` is the paper's 3D U-Net: 4 levels, two (3x3x3 conv -> BatchNorm3d -> ReLU) blocks per level in
encoder and decoder, 2x2x2 max pooling down, nearest-neighbour upsampling up (as the paper states), skip
connections by concatenation, and a 1x1x1 output convolution producing logits.

Parameter counts (``count_parameters``, including the two extra 1x1x1 deep-supervision heads, 98 / 50
parameters, that always exist so checkpoints load with deep supervision on or off):

=========================  ===========  ==========  ===================
net                        features     in -> out   parameters
=========================  ===========  ==========  ===================
teacher (paper: 1.48 M)    16-32-64-128  2 -> 1      1,461,523
student (paper: 0.37 M)    8-16-32-64    2 -> 1        366,155
spine   (paper: 0.35 M)    8-16-32-64    1 -> 1        365,939
=========================  ===========  ==========  ===================

Transposed-convolution upsampling would give 1.40 M / 0.35 M instead; the paper says nearest neighbour and the
nearest-neighbour counts are the closer match for the vertebra nets (teacher -1.3 %, student -1.0 %).

Deep supervision follows nnU-Net's convention: ``forward`` returns a list of logits, highest resolution first
([full, 1/2, 1/4] for 4 levels, i.e. one output per decoder stage), when ``self.decoder.deep_supervision`` is
True; otherwise a single tensor. nnU-Net's ``nnUNetTrainer.set_deep_supervision_enabled`` sets
``network.decoder.deep_supervision`` and therefore works unchanged.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

TEACHER_FEATURES = (16, 32, 64, 128)
STUDENT_FEATURES = (8, 16, 32, 64)
SPINE_FEATURES = (8, 16, 32, 64)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (trainable and frozen; BatchNorm running statistics are buffers and
    are not counted)."""
    return int(sum(p.numel() for p in module.parameters()))


class ConvBlock(nn.Sequential):
    """Two consecutive (3x3x3 conv, padding 1, with bias) -> BatchNorm3d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class VertKDEncoder(nn.Module):
    def __init__(self, in_channels: int, features: Sequence[int]):
        super().__init__()
        blocks = []
        prev = in_channels
        for f in features:
            blocks.append(ConvBlock(prev, f))
            prev = f
        self.stages = nn.ModuleList(blocks)
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        skips = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        return skips  # highest resolution first, bottleneck last


class VertKDDecoder(nn.Module):
    """Decoder with nearest-neighbour upsampling (to the exact size of the skip, so odd sizes work) and one
    1x1x1 logits head per decoder stage. ``deep_supervision`` is the attribute nnU-Net toggles."""

    def __init__(self, features: Sequence[int], out_channels: int, deep_supervision: bool = False):
        super().__init__()
        self.deep_supervision = bool(deep_supervision)
        n = len(features)
        # stages[s] produces features[n-2-s] channels: ordered from lowest to highest resolution (like nnU-Net)
        self.stages = nn.ModuleList(
            ConvBlock(features[lvl + 1] + features[lvl], features[lvl]) for lvl in range(n - 2, -1, -1))
        self.seg_layers = nn.ModuleList(
            nn.Conv3d(features[lvl], out_channels, kernel_size=1, bias=True) for lvl in range(n - 2, -1, -1))

    def forward(self, skips: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        x = skips[-1]
        outputs = []
        n_dec = len(self.stages)
        for s, (stage, head) in enumerate(zip(self.stages, self.seg_layers)):
            skip = skips[-(s + 2)]
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = stage(torch.cat((x, skip), dim=1))
            if self.deep_supervision or s == n_dec - 1:
                outputs.append(head(x))
        if not self.deep_supervision:
            return outputs[-1]
        return outputs[::-1]  # highest resolution first


class VertKDUNet(nn.Module):
    """The paper's 3D U-Net. (B, in_channels, *S) -> logits (B, out_channels, *S), or a list of logits at
    [S, S/2, S/4, ...] when deep supervision is enabled. Any spatial size works (sizes divisible by
    2**(levels-1) give exact halvings)."""

    def __init__(self, in_channels: int = 2, out_channels: int = 1, features: Sequence[int] = TEACHER_FEATURES,
                 deep_supervision: bool = False):
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ValueError("VertKDUNet needs at least 2 levels")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.features = features
        self.encoder = VertKDEncoder(self.in_channels, features)
        self.decoder = VertKDDecoder(features, self.out_channels, deep_supervision)

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        self.decoder.deep_supervision = bool(enabled)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        return self.decoder(self.encoder(x))


def deep_supervision_scales(num_levels: int, ndim: int = 3) -> List[List[float]]:
    """Scales of the deep-supervision outputs of a ``VertKDUNet`` with ``num_levels`` levels in nnU-Net's format
    (``[[1,1,1],[0.5,0.5,0.5],...]``, one per decoder stage, highest resolution first) -- what nnU-Net's
    ``_get_deep_supervision_scales`` returns for a plan with ``num_levels`` stages of stride 2."""
    return [[1.0 / 2 ** i] * ndim for i in range(num_levels - 1)]


def build_planned_network_with_memory(plans_manager, configuration_manager, num_input_channels: int = 2,
                                      num_output_channels: int = 1, enable_deep_supervision: bool = True
                                      ) -> nn.Module:
    """The architecture nnU-Net planned for the dataset (``configuration_manager.network_arch_class_name`` with
    its init kwargs, e.g. PlainConvUNet), but with ``num_input_channels`` inputs (CT + memory) and
    ``num_output_channels`` logits (the target vertebra). Its deep-supervision outputs follow the plan's
    ``pool_op_kernel_sizes`` exactly as for stock nnU-Net."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=enable_deep_supervision)
