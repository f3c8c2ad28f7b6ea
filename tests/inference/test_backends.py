"""Inference backends (nnunet_vertkd/inference/backends.py and the modules it puts together: backend_choice,
backend_runners, onnx_export): equal outputs, cache, choice, messages.

The OpenVINO / ONNX Runtime tests are skipped when those optional extras are not installed. Patches are tiny
(16^3) so the file runs in seconds.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch

from nnunet_vertkd.inference import backend_choice, onnx_export
from nnunet_vertkd.inference import backends as B
from nnunet_vertkd.inference.model_loading import PatchPredictor
from nnunet_vertkd.trainers.network import STUDENT_FEATURES, VertKDUNet

EXPORTED = [b for b in ("openvino", "onnxruntime") if B.backend_installed(b)]
needs_export = pytest.mark.skipif(not EXPORTED or importlib.util.find_spec("onnx") is None,
                                  reason="neither openvino nor onnxruntime (+ onnx) installed")
PATCH = (16, 16, 16)


@pytest.fixture(autouse=True)
def _threads(monkeypatch, tmp_path):
    monkeypatch.setenv("VERTKD_CACHE_DIR", str(tmp_path / "user_cache"))
    torch.set_num_threads(1)


def student(seed=0):
    torch.manual_seed(seed)
    net = VertKDUNet(2, 1, STUDENT_FEATURES).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained net
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def random_patch(seed=1, channels=2, shape=PATCH):
    return np.random.default_rng(seed).standard_normal((channels, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ choice
def test_auto_choice(monkeypatch):
    assert B.resolve_backend("auto", torch.device("cuda")) == "torch"
    assert B.resolve_backend(None, "cpu") == next(b for b in B.CPU_PREFERENCE if B.backend_installed(b))
    monkeypatch.setattr(backend_choice, "backend_installed", lambda name: name == "torch")
    assert B.resolve_backend("auto", "cpu") == "torch"


def test_missing_backend_message(monkeypatch):
    monkeypatch.setattr(backend_choice, "backend_installed", lambda name: name == "torch")
    with pytest.raises(B.BackendError, match=r"'openvino' is not installed: pip install \"nnunet-vertkd\[openvino\]\""):
        B.resolve_backend("openvino", "cpu")
    with pytest.raises(B.BackendError, match="onnxruntime.*not installed"):
        B.resolve_backend("onnxruntime", "cpu")
    with pytest.raises(B.BackendError, match="unknown backend"):
        B.resolve_backend("tensorrt", "cpu")


def test_cpu_only_backends_refuse_gpu():
    with pytest.raises(B.BackendError, match="CPU only"):
        B.resolve_backend("onnxruntime", torch.device("cuda"))


def test_predictor_and_cli_report_missing_backend(monkeypatch):
    from nnunet_vertkd.inference import cli
    from nnunet_vertkd.inference.predictor import VertKDPredictor
    monkeypatch.setattr(backend_choice, "backend_installed", lambda name: name == "torch")
    with pytest.raises(B.BackendError, match="pip install"):
        VertKDPredictor(device=torch.device("cpu"), backend="openvino")
    assert "--backend" in cli.build_parser().format_help()


# ------------------------------------------------------------------------------------------------ torch
def test_torch_channels_last_equals_eager():
    net = student()
    x = random_patch()[None]
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    out = B.TorchRunner(net, "cpu")(x)
    assert np.abs(B.probabilities(out) - B.probabilities(ref)).max() < 1e-5


def test_backend_patch_predictor_torch_equals_patch_predictor():
    nets = [student(0), student(1)]
    x = random_patch()
    ref = PatchPredictor(nets, torch.device("cpu"), mirror_axis=2)(x)
    got = B.BackendPatchPredictor([B.TorchRunner(n, "cpu", channels_last=False) for n in nets], 2)(x)
    assert got.shape == PATCH and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------ exported
@needs_export
@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize("mirror", [None, 2])
def test_exported_outputs_equal_torch(backend, mirror, tmp_path):
    """The stated tolerance: max abs difference of probabilities < 1e-3 (observed ~1e-7), folds averaged and
    mirroring as PatchPredictor does them."""
    nets = [student(0), student(1)]
    dirs = [str(tmp_path / "fold_0"), str(tmp_path / "fold_1")]
    runners, used = B.make_runners(nets, backend, "cpu", 1, (1, 2, *PATCH), dirs, "checkpoint_final")
    assert used == backend
    for seed in (1, 2):
        x = random_patch(seed)
        ref = PatchPredictor(nets, torch.device("cpu"), mirror_axis=mirror)(x)
        got = B.BackendPatchPredictor(runners, mirror, backend)(x)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() < B.PROBABILITY_TOLERANCE
    # other spatial sizes work too (dynamic axes)
    x = random_patch(3, shape=(24, 16, 32))[None]
    with torch.inference_mode():
        ref = nets[0](torch.from_numpy(x)).numpy()
    assert np.abs(B.probabilities(runners[0](x)) - B.probabilities(ref)).max() < B.PROBABILITY_TOLERANCE


@needs_export
def test_export_cached_beside_checkpoint_once(tmp_path):
    net = student()
    fold = tmp_path / "fold_all"
    fold.mkdir()
    logs = []
    path, info = B.exported_model(net, (1, 2, *PATCH), str(fold), "checkpoint_final", logs.append)
    assert os.path.dirname(path) == str(fold) and os.path.basename(path).startswith("checkpoint_final.vertkd-")
    assert info["max_abs_probability_difference"] < B.PROBABILITY_TOLERANCE and len(logs) == 1
    mtime = os.path.getmtime(path)
    path2, _ = B.exported_model(net, (1, 2, *PATCH), str(fold), "checkpoint_final", logs.append)
    assert path2 == path and os.path.getmtime(path) == mtime and len(logs) == 1  # not exported again
    assert not [n for n in os.listdir(fold) if ".tmp" in n]  # no temporaries left
    # other weights (a retrained checkpoint): a new export, the stale one removed
    path3, _ = B.exported_model(student(5), (1, 2, *PATCH), str(fold), "checkpoint_final", logs.append)
    assert path3 != path and not os.path.exists(path) and os.path.exists(path3)


@needs_export
def test_read_only_model_folder_uses_user_cache(tmp_path, monkeypatch):
    fold = tmp_path / "package" / "fold_all"
    fold.mkdir(parents=True)
    real = onnx_export._writable
    monkeypatch.setattr(onnx_export, "_writable", lambda folder: False if str(folder) == str(fold) else real(folder))
    path, _ = B.exported_model(student(), (1, 2, *PATCH), str(fold), "checkpoint_final")
    assert os.path.dirname(path) == str(tmp_path / "user_cache") and os.listdir(fold) == []


class DataDependent(torch.nn.Module):
    """Control flow on values (like the tests' stand-in network): a trace would freeze it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        k = int((x[:, 0] > 0).sum()) % 3
        return x[:, :1] * self.w * k


@needs_export
def test_not_exportable_falls_back_to_torch_on_auto(tmp_path):
    logs = []
    runners, used = B.make_runners([DataDependent()], "auto", "cpu", 1, (1, 2, *PATCH), [str(tmp_path)], "c",
                                   logs.append)
    assert used == "torch" and isinstance(runners[0], B.TorchRunner) and "using torch" in logs[-1]
    with pytest.raises(B.BackendError, match="cannot be exported"):
        B.make_runners([DataDependent()], EXPORTED[0], "cpu", 1, (1, 2, *PATCH), [str(tmp_path)], "c")
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".onnx")]


