"""Anatomical labels at inference: evidence model + whole-scan decoder, as the predictor's label mapping.

    labeller = AnatomicalLabeller(label_model_folder, device="cpu")     # a VertKDLabelTrainer model folder
    predictor = VertKDPredictor(..., label_mapping=labeller)
    # or directly: verse_instances, info = labeller.label(instances_kji, image)

The predictor hands over the loop's instances (sequential labels 1..N from the top) on the grid of the image it
segmented. The labeller preprocesses that image with the label model's own plans (nnU-Net's preprocessor:
transpose, crop, CT normalisation, resampling; the instances go through it as the segmentation), cuts one patch
per vertebra (``evidence.extract_patch``), runs the classifier (folds averaged, left-right mirroring averaged in),
decodes the sequence (``decoder.decode_labels``) and relabels the instances with VerSe labels. The record gets
``labelling`` (per vertebra: label, name, probability, runner-up, flags; the scan's flags, sequence probability and
shift probabilities; the model).
"""
from __future__ import annotations

import copy
import os
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_vertkd.ct_padding import normalised_air_value
from nnunet_vertkd.inference import geometry
from nnunet_vertkd.labelling.decoder import DEFAULT_P_L6, DEFAULT_P_T13, N_STATES, decode_labels
from nnunet_vertkd.labelling.evidence import (VertebraLabelNet, extract_patch, likelihood_prior,
                                              predict_probabilities, vertebra_centres)
from nnunet_vertkd.model_contract import CHECKPOINT_KEY
from nnunet_vertkd.orientation import orientation_from_dataset_json, orientation_of


class LabelModelError(RuntimeError):
    """A label model folder that cannot be used; the message names it."""


def _folds(model_folder: str, checkpoint_name: str, use_folds) -> list:
    if use_folds is None:
        use_folds = sorted(d[len("fold_"):] for d in os.listdir(model_folder)
                           if d.startswith("fold_") and os.path.isfile(os.path.join(model_folder, d, checkpoint_name)))
    folds = [str(f) for f in use_folds]
    if not folds:
        raise LabelModelError(f"label model {model_folder}: no fold_*/{checkpoint_name}")
    return folds


