"""Inference backends for the loop's patch predictor and the spine step: torch, OpenVINO, ONNX Runtime.

    backend = resolve_backend("auto", device)        # "torch" on a GPU; on the CPU the fastest installed
    runner = make_runner(net, backend, device, num_threads, example_shape=(1, 2, 128, 128, 128),
                         cache_dir=fold_folder)
    logits = runner(x)                                # x: (B, C, *S) float32 numpy -> (B, C_out, *S) float32

The pieces: the choice of backend (``backend_choice``: ``resolve_backend``, ``BackendError``), the runtime
sessions (``backend_runners``: ``TorchRunner``, ``OpenVINORunner``, ``OnnxRuntimeRunner``), the cached and checked
ONNX export the CPU backends run (``onnx_export``: ``exported_model``, ``PROBABILITY_TOLERANCE``). This module puts
them together: runners for every fold (``make_runners``; with ``"auto"`` a network that cannot be exported falls
back to torch with a message, an explicitly requested backend raises ``BackendError``), the loop's patch predictor
on any backend (``BackendPatchPredictor``, ``vertebra_patch_predictor``) and an ``nnUNetPredictor`` whose network
runs on a backend (``attach_to_nnunet_predictor``, the spine step). OpenVINO / ONNX Runtime are optional extras
(``pip install "nnunet-vertkd[openvino]"`` or ``"[onnxruntime]"``) and run on the CPU only.
"""
from __future__ import annotations

import copy
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunet_vertkd.inference.backend_choice import (  # noqa: F401  (re-exported)
    BACKENDS, CPU_PREFERENCE, BackendError, backend_installed, backend_version, installed_backends, resolve_backend)
from nnunet_vertkd.inference.backend_runners import (  # noqa: F401  (re-exported)
    OnnxRuntimeRunner, OpenVINORunner, Runner, TorchRunner)
from nnunet_vertkd.inference.onnx_export import (  # noqa: F401  (re-exported)
    EXPORT_VERSION, ONNX_OPSET, PROBABILITY_TOLERANCE, cache_folder, compare_to_torch, export_onnx, exported_model,
    network_key, probabilities, user_cache_dir)


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