@needs_export
@pytest.mark.parametrize("backend", EXPORTED)
def test_nnunet_predictor_network_on_backend(backend, tmp_path):
    """The spine step: a stock nnUNetPredictor (tiny PlainConvUNet, two folds) on the backend gives nnU-Net's
    probabilities within the tolerance."""
    from helpers import stand_in_model as h
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm = PlansManager(h.plans_dict((4.0, 4.0, 4.0), (16, 16, 16)))
    cm = pm.get_configuration("3d_fullres")
    params = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        params.append(get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                             cm.network_arch_init_kwargs_req_import, 1, 2, allow_init=True,
                                             deep_supervision=False).state_dict())
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spine": 1}, "file_ending": ".nii.gz"}

    def predictor():
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, 1, 2, allow_init=True,
                                     deep_supervision=False)
        p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, device=torch.device("cpu"),
                            perform_everything_on_device=False, allow_tqdm=False)
        p.manual_initialization(net, pm, cm, params, dataset_json, "nnUNetTrainer", (0, 1, 2))
        return p

    data = np.random.default_rng(0).normal(0, 300, size=(1, 20, 24, 28)).astype(np.float32)
    props = {"spacing": [4.0, 4.0, 4.0]}
    _, ref = predictor().predict_single_npy_array(data, dict(props), None, None, True)
    p = predictor()
    used = B.attach_to_nnunet_predictor(p, backend, "cpu", 1, [str(tmp_path / "f0"), str(tmp_path / "f1")])
    assert used == backend and isinstance(p.network, B._RunnerModule)
    _, got = p.predict_single_npy_array(data, dict(props), None, None, True)
    assert np.abs(np.asarray(got) - np.asarray(ref)).max() < B.PROBABILITY_TOLERANCE
