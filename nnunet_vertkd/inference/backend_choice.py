"""Which inference backend runs the networks: torch, OpenVINO or ONNX Runtime (``resolve_backend``).

``"auto"`` (or None) is torch on a GPU and, on the CPU, the first installed of ``CPU_PREFERENCE`` (fastest first);
a backend asked for by name must be installed and, for OpenVINO / ONNX Runtime, run on the CPU, else
``BackendError`` says what to install or which device to use.
"""
from __future__ import annotations

import importlib
from typing import List, Optional

import torch

BACKENDS = ("torch", "openvino", "onnxruntime")
#: order in which "auto" picks a CPU backend (fastest first; measured in docs/efficiency_whole_spine.md)
CPU_PREFERENCE = ("openvino", "onnxruntime", "torch")
PIP_HINTS = {"openvino": 'pip install "nnunet-vertkd[openvino]"  (or: pip install openvino onnx)',
             "onnxruntime": 'pip install "nnunet-vertkd[onnxruntime]"  (or: pip install onnxruntime onnx)'}


class BackendError(RuntimeError):
    """A backend that was asked for cannot be used (not installed, wrong device, network not exportable)."""


def backend_installed(name: str) -> bool:
    if name == "torch":
        return True
    if name not in BACKENDS:
        return False
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


def installed_backends() -> List[str]:
    return [b for b in BACKENDS if backend_installed(b)]


def backend_version(name: str) -> str:
    try:
        return f"{name} {importlib.import_module(name).__version__}"
    except Exception:
        return name


def resolve_backend(requested: Optional[str], device) -> str:
    """The backend to use: ``None``/"auto" = torch on a GPU, the first installed of ``CPU_PREFERENCE`` on the CPU.
    A named backend that is not installed, or a CPU-only backend on a GPU device, raises ``BackendError``."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    req = (requested or "auto").lower()
    if req == "auto":
        if dev.type != "cpu":
            return "torch"
        return next(b for b in CPU_PREFERENCE if backend_installed(b))
    if req not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}; choose from auto, {', '.join(BACKENDS)}")
    if req != "torch" and dev.type != "cpu":
        raise BackendError(f"backend {req!r} runs on the CPU only (device is {dev.type}); use -device cpu or "
                           f"--backend torch")
    if not backend_installed(req):
        raise BackendError(f"backend {req!r} is not installed: {PIP_HINTS[req]}; installed: "
                           f"{', '.join(installed_backends())}")
    return req
