"""ONNX export of a network for the CPU backends, cached beside its checkpoint and checked against torch.

The network is exported once (``torch.onnx.export``, TorchScript exporter, opset ``ONNX_OPSET``, dynamic batch and
spatial axes) and the file is cached **beside the checkpoint** (``{checkpoint stem}.vertkd-{key}.onnx`` in the fold
folder; the key hashes the weights, the network class, the torch version and ``EXPORT_VERSION``, so a retrained
checkpoint gets a new export); when that folder is not writable (e.g. the shipped model inside a read-only
installed package) the file goes to the user cache (``$VERTKD_CACHE_DIR``, else
``$XDG_CACHE_HOME/nnunet_vertkd/backends``, else ``~/.cache/nnunet_vertkd/backends``). Files are written to a
temporary name and renamed into place (``os.replace``), so concurrent runs never read half a file.

Every export is checked once against torch on random input of the example shape: the sigmoid (vertebra net) /
softmax (spine net) probabilities must agree within ``PROBABILITY_TOLERANCE`` (max abs difference); the result is
stored next to the export (``.json``) so later loads skip the check. Networks with data-dependent control flow
(the tracer warns) or that fail the check raise ``BackendError``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import warnings
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunet_vertkd.image_checks import folder_is_writable
from nnunet_vertkd.inference.backend_choice import BackendError, backend_installed
from nnunet_vertkd.inference.backend_runners import FirstOutput, OnnxRuntimeRunner, OpenVINORunner, Runner

#: max abs difference of probabilities accepted between an exported model and torch
PROBABILITY_TOLERANCE = 1e-3
ONNX_OPSET = 17
#: bump when the export changes (invalidates cached files)
EXPORT_VERSION = "1"


def user_cache_dir() -> str:
    if os.environ.get("VERTKD_CACHE_DIR"):
        return os.environ["VERTKD_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nnunet_vertkd", "backends")


def _writable(folder: str) -> bool:
    """``folder`` exists (created if need be) and a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return folder_is_writable(folder)


def cache_folder(preferred: Optional[str]) -> str:
    """``preferred`` (the checkpoint's folder) when writable, else the user cache dir (created)."""
    if preferred and _writable(preferred):
        return preferred
    folder = user_cache_dir()
    if not _writable(folder):
        folder = os.path.join(tempfile.gettempdir(), "nnunet_vertkd_backends")
        os.makedirs(folder, exist_ok=True)
    return folder


def network_key(net: torch.nn.Module, in_channels: int) -> str:
    """Hash of what the export depends on: weights and buffers, class, inputs, torch and export version."""
    h = hashlib.sha256()
    h.update(f"{type(net).__module__}.{type(net).__qualname__}|{in_channels}|{torch.__version__}|"
             f"{EXPORT_VERSION}|{ONNX_OPSET}".encode())
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(t.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()[:16]


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_onnx(net: torch.nn.Module, example_shape: Sequence[int], path: str) -> None:
    """Export ``net`` (eval, float32, CPU copy) to ONNX at ``path`` (atomic). Raises BackendError when the tracer
    reports data-dependent control flow (the export would be wrong for other inputs)."""
    model = FirstOutput(copy.deepcopy(net).float().cpu().eval())
    x = torch.zeros(tuple(int(s) for s in example_shape), dtype=torch.float32)
    dyn = {0: "batch", 2: "d0", 3: "d1", 4: "d2"}

    def write(tmp):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                torch.onnx.export(model, (x,), tmp, dynamo=False, input_names=["x"], output_names=["logits"],
                                  dynamic_axes={"x": dyn, "logits": dyn}, opset_version=ONNX_OPSET,
                                  do_constant_folding=True)
        torch_dir = os.path.dirname(torch.__file__)  # torch's own shape checks (instance norm, ...) are benign
        tracer = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)
                  and not os.path.abspath(w.filename).startswith(torch_dir)]
        if tracer:
            raise BackendError(f"{type(net).__name__} cannot be exported faithfully (data-dependent control flow: "
                               f"{tracer[0][:200]})")
    _atomic_write(path, write)


def probabilities(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare_to_torch(net: torch.nn.Module, runner: Runner, shape: Sequence[int], seed: int = 0) -> float:
    """Max abs difference of probabilities (sigmoid for one output, softmax otherwise) between ``runner`` and
    the torch network on standard-normal input of ``shape``."""
    x = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
    model = FirstOutput(net).eval()
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x).to(dev)).float().cpu().numpy()
    return float(np.abs(probabilities(runner(x)) - probabilities(ref)).max())


def exported_model(net: torch.nn.Module, example_shape: Sequence[int], cache_dir: Optional[str],
                   stem: str = "network", log: Callable[[str], None] = None) -> Tuple[str, dict]:
    """(path of the cached ONNX export, its info) for ``net``; exports and checks it if not cached."""
    folder = cache_folder(cache_dir)
    key = network_key(net, int(example_shape[1]))
    path = os.path.join(folder, f"{stem}.vertkd-{key}.onnx")
    info_path = path[:-len(".onnx")] + ".json"
    if os.path.isfile(path) and os.path.isfile(info_path):
        try:
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
            if info.get("key") == key:
                return path, info
        except (OSError, ValueError):
            pass
    if log:
        log(f"exporting {type(net).__name__} to ONNX once: {path}")
    try:
        export_onnx(net, example_shape, path)
    except BackendError:
        raise
    except Exception as e:  # an operator the exporter does not know, ...
        raise BackendError(f"{type(net).__name__} cannot be exported to ONNX: {type(e).__name__}: {e}") from e
    try:  # the check: onnxruntime if present (fast to load), else OpenVINO
        runner = (OnnxRuntimeRunner(path, torch.get_num_threads()) if backend_installed("onnxruntime")
                  else OpenVINORunner(path, torch.get_num_threads()))
        diff = compare_to_torch(net, runner, example_shape)
    except Exception as e:
        os.remove(path)
        raise BackendError(f"the ONNX export of {type(net).__name__} does not run: {type(e).__name__}: {e}") from e
    if not diff < PROBABILITY_TOLERANCE:
        os.remove(path)
        raise BackendError(f"the ONNX export of {type(net).__name__} differs from torch by {diff:.2e} "
                           f"(max abs probability difference; tolerance {PROBABILITY_TOLERANCE})")
    info = {"key": key, "network": type(net).__name__, "example_shape": list(example_shape),
            "max_abs_probability_difference": diff, "torch": torch.__version__, "opset": ONNX_OPSET}
    _atomic_write(info_path, lambda tmp: open(tmp, "w", encoding="utf-8").write(json.dumps(info, indent=1)))
    for name in os.listdir(folder):  # older exports of the same checkpoint (retrained weights)
        if name.startswith(f"{stem}.vertkd-") and not name.startswith(f"{stem}.vertkd-{key}") and \
                name.endswith((".onnx", ".json")):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    return path, info
