"""The last feature maps of the encoder and the decoder of a U-Net, recorded with forward hooks (the inputs of the
intermediate terms of multi-teacher distillation, ``losses.multi_teacher``)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

FEATURE_LAYERS = ("encoder", "decoder")


def feature_layer_modules(network: nn.Module) -> Dict[str, nn.Module]:
    """The modules whose outputs are the last feature maps of the encoder (bottleneck) and of the decoder (before
    the 1x1x1 head): ``encoder.stages[-1]`` and ``decoder.stages[-1]`` (VertKDUNet and nnU-Net's U-Nets)."""
    try:
        return {"encoder": network.encoder.stages[-1], "decoder": network.decoder.stages[-1]}
    except (AttributeError, IndexError, TypeError) as e:
        raise TypeError(f"{type(network).__name__} has no encoder.stages / decoder.stages: intermediate "
                        f"distillation needs a U-Net like VertKDUNet or nnU-Net's PlainConvUNet") from e


class FeatureRecorder:
    """Forward hooks that keep the latest output of the feature layers of one network."""

    def __init__(self, network: nn.Module, layers: Sequence[str] = FEATURE_LAYERS):
        modules = feature_layer_modules(network)
        self.features: Dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in layers]

    def _hook(self, name):
        def hook(_module, _inputs, output):
            self.features[name] = output
        return hook

    def take(self, layers: Sequence[str] = FEATURE_LAYERS) -> List[torch.Tensor]:
        missing = [n for n in layers if n not in self.features]
        if missing:
            raise RuntimeError(f"feature layers {missing} were not recorded (forward not run?)")
        return [self.features.pop(n) for n in layers]

    def clear(self):
        self.features.clear()

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()