class AnatomicalLabeller:
    """Callable label mapping for ``VertKDPredictor`` (``needs_image``: the predictor passes the image)."""
    needs_image = True

    def __init__(self, model_folder: str, use_folds: Optional[Sequence[Union[int, str]]] = None,
                 checkpoint_name: str = "checkpoint_final.pth", device: Union[str, torch.device] = "cpu",
                 mirroring: bool = True, p_t13: float = DEFAULT_P_T13, p_l6: float = DEFAULT_P_L6):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        self.model_folder = os.path.abspath(model_folder)
        for name in ("plans.json", "dataset.json"):
            if not os.path.isfile(os.path.join(model_folder, name)):
                raise LabelModelError(f"label model {model_folder}: {name} missing (not an nnU-Net model folder)")
        self.device = torch.device(device) if isinstance(device, str) else device
        self.plans_manager = PlansManager(load_json(os.path.join(model_folder, "plans.json")))
        self.dataset_json = load_json(os.path.join(model_folder, "dataset.json"))
        self.orientation = orientation_from_dataset_json(self.dataset_json)
        self.folds = _folds(model_folder, checkpoint_name, use_folds)
        self.networks = []
        meta = None
        for f in self.folds:
            path = os.path.join(model_folder, f"fold_{f}", checkpoint_name)
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001 - the message names the file
                raise LabelModelError(f"cannot load label checkpoint {path}: {e}") from e
            meta = ckpt.get(CHECKPOINT_KEY) or {}
            if meta.get("role") != "label":
                raise LabelModelError(f"{path} is not a label model (vertkd role {meta.get('role')!r})")
            net = VertebraLabelNet(2, N_STATES, meta["features"], meta.get("dropout", 0.0))
            net.load_state_dict(ckpt["network_weights"])
            self.networks.append(net.to(self.device).eval())
            self.configuration_name = ckpt["init_args"]["configuration"]
            self.trainer_name = ckpt.get("trainer_name")
        self.meta = meta
        self.configuration_manager = self.plans_manager.get_configuration(self.configuration_name)
        self.patch_size = tuple(int(p) for p in meta["patch_size"])
        self.left_right_axis = int(meta["left_right_axis"]) if mirroring else None
        prior = meta.get("label_prior")
        self.label_prior = likelihood_prior(prior) if prior is not None else None
        self.pad_value = normalised_air_value(self.plans_manager, self.configuration_manager)
        self.p_t13, self.p_l6 = float(p_t13), float(p_l6)

    # ------------------------------------------------------------------ evidence
    def evidence(self, instances_kji: np.ndarray, image: sitk.Image) -> Tuple[np.ndarray, list]:
        """(N, 26) classifier probabilities for the labels 1..N of ``instances_kji`` (an array on ``image``'s grid),
        and the labels in that order. A vertebra lost in the label model's resampling gets a uniform row."""
        labels = [int(v) for v in np.unique(instances_kji) if v > 0]
        if not labels:
            return np.zeros((0, N_STATES)), []
        inst_img = sitk.GetImageFromArray(instances_kji.astype(np.int16))
        inst_img.CopyInformation(image)
        img = geometry.reorient(image, self.orientation)
        inst_img = geometry.reorient(inst_img, self.orientation)
        data_raw, props = geometry.nnunet_input(img)
        seg_raw = sitk.GetArrayFromImage(inst_img).astype(np.int16)[None]
        pm, cm = self.plans_manager, self.configuration_manager
        preprocessor = cm.preprocessor_class(verbose=False)
        data_pp, seg_pp, _ = preprocessor.run_case_npy(data_raw, seg_raw, copy.deepcopy(props), pm, cm,
                                                       self.dataset_json)
        ct = np.ascontiguousarray(data_pp[0], dtype=np.float32)
        seg = np.asarray(seg_pp[0]).astype(np.int16)
        centres = vertebra_centres(seg, [lab for lab in labels if np.any(seg == lab)])
        probs = np.full((len(labels), N_STATES), 1.0 / N_STATES)
        present = [i for i, lab in enumerate(labels) if lab in centres]
        if present:
            patches = np.stack([extract_patch(ct, seg, labels[i], centres[labels[i]], self.patch_size, self.pad_value)
                                for i in present])
            p = np.mean([predict_probabilities(net, patches, self.device, self.left_right_axis)
                         for net in self.networks], axis=0)
            probs[present] = p
        return probs, labels

    # ------------------------------------------------------------------ labels
    def label(self, instances_kji: np.ndarray, image: sitk.Image) -> Tuple[np.ndarray, dict]:
        """(instances relabelled with VerSe labels, labelling record). Sequential labels must be 1..N top-down."""
        probs, labels = self.evidence(instances_kji, image)
        if not labels:
            return instances_kji, {"vertebrae": [], "flags": [], "model": self.model_info()}
        decoded = decode_labels(probs, self.p_t13, self.p_l6, label_prior=self.label_prior)
        lut = np.zeros(max(labels) + 1, dtype=np.int64)
        for seq, verse in zip(labels, decoded.labels):
            lut[seq] = verse
        info = decoded.to_record()
        for v, seq in zip(info["vertebrae"], labels):
            v["sequential_label"] = int(seq)
        info["model"] = self.model_info()
        return lut[instances_kji], info

    def model_info(self) -> dict:
        return {"folder": self.model_folder, "folds": list(self.folds), "trainer": self.trainer_name,
                "p_t13": self.p_t13, "p_l6": self.p_l6}

    def __call__(self, instances_kji: np.ndarray, record: dict, image: Optional[sitk.Image] = None):
        if image is None:
            raise ValueError("AnatomicalLabeller needs the image (the predictor passes it: needs_image = True)")
        relabelled, info = self.label(instances_kji, image)
        record["labelling"] = info
        return relabelled, "verse"


def labelled_vertebrae_table(info: dict) -> str:
    """One line per vertebra: 'T12 0.93 (runner-up T13 0.05) [flags]' for printing."""
    lines = []
    for v in info.get("vertebrae", []):
        ru = f" (runner-up {v['runner_up_name']} {v['runner_up_probability']:.2f})" if v.get("runner_up_name") else ""
        flags = f" [{', '.join(v['flags'])}]" if v.get("flags") else ""
        lines.append(f"{v['name']:>4} p={v['probability']:.2f}{ru}{flags}")
    return "\n".join(lines)
