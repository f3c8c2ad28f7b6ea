"""Runtime sessions of one network: ``runner(x)`` maps (B, C, *S) float32 numpy to (B, C_out, *S) float32 logits.

* ``TorchRunner``: the network as loaded (eager; on the CPU in ``channels_last_3d`` memory format, which is faster
  for 3D convolutions on x86 and gives the same numbers up to float rounding).
* ``OnnxRuntimeRunner``, ``OpenVINORunner``: an ONNX export (``onnx_export``) on the CPU. OpenVINO compiles the
  model for each input shape it sees (the loop always sends one patch shape, batch 1, or 2 with mirroring), in
  float32 (``INFERENCE_PRECISION_HINT=f32``: no bf16 on CPUs that have it, so outputs stay within the tolerance).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

Runner = Callable[[np.ndarray], np.ndarray]


class FirstOutput(torch.nn.Module):
    """Deep supervision left on: keep the full-resolution output (what the predictors use)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


class TorchRunner:
    """The torch network; on the CPU in channels_last_3d memory format (same numbers, faster convolutions)."""

    def __init__(self, net: torch.nn.Module, device, channels_last: Optional[bool] = None):
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.net = FirstOutput(net).eval()
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            out = self.net(t)
        return out.float().contiguous().cpu().numpy()


class OnnxRuntimeRunner:
    def __init__(self, onnx_path: str, num_threads: int):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


class OpenVINORunner:
    """OpenVINO on the CPU, one compiled model per input shape, float32, latency mode."""

    def __init__(self, onnx_path: str, num_threads: int):
        import openvino as ov
        self.core = ov.Core()
        self.path = onnx_path
        self.config = {"INFERENCE_NUM_THREADS": int(num_threads), "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled: Dict[Tuple[int, ...], object] = {}

    def _compiled(self, shape: Tuple[int, ...]):
        c = self.compiled.get(shape)
        if c is None:
            model = self.core.read_model(self.path)
            model.reshape({0: list(shape)})
            c = self.core.compile_model(model, "CPU", self.config)
            self.compiled[shape] = c
        return c

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = self._compiled(tuple(x.shape))
        return np.asarray(request(x)[0])
