"""``VertKDPredictor``: spine location + iterative top-down vertebra segmentation on nnU-Net's backend.

    predictor = VertKDPredictor(device=torch.device("cpu"), use_mirroring=True)
    predictor.initialize_from_trained_model_folder(vertebra_model_folder, use_folds=("all",),
                                                   checkpoint_name="checkpoint_final.pth",
                                                   spine_model_folder=spine_model_folder)   # or None
    predictor.predict_from_files(input_folder_or_files, output_folder)
    instances, centroids, record = predictor.predict_single_image(sitk_image)

See docs/inference.md for the outputs and the record.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
import traceback
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from nnunet_vertkd.centroids import centroids_from_mask  # noqa: F401 (API of earlier versions)
from nnunet_vertkd.ct_padding import normalised_air_value
from nnunet_vertkd.inference import geometry, lean_preprocessing
from nnunet_vertkd.inference.input_checks import (RejectedCaseError, check_image, header_warnings, intensity_warnings,
                                                  read_image)
from nnunet_vertkd.inference.iterative import IterativeSettings, segment_vertebrae_iteratively
from nnunet_vertkd.inference.model_loading import LoadedModel, PatchPredictor, load_vertebra_model
from nnunet_vertkd.inference.outputs import (CaseOutputs, case_files, list_input_cases, prepare_output_folder,
                                            write_case_outputs)
from nnunet_vertkd.labelling.body_centre import body_centroids
from nnunet_vertkd.inference.spine_location import SpineModel, spine_probability
from nnunet_vertkd.orientation import orientation_of

LabelMapping = Union[None, Dict[int, int], Callable[[np.ndarray, dict], Tuple[np.ndarray, str]]]


def default_num_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)



class VertKDPredictor:
    """Same shape of API as nnU-Net's ``nnUNetPredictor``, for the iterative vertebra model."""

    def __init__(self, device: torch.device = torch.device("cpu"), use_mirroring: bool = True,
                 perform_everything_on_device: bool = True, verbose: bool = False,
                 settings: Optional[IterativeSettings] = None, num_threads: Optional[int] = None,
                 allow_tqdm: bool = True, label_mapping: LabelMapping = None,
                 settings_overrides: Optional[Dict[str, object]] = None, backend: Optional[str] = None,
                 preprocessing: str = "converter"):
        """settings: loop settings in voxels of the model's preprocessed space; None = the 1 mm defaults of
        ``IterativeSettings`` scaled to the model's spacing. label_mapping: None keeps sequential labels 1..N
        from the top; a dict {sequential: label} or a callable(instances_zyx, record) -> (relabelled, name)
        for anatomical labels (recorded under "labels"). settings_overrides: {IterativeSettings field: value}
        applied after the scaling (values in voxels of the preprocessed space). backend: "torch", "openvino",
        "onnxruntime" or None/"auto" (torch on a GPU, the fastest installed on the CPU; inference/backends.py).
        preprocessing: "converter" (resampling as vertkd_convert_verse did, spine region only;
        inference/fast_preprocessing.py) or "nnunet" (nnU-Net's preprocessor on the whole volume)."""
        if isinstance(device, str):
            device = torch.device(device)
        self.device = device
        self.use_mirroring = use_mirroring
        self.perform_everything_on_device = perform_everything_on_device and device.type == "cuda"
        self.verbose = verbose
        self.user_settings = settings
        self.settings_overrides = dict(settings_overrides or {})
        unknown = set(self.settings_overrides) - set(IterativeSettings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown loop settings {sorted(unknown)}; known: "
                             f"{sorted(IterativeSettings.__dataclass_fields__)}")
        self.allow_tqdm = allow_tqdm
        self.label_mapping = label_mapping
        self.num_threads = num_threads or default_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(self.num_threads)
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model: Optional[LoadedModel] = None
        self.spine_model: Optional[SpineModel] = None
        self.settings: Optional[IterativeSettings] = None
        self.load_seconds = 0.0
        from nnunet_vertkd.inference.backends import resolve_backend
        resolve_backend(backend, device)  # a backend that is not installed fails here, with what to install
        self.backend = backend
        self.backends_used: Dict[str, str] = {}
        if preprocessing not in ("converter", "nnunet"):
            raise ValueError(f"preprocessing must be 'converter' or 'nnunet', got {preprocessing!r}")
        self.preprocessing = preprocessing
        self._patch_predictor = None

    # ------------------------------------------------------------------ setup
    def initialize_from_trained_model_folder(self, vertebra_model_folder: str,
                                             use_folds: Optional[Sequence[Union[int, str]]] = None,
                                             checkpoint_name: str = "checkpoint_final.pth",
                                             spine_model_folder: Optional[str] = None,
                                             spine_use_folds: Optional[Sequence[Union[int, str]]] = None,
                                             spine_checkpoint_name: Optional[str] = None):
        """Load the vertebra model (and the spine model, if given; otherwise the HU heuristic is used)."""
        t0 = time.perf_counter()
        self.model = load_vertebra_model(vertebra_model_folder, use_folds, checkpoint_name, self.device)
        if spine_model_folder is not None:
            self.spine_model = SpineModel(spine_model_folder, spine_use_folds, spine_checkpoint_name or checkpoint_name,
                                          self.device, self.use_mirroring, self.verbose)
        self._init_backends(checkpoint_name, spine_checkpoint_name or checkpoint_name)
        spacing = self.model.configuration_manager.spacing
        self.settings = self.user_settings or IterativeSettings().scaled_to_spacing(spacing)
        if self.settings_overrides:
            self.settings = dataclasses.replace(self.settings, **self.settings_overrides)
        if self.settings.CT_PAD_VALUE is None:  # pad with air exactly as the trainer did
            self.settings = dataclasses.replace(self.settings, CT_PAD_VALUE=normalised_air_value(
                self.model.plans_manager, self.model.configuration_manager))
        self.load_seconds = time.perf_counter() - t0

    def _init_backends(self, checkpoint_name: str, spine_checkpoint_name: str) -> None:
        """The loop's patch predictor and the spine network on ``self.backend`` (exported once, cached)."""
        from nnunet_vertkd.inference import backends
        m = self.model
        mirror = m.left_right_axis if self.use_mirroring else None
        if self.device.type != "cpu" and backends.resolve_backend(self.backend, self.device) == "torch":
            self._patch_predictor = lambda: PatchPredictor(m.networks, self.device, mirror)  # unchanged GPU path
            self.backends_used["vertebra"] = "torch"
        else:
            bp = backends.vertebra_patch_predictor(m, self.device, mirror, self.backend, self.num_threads,
                                                   checkpoint_name, log=tqdm.write)
            self._patch_predictor = lambda: backends.BackendPatchPredictor(bp.runners, bp.mirror_axis, bp.backend)
            self.backends_used["vertebra"] = bp.backend
        if self.spine_model is not None:
            sm = self.spine_model
            dirs = [os.path.join(sm.folder, f"fold_{f}") for f in getattr(sm, "folds", ())] or [None]
            self.backends_used["spine"] = backends.attach_to_nnunet_predictor(
                sm.predictor, self.backend, self.device, self.num_threads, dirs, spine_checkpoint_name, log=tqdm.write)

    # ------------------------------------------------------------------ one image
    def predict_single_image(self, image: sitk.Image, case: str = "image") -> Tuple[sitk.Image, dict, dict]:
        """Segment one in-memory CT (HU). Returns (instance image on the input's grid, {label: (X, Y, Z)} in its
        voxel indices, record). Raises RejectedCaseError for unusable input."""
        r = self._predict(image, case, want_spine=False, want_preview=False)
        return r.instances, r.centroids, r.record

    def _predict(self, image: sitk.Image, case: str, want_spine: bool, want_preview: bool) -> CaseOutputs:
        if self.model is None:
            raise RuntimeError("call initialize_from_trained_model_folder first")
        m = self.model
        pm, cm = m.plans_manager, m.configuration_manager
        seconds = {}
        t = time.perf_counter()
        input_warnings = header_warnings(image) + intensity_warnings(check_image(image, case))
        reoriented = geometry.reorient(image, m.orientation)
        fast = None
        if self.preprocessing == "converter":  # spine step first, then only the spine region (fast_preprocessing.py)
            from nnunet_vertkd.inference import fast_preprocessing
            checks = time.perf_counter() - t
            data_raw = spine_raw = None
            fast = fast_preprocessing.prepare(reoriented, m, self.spine_model, self.settings.START_THRESHOLD,
                                              seconds=seconds)
            ct_pp, start_prob, spine_source, pp_props = fast.ct_pp, fast.start_prob, fast.spine_source, fast.pp_props
            seconds = {"preprocess": seconds["preprocess"] + checks, "spine": seconds["spine"]}
        else:
            data_raw, raw_props = geometry.nnunet_input(reoriented)
            preprocessor = cm.preprocessor_class(verbose=False)
            data_pp, _, pp_props = lean_preprocessing.run_case_npy(preprocessor, data_raw, copy.deepcopy(raw_props),
                                                                   pm, cm, m.dataset_json)  # nnU-Net's, bounded memory
            ct_pp = np.ascontiguousarray(data_pp[0], dtype=np.float32)
            del data_pp
            seconds["preprocess"] = time.perf_counter() - t

            t = time.perf_counter()
            start_prob, spine_raw, spine_source = spine_probability(data_raw, raw_props, pp_props,
                                                                    pm.transpose_forward, ct_pp.shape,
                                                                    self.spine_model, m.orientation)
            seconds["spine"] = time.perf_counter() - t
            if not want_preview:  # peak memory: only the preview needs the float32 raw CT again
                data_raw = None
            if not want_spine:
                spine_raw = None
        if float(start_prob.max()) < self.settings.START_THRESHOLD:
            raise RejectedCaseError(case, f"no spine found (spine probability never reaches "
                                   f"{self.settings.START_THRESHOLD}; source: {spine_source})")

        t = time.perf_counter()
        patch_predictor = self._patch_predictor()
        bar = tqdm(desc=f"{case}: vertebrae", unit="vert", leave=False, disable=not self.allow_tqdm)
        try:
            res = segment_vertebrae_iteratively(patch_predictor, ct_pp, start_prob, m.superior_axis,
                                                m.superior_at_low_index, m.patch_size, self.settings,
                                                on_vertebra=lambda info: bar.update(1))
        finally:
            bar.close()
        seconds["iterative"] = time.perf_counter() - t
        pp_shape = list(ct_pp.shape)
        del ct_pp, start_prob, patch_predictor  # peak memory: not needed for the export
        if not want_spine:
            spine_raw = None

        t = time.perf_counter()
        labels_raw = (fast.labels_to_raw(res.instances, pm.transpose_backward, reoriented) if fast is not None
                      else geometry.preprocessed_to_raw(res.instances, pp_props, pm.transpose_backward))
        record = {"case": case, "n_vertebrae": res.n_vertebrae, "n_network_calls": res.n_network_calls,
                  "stop_reason": res.stop_reason, "iterations_per_vertebra": res.iterations_per_vertebra,
                  "converged": [v.converged for v in res.vertebrae], "spine_source": spine_source,
                  "labels": "sequential", "input_warnings": input_warnings,
                  "centroids": "vertebral_body_centre"}
        labels_raw, record["labels"] = self._map_labels(labels_raw, record, reoriented)
        max_label = int(labels_raw.max()) if labels_raw.size else 0
        labels_raw = labels_raw.astype(geometry.label_dtype(max_label))
        labels_in = geometry.raw_to_input_grid(labels_raw, reoriented, image)
        instances = geometry.array_to_image_like(labels_in, image)
        centroids = body_centroids(labels_in, image.GetSpacing()[::-1])  # VerSe's centroids: body centres
        spine_img = None
        if want_spine:
            if fast is not None:
                spine_raw = fast.spine_on(reoriented)
            spine_img = geometry.array_to_image_like(
                geometry.raw_to_input_grid(spine_raw.astype(np.float32), reoriented, image), image)
        seconds["export"] = time.perf_counter() - t

        record.update({
            "input_orientation": orientation_of(image), "input_size": list(image.GetSize()),
            "input_spacing_mm": [float(s) for s in image.GetSpacing()],
            "model_orientation": m.orientation, "preprocessed_shape": pp_shape,
            "preprocessed_spacing_mm": [float(s) for s in cm.spacing], "patch_size": list(m.patch_size),
            "device": str(self.device), "folds": list(m.folds), "trainer": m.trainer_name,
            "mirroring": bool(self.use_mirroring), "backend": dict(self.backends_used),
            "preprocessing": fast.info if fast is not None else {"preprocessing": "nnunet"},
            "settings": self.settings.to_dict(),
            "vertebrae": [{"label": int(lab), "centroid_voxel_XYZ": [round(c, 3) for c in centroids[lab]]}
                          for lab in sorted(centroids)],
            "seconds": {"load": round(self.load_seconds, 4),
                        **{k: round(v, 4) for k, v in seconds.items()}},
        })
        result = CaseOutputs(instances, centroids, record, spine_img)
        if want_preview:  # the preview wants LPI arrays (index 0 of axis 0 = superior)
            ct_img, lab_img = reoriented, geometry.array_to_image_like(labels_raw, reoriented)
            if m.orientation != "LPI":
                ct_img, lab_img = geometry.reorient(ct_img, "LPI"), geometry.reorient(lab_img, "LPI")
            result.preview_ct_kji = (sitk.GetArrayFromImage(ct_img) if ct_img is not reoriented or data_raw is None
                                     else data_raw[0])
            result.preview_labels_kji = sitk.GetArrayFromImage(lab_img)
            result.preview_spacing_kji = tuple(ct_img.GetSpacing()[::-1])
        return result

    def _map_labels(self, labels: np.ndarray, record: dict, image: Optional[sitk.Image] = None
                    ) -> Tuple[np.ndarray, str]:
        """Anatomical labels: sequential 1..N from the top unless a mapping is given. A callable mapping with
        ``needs_image = True`` (``nnunet_vertkd.labelling.labeller.AnatomicalLabeller``) also gets the image
        whose grid ``labels`` is on."""
        if self.label_mapping is None:
            return labels, "sequential"
        if callable(self.label_mapping):
            if getattr(self.label_mapping, "needs_image", False):
                return self.label_mapping(labels, record, image)
            return self.label_mapping(labels, record)
        lut = np.arange(max(int(labels.max()), max(self.label_mapping, default=0)) + 1, dtype=np.int64)
        for k, v in self.label_mapping.items():
            lut[int(k)] = int(v)
        return lut[labels], "mapped"

    # ------------------------------------------------------------------ batches of files
    def predict_from_files(self, list_of_files_or_folder: Union[str, Sequence[str]], output_folder: str,
                           overwrite: bool = False, save_preview: bool = False, save_spine: bool = False,
                           num_parts: int = 1, part_id: int = 0) -> dict:
        """Segment every case (a folder of NIfTI files or a list of files). A case that fails is reported and
        skipped, the batch goes on; nothing partial is written. Returns a summary
        {"cases", "succeeded", "skipped_existing", "failed": {case: message}}."""
        if not 0 <= part_id < num_parts:
            raise ValueError(f"part_id must be in [0, num_parts), got part_id={part_id}, num_parts={num_parts}")
        cases, failed = list_input_cases(list_of_files_or_folder)
        cases = cases[part_id::num_parts]
        removed = prepare_output_folder(output_folder)  # before any work: raises OutputFolderError
        if removed:
            tqdm.write(f"removed {len(removed)} temporary file(s) of an interrupted run from {output_folder}")
        summary = {"cases": [c for c, _ in cases], "succeeded": [], "skipped_existing": [], "failed": {}}
        if part_id == 0:  # problems of the input list itself are reported once
            summary["failed"].update(failed)
        for case, path in tqdm(cases, desc="cases", unit="case", disable=not self.allow_tqdm):
            files = case_files(output_folder, case, path)
            if os.path.abspath(files.instances) == os.path.abspath(path):
                summary["failed"][case] = (f"{case}: the output {files.instances} would replace the input; "
                                           f"use another output folder")
                tqdm.write(f"FAILED {summary['failed'][case]}")
                continue
            if not overwrite and os.path.exists(files.instances):
                summary["skipped_existing"].append(case)
                tqdm.write(f"{case}: {files.instances} exists, skipped (use --overwrite to replace it)")
                continue
            try:
                t = time.perf_counter()
                image = read_image(path, case)
                load_s = time.perf_counter() - t
                res = self._predict(image, case, want_spine=save_spine, want_preview=save_preview)
                res.record["input_file"] = os.path.basename(path)
                res.record["seconds"]["read"] = round(load_s, 4)
                write_case_outputs(files, res)
                summary["succeeded"].append(case)
            except RejectedCaseError as e:
                summary["failed"][case] = str(e)
                tqdm.write(f"FAILED {e}")
            except Exception as e:  # the batch goes on; the message names the case
                summary["failed"][case] = f"{case}: {type(e).__name__}: {e}"
                tqdm.write(f"FAILED {case}: {type(e).__name__}: {e}")
                if self.verbose:
                    traceback.print_exc()
        return summary
