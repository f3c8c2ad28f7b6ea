"""Inference backends for the loop's patch predictor and the spine step: torch, OpenVINO, ONNX Runtime.

    backend = resolve_backend("auto", device)        # "torch" on a GPU; on the CPU the fastest installed
    runner = make_runner(net, backend, device, cache_dir=fold_folder, example_shape=(1, 2, 128, 128, 128))
    logits = runner(x)                                # x: (B, C, *S) float32 numpy -> (B, C_out, *S) float32

* ``torch``: the network as loaded (eager; on the CPU in ``channels_last_3d`` memory format, which is faster for
  3D convolutions on x86 and gives the same numbers up to float rounding).
* ``openvino`` / ``onnxruntime`` (CPU only, optional: ``pip install "nnunet-vertkd[openvino]"`` or
  ``"[onnxruntime]"``): the network is exported once to ONNX (``torch.onnx.export``, TorchScript exporter, opset
  ``ONNX_OPSET``, dynamic batch and spatial axes) and the file is cached **beside the checkpoint**
  (``{checkpoint stem}.vertkd-{key}.onnx`` in the fold folder; the key hashes the weights, the network class,
  the torch version and this module's export version, so a retrained checkpoint gets a new export); when that
  folder is not writable (e.g. the shipped model inside a read-only installed package) the file goes to the
  user cache (``$VERTKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnunet_vertkd/backends``, else
  ``~/.cache/nnunet_vertkd/backends``). Files are written to a temporary name and renamed into place
  (``os.replace``), so concurrent runs never read half a file.

Every export is checked once against torch on random input of the example shape: the sigmoid (vertebra net) /
softmax (spine net) probabilities must agree within ``PROBABILITY_TOLERANCE`` (max abs difference); the result is
stored next to the export (``.json``) so later loads skip the check. Networks with data-dependent control flow
(the tracer warns) or that fail the check cannot use these backends: ``"auto"`` then falls back to torch with a
message, an explicitly requested backend raises ``BackendError``.

OpenVINO compiles the model for each input shape it sees (the loop always sends one patch shape, batch 1, or 2
with mirroring), in float32 (``INFERENCE_PRECISION_HINT=f32``: no bf16 on CPUs that have it, so outputs stay
within the tolerance).
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import sys
import tempfile
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

BACKENDS = ("torch", "openvino", "onnxruntime")
#: order in which "auto" picks a CPU backend (fastest first; measured in docs/efficiency_whole_spine.md)
CPU_PREFERENCE = ("openvino", "onnxruntime", "torch")
#: max abs difference of probabilities accepted between an exported model and torch
PROBABILITY_TOLERANCE = 1e-3
ONNX_OPSET = 17
#: bump when the export changes (invalidates cached files)
EXPORT_VERSION = "1"
_PIP_HINT = {"openvino": 'pip install "nnunet-vertkd[openvino]"  (or: pip install openvino onnx)',
             "onnxruntime": 'pip install "nnunet-vertkd[onnxruntime]"  (or: pip install onnxruntime onnx)'}

Runner = Callable[[np.ndarray], np.ndarray]


class BackendError(RuntimeError):
    """A backend that was asked for cannot be used (not installed, wrong device, network not exportable)."""


# ---------------------------------------------------------------------------------------------------- choice
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
        raise BackendError(f"backend {req!r} is not installed: {_PIP_HINT[req]}; installed: "
                           f"{', '.join(installed_backends())}")
    return req


# ---------------------------------------------------------------------------------------------------- cache
def user_cache_dir() -> str:
    if os.environ.get("VERTKD_CACHE_DIR"):
        return os.environ["VERTKD_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nnunet_vertkd", "backends")


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".vertkd_probe", dir=folder)
        os.close(fd)
        os.remove(probe)
        return True
    except OSError:
        return False


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


# ---------------------------------------------------------------------------------------------------- export
class _FirstOutput(torch.nn.Module):
    """Deep supervision left on: keep the full-resolution output (what the predictors use)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def export_onnx(net: torch.nn.Module, example_shape: Sequence[int], path: str) -> None:
    """Export ``net`` (eval, float32, CPU copy) to ONNX at ``path`` (atomic). Raises BackendError when the tracer
    reports data-dependent control flow (the export would be wrong for other inputs)."""
    model = _FirstOutput(copy.deepcopy(net).float().cpu().eval())
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


def _probabilities(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare_to_torch(net: torch.nn.Module, runner: Runner, shape: Sequence[int], seed: int = 0) -> float:
    """Max abs difference of probabilities (sigmoid for one output, softmax otherwise) between ``runner`` and
    the torch network on standard-normal input of ``shape``."""
    x = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
    model = _FirstOutput(net).eval()
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x).to(dev)).float().cpu().numpy()
    return float(np.abs(_probabilities(runner(x)) - _probabilities(ref)).max())


# ---------------------------------------------------------------------------------------------------- runners
class TorchRunner:
    """The torch network; on the CPU in channels_last_3d memory format (same numbers, faster convolutions)."""

    def __init__(self, net: torch.nn.Module, device, channels_last: Optional[bool] = None):
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.net = _FirstOutput(net).eval()
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


