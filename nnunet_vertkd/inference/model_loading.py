"""Load a trained vertebra model (standard nnU-Net results folder) for the iterative loop.

Folder layout (nnU-Net's): ``MODEL/dataset.json``, ``MODEL/plans.json``, ``MODEL/fold_F/CHECKPOINT``. The trainer
class is looked up by ``checkpoint['trainer_name']`` (``ext_trainers_path.find_trainer_class``: the plugin's classes,
then nnU-Net's lookup with the plugin's folder added to ``nnUNet_extTrainer``), the network is built with
``trainer_class.build_network_architecture(plans_manager, configuration_manager, 2, 1,
enable_deep_supervision=False)`` (2 inputs = CT + memory, 1 output logit), and every requested fold gets its
own network instance (their sigmoid probabilities are averaged at prediction time).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json, subdirs

from nnunet_vertkd.ext_trainers_path import find_trainer_class  # noqa: F401  (re-exported)
from nnunet_vertkd.model_contract import CHECKPOINT_KEY, DATASET_JSON_KEY
from nnunet_vertkd.orientation import CANONICAL_ORIENTATION, left_right_axis, superior_axis

VERTEBRA_INPUT_CHANNELS = 2
VERTEBRA_OUTPUT_CHANNELS = 1


class ModelFolderError(RuntimeError):
    """A model folder that cannot be used; the message names the folder and what is missing."""


@dataclass
class LoadedModel:
    folder: str
    plans_manager: object
    configuration_manager: object
    dataset_json: dict
    trainer_name: str
    configuration_name: str
    folds: List[str]
    networks: List[torch.nn.Module]
    patch_size: Tuple[int, int, int]
    superior_axis: int
    superior_at_low_index: bool
    left_right_axis: int
    orientation: str
    vertkd_meta: dict = field(default_factory=dict)


def available_folds(model_folder: str, checkpoint_name: str) -> List[str]:
    """Folds (as strings, 'all' included) that hold ``checkpoint_name``."""
    folds = []
    for d in subdirs(model_folder, prefix="fold_", join=False):
        if os.path.isfile(os.path.join(model_folder, d, checkpoint_name)):
            folds.append(d[len("fold_"):])
    return sorted(folds, key=lambda f: (f == "all", f))


def build_network(trainer_class, plans_manager, configuration_manager, n_in: int, n_out: int) -> torch.nn.Module:
    sig = inspect.signature(trainer_class.build_network_architecture)
    if "plans_manager" in sig.parameters:
        return trainer_class.build_network_architecture(plans_manager, configuration_manager, n_in, n_out,
                                                        enable_deep_supervision=False)
    return trainer_class.build_network_architecture(  # pre-2.6 signature
        configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import, n_in, n_out, enable_deep_supervision=False)


def load_checkpoint(path: str) -> dict:
    try:
        return torch.load(path, map_location=torch.device("cpu"), weights_only=False)
    except Exception as e:  # corrupt or truncated files
        raise ModelFolderError(f"cannot load checkpoint {path}: {e}") from e


def load_vertebra_model(model_folder: str, use_folds: Optional[Sequence[Union[int, str]]] = None,
                        checkpoint_name: str = "checkpoint_final.pth",
                        device: torch.device = torch.device("cpu")) -> LoadedModel:
    """Load the vertebra model of ``model_folder`` (folds: None = all available)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    for name in ("dataset.json", "plans.json"):
        if not os.path.isfile(os.path.join(model_folder, name)):
            raise ModelFolderError(f"{model_folder} is not an nnU-Net model folder: {name} is missing")
    dataset_json = load_json(os.path.join(model_folder, "dataset.json"))
    plans_manager = PlansManager(load_json(os.path.join(model_folder, "plans.json")))
    if use_folds is None or len(use_folds) == 0:
        folds = available_folds(model_folder, checkpoint_name)
        if not folds:
            raise ModelFolderError(f"{model_folder}: no fold_*/{checkpoint_name} found")
    else:
        folds = [str(f) for f in use_folds]
    checkpoints = []
    for f in folds:
        path = os.path.join(model_folder, f"fold_{f}", checkpoint_name)
        if not os.path.isfile(path):
            raise ModelFolderError(f"{path} does not exist (available folds: "
                                   f"{available_folds(model_folder, checkpoint_name) or 'none'})")
        checkpoints.append(load_checkpoint(path))
    first = checkpoints[0]
    trainer_name = first["trainer_name"]
    configuration_name = first["init_args"]["configuration"]
    configuration_manager = plans_manager.get_configuration(configuration_name)
    trainer_class = find_trainer_class(trainer_name)
    networks = []
    for ckpt in checkpoints:
        net = build_network(trainer_class, plans_manager, configuration_manager,
                            VERTEBRA_INPUT_CHANNELS, VERTEBRA_OUTPUT_CHANNELS)
        weights = ckpt["network_weights"]
        if any(k.startswith("_orig_mod.") for k in weights):  # saved from a torch.compile'd network
            weights = {k.replace("_orig_mod.", "", 1): v for k, v in weights.items()}
        net.load_state_dict(weights)
        net.eval().to(device)
        networks.append(net)

    meta = dict(first.get(CHECKPOINT_KEY) or {})
    patch_size = tuple(int(p) for p in (meta.get("patch_size") or configuration_manager.patch_size))
    orientation = (dataset_json.get(DATASET_JSON_KEY) or {}).get("orientation", CANONICAL_ORIENTATION)
    transpose = plans_manager.transpose_forward
    if "superior_axis" in meta and "superior_at_low_index" in meta:
        s_axis, s_low = int(meta["superior_axis"]), bool(meta["superior_at_low_index"])
    else:
        s_axis, s_low = superior_axis(orientation, transpose)
    lr_axis = int(meta["left_right_axis"]) if "left_right_axis" in meta else left_right_axis(orientation, transpose)
    return LoadedModel(folder=model_folder, plans_manager=plans_manager, configuration_manager=configuration_manager,
                       dataset_json=dataset_json, trainer_name=trainer_name, configuration_name=configuration_name,
                       folds=folds, networks=networks, patch_size=patch_size, superior_axis=s_axis,
                       superior_at_low_index=s_low, left_right_axis=lr_axis, orientation=orientation, vertkd_meta=meta)


