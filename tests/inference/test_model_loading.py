"""Loading real plugin model folders (VertKDStudentTrainer / VertKDSpineTrainer checkpoints, untrained)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import stand_in_model as h
from nnunet_vertkd.inference.model_loading import PatchPredictor, available_folds, load_vertebra_model


def make_folder(root, trainer_name, spacing, patch, folds, n_out, role, meta=True):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_vertkd.inference.model_loading import find_trainer_class
    folder = Path(root) / f"{trainer_name}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    plans = h.plans_dict(spacing, patch)
    h.write_json(folder / "plans.json", plans)
    labels = {"background": 0, "spine": 1} if role == "spine" else {"background": 0, "C1": 1}
    h.write_json(folder / "dataset.json", {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1,
                                           "file_ending": ".nii.gz", "vertkd": {"kind": role, "orientation": "LPI"}})
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    cls = find_trainer_class(trainer_name)
    for i, f in enumerate(folds):
        torch.manual_seed(i)
        net = cls.build_network_architecture(pm, cm, 1 if role == "spine" else 2, n_out, enable_deep_supervision=True)
        (folder / f"fold_{f}").mkdir()
        ckpt = {"network_weights": net.state_dict(), "trainer_name": trainer_name,
                "init_args": {"configuration": "3d_fullres", "fold": f}, "inference_allowed_mirroring_axes": (2,)}
        if meta:
            ckpt["vertkd"] = {"role": role, "patch_size": list(patch), "superior_axis": 0,
                              "superior_at_low_index": True, "left_right_axis": 2}
        torch.save(ckpt, folder / f"fold_{f}" / "checkpoint_final.pth")
    return str(folder)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    h.set_env(monkeypatch, tmp_path / "ext_unused")


def test_student_folds_mirroring(tmp_path):
    folder = make_folder(tmp_path, "VertKDStudentTrainer", (2.0, 2.0, 2.0), (16, 16, 16), ["0", "1"], 1, "vertebrae")
    assert available_folds(folder, "checkpoint_final.pth") == ["0", "1"]
    m = load_vertebra_model(folder)  # all folds
    assert m.folds == ["0", "1"] and len(m.networks) == 2
    assert m.patch_size == (16, 16, 16) and (m.superior_axis, m.superior_at_low_index, m.left_right_axis) == (0, True, 2)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16)).astype(np.float32)
    p_plain = PatchPredictor(m.networks, torch.device("cpu"))(x)
    p_tta = PatchPredictor(m.networks, torch.device("cpu"), mirror_axis=2)(x)
    assert p_plain.shape == (16, 16, 16) and p_plain.dtype == np.float32
    assert 0 <= p_plain.min() and p_plain.max() <= 1 and not np.allclose(p_plain, p_tta)
    single = PatchPredictor(m.networks[:1], torch.device("cpu"))(x)
    both = (single + PatchPredictor(m.networks[1:], torch.device("cpu"))(x)) / 2
    np.testing.assert_allclose(p_plain, both, atol=1e-5)  # folds averaged


def test_patch_size_and_axes_fall_back_to_plans(tmp_path):
    folder = make_folder(tmp_path, "VertKDStudentTrainer", (2.0, 2.0, 2.0), (16, 16, 16), ["all"], 1, "vertebrae",
                         meta=False)
    m = load_vertebra_model(folder, ["all"])
    assert m.patch_size == (16, 16, 16) and (m.superior_axis, m.superior_at_low_index, m.left_right_axis) == (0, True, 2)


def test_whole_pipeline_with_untrained_student_and_spine_models(tmp_path):
    """Real trainer classes end to end (untrained, so the result is arbitrary): it runs, terminates, exports."""
    from nnunet_vertkd.inference.predictor import VertKDPredictor
    vert = make_folder(tmp_path / "v", "VertKDStudentTrainer", (2.0, 2.0, 2.0), (16, 16, 16), ["all"], 1, "vertebrae")
    spine = make_folder(tmp_path / "s", "VertKDSpineTrainer", (4.0, 4.0, 4.0), (16, 16, 16), ["all"], 2, "spine")
    p = VertKDPredictor(device=torch.device("cpu"), num_threads=1, allow_tqdm=False)
    p.initialize_from_trained_model_folder(vert, ["all"], spine_model_folder=spine)
    ct, _ = h.phantom()
    try:
        inst, ctd, rec = p.predict_single_image(ct, "ph")
    except Exception as e:  # an untrained spine model may find no spine: that is a clean, named error
        assert "no spine found" in str(e)
        return
    assert inst.GetSize() == ct.GetSize() and rec["spine_source"] == "model"
    assert rec["n_network_calls"] <= p.settings.max_network_calls()
    json.dumps(rec)