def make_runner(net: torch.nn.Module, backend: str, device, num_threads: int, example_shape: Sequence[int],
                cache_dir: Optional[str] = None, stem: str = "network", log: Callable[[str], None] = None
                ) -> Runner:
    """A runner for one network on ``backend`` (already resolved). ``cache_dir``: the checkpoint's folder."""
    if backend == "torch":
        return TorchRunner(net, device)
    path, _ = exported_model(net, example_shape, cache_dir, stem, log)
    if backend == "openvino":
        runner = OpenVINORunner(path, num_threads)
        runner._compiled(tuple(int(s) for s in example_shape))  # compile now (model loading), not in the first call
        return runner
    return OnnxRuntimeRunner(path, num_threads)


def make_runners(nets: Sequence[torch.nn.Module], backend: Optional[str], device, num_threads: int,
                 example_shape: Sequence[int], cache_dirs: Sequence[Optional[str]], stem: str = "network",
                 log: Callable[[str], None] = None) -> Tuple[List[Runner], str]:
    """Runners for every fold's network and the backend actually used: with ``backend`` None/"auto" a network
    that cannot be exported falls back to torch (said through ``log``); a named backend raises instead."""
    requested = (backend or "auto").lower()
    chosen = resolve_backend(requested, device)
    cache_dirs = (list(cache_dirs) + [None] * len(nets))[:len(nets)]
    if chosen != "torch":
        try:
            return [make_runner(n, chosen, device, num_threads, example_shape, d, stem, log)
                    for n, d in zip(nets, cache_dirs)], chosen
        except BackendError as e:
            if requested != "auto":
                raise
            if log:
                log(f"backend {chosen} not usable ({e}); using torch")
    return [TorchRunner(n, device) for n in nets], "torch"


# ---------------------------------------------------------------------------------------------------- predictors
def _expit(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit
    return expit(x)


class BackendPatchPredictor:
    """``predict_patch`` for the loop on any backend, with ``PatchPredictor``'s conventions: (2, *patch) float32 ->
    (*patch) sigmoid probabilities, folds averaged, with ``mirror_axis`` also the patch flipped along the
    left-right axis (both views as one batch of 2)."""

    def __init__(self, runners: Sequence[Runner], mirror_axis: Optional[int] = None, backend: str = "torch"):
        self.runners = list(runners)
        self.mirror_axis = mirror_axis
        self.backend = backend
        self.n_calls = 0

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        x = np.asarray(patch, dtype=np.float32)[None]
        if self.mirror_axis is not None:
            x = np.concatenate([x, np.flip(x, axis=self.mirror_axis + 2)])
        prob = None
        for run in self.runners:
            p = _expit(run(x)[:, 0])
            p = (p[0] + np.flip(p[1], axis=self.mirror_axis)) / 2 if self.mirror_axis is not None else p[0]
            prob = p if prob is None else prob + p
        self.n_calls += 1
        return (prob / len(self.runners)).astype(np.float32, copy=False)


def vertebra_patch_predictor(model, device, mirror_axis: Optional[int], backend: Optional[str], num_threads: int,
                             checkpoint_name: str = "checkpoint_final.pth", log: Callable[[str], None] = None
                             ) -> BackendPatchPredictor:
    """The loop's patch predictor for a ``LoadedModel`` (``model_loading.load_vertebra_model``)."""
    dirs = [os.path.join(model.folder, f"fold_{f}") for f in model.folds]
    shape = (1 if mirror_axis is None else 2, 2, *[int(p) for p in model.patch_size])
    runners, used = make_runners(model.networks, backend, device, num_threads, shape, dirs,
                                 os.path.splitext(checkpoint_name)[0], log)
    return BackendPatchPredictor(runners, mirror_axis, used)


class _RunnerModule(torch.nn.Module):
    """Stands in for the network inside an ``nnUNetPredictor``: ``load_state_dict(params)`` selects the runner
    made from those parameters (nnU-Net loads each fold's parameters before its sliding window)."""

    def __init__(self, pairs: Sequence[Tuple[dict, Runner]]):
        super().__init__()
        self._pairs = list(pairs)
        self._current = self._pairs[0][1]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        for params, runner in self._pairs:
            if params is state_dict:
                self._current = runner
                return None
        raise RuntimeError("parameters not prepared for this backend")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._current(x.detach().float().cpu().numpy()))


def attach_to_nnunet_predictor(predictor, backend: Optional[str], device, num_threads: int,
                               fold_dirs: Sequence[Optional[str]], checkpoint_name: str = "checkpoint_final.pth",
                               log: Callable[[str], None] = None) -> str:
    """Run an initialised ``nnUNetPredictor``'s network on ``backend``: one runner per fold (its parameters
    loaded into a copy of the network), swapped in as ``predictor.network``. Returns the backend used."""
    chosen = resolve_backend(backend, device)
    if chosen == "torch":
        return "torch"
    base = predictor.network
    base = getattr(base, "_orig_mod", base)
    nets = []
    for params in predictor.list_of_parameters:
        n = copy.deepcopy(base).cpu().eval()
        n.load_state_dict(params)
        nets.append(n)
    n_in = len(predictor.dataset_json.get("channel_names", {"0": "CT"}))
    shape = (1, n_in, *[int(p) for p in predictor.configuration_manager.patch_size])
    runners, used = make_runners(nets, backend, device, num_threads, shape, list(fold_dirs),
                                 os.path.splitext(checkpoint_name)[0], log)
    if used != "torch":
        predictor.network = _RunnerModule(list(zip(predictor.list_of_parameters, runners)))
    return used


def _stderr(msg: str) -> None:
    print(f"vertkd backends: {msg}", file=sys.stderr, flush=True)