class PatchPredictor:
    """``predict_patch`` for the loop: (2, *patch) float32 -> (*patch) sigmoid probabilities.

    Averages the folds' probabilities; with ``mirror`` also the prediction of the patch flipped along the
    left-right axis (both views go through the network as one batch of 2). CUDA runs under autocast.
    """

    def __init__(self, networks: Sequence[torch.nn.Module], device: torch.device, mirror_axis: Optional[int] = None):
        self.networks = list(networks)
        self.device = device
        self.mirror_axis = mirror_axis
        self.n_calls = 0

    @torch.inference_mode()
    def __call__(self, patch):
        x = torch.from_numpy(patch).to(self.device, non_blocking=True)[None]
        if self.mirror_axis is not None:
            x = torch.cat([x, torch.flip(x, dims=(self.mirror_axis + 2,))])
        prob = None
        autocast = torch.autocast(self.device.type, enabled=self.device.type == "cuda")
        with autocast:
            for net in self.networks:
                out = net(x)
                if isinstance(out, (list, tuple)):  # deep supervision left on: full resolution first
                    out = out[0]
                p = torch.sigmoid(out[:, 0].float())
                if self.mirror_axis is not None:
                    p = (p[0] + torch.flip(p[1], dims=(self.mirror_axis,))) / 2
                else:
                    p = p[0]
                prob = p if prob is None else prob + p
        self.n_calls += 1
        return (prob / len(self.networks)).cpu().numpy().astype("float32", copy=False)
