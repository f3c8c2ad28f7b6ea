"""Anatomical labels at inference: the predictor's label hook gets the image, VerSe labels and body-centre
centroids reach the outputs, vertkd_predict's --labels options."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers import stand_in_model as h
from nnunet_vertkd.centroids import read_centroids


class FakeLabeller:
    """Stands in for AnatomicalLabeller: sequential k -> VerSe 19 + k (T12, L1, L2, L3), checks the image."""
    needs_image = True

    def __init__(self):
        self.calls = []

    def __call__(self, instances, record, image=None):
        assert image is not None and tuple(image.GetSize()[::-1]) == instances.shape
        self.calls.append(sorted(int(v) for v in np.unique(instances) if v))
        lut = np.array([0, 19, 20, 21, 22], dtype=np.int64)
        record["labelling"] = {"vertebrae": [{"label": int(v)} for v in lut[1:]]}
        return lut[instances], "verse"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("labels")
    h.set_env(mp, root / "ext")
    yield h.make_standin_vertebra_model(root / "results", root / "ext", spacing=(2.0, 2.0, 2.0),
                                        patch_size=(32, 32, 32))
    mp.undo()


def test_label_hook_gets_the_image_and_verse_labels_reach_the_outputs(model_folder, tmp_path):
    from nnunet_vertkd.inference.predictor import VertKDPredictor
    labeller = FakeLabeller()
    p = VertKDPredictor(device=torch.device("cpu"), num_threads=1, allow_tqdm=False, label_mapping=labeller)
    p.initialize_from_trained_model_folder(model_folder, ["all"])
    ct, _ = h.phantom()
    inp = tmp_path / "in"
    inp.mkdir()
    sitk.WriteImage(ct, str(inp / "ph_0000.nii.gz"))
    summary = p.predict_from_files(str(inp), str(tmp_path / "out"))
    assert summary["succeeded"] == ["ph"], summary
    assert labeller.calls == [[1, 2, 3, 4]]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "ph.nii.gz")))
    assert sorted(int(v) for v in np.unique(mask) if v) == [19, 20, 21, 22]
    _, ctd = read_centroids(str(tmp_path / "out" / "ph_ctd.json"))
    assert sorted(ctd) == [19, 20, 21, 22]
    record = json.loads((tmp_path / "out" / "ph_record.json").read_text())
    assert record["labels"] == "verse" and record["centroids"] == "vertebral_body_centre"
    assert [v["label"] for v in record["vertebrae"]] == [19, 20, 21, 22]
    assert "labelling" in record


def test_plain_callable_and_dict_mappings_still_work(model_folder):
    from nnunet_vertkd.inference.predictor import VertKDPredictor
    ct, _ = h.phantom()
    p = VertKDPredictor(device=torch.device("cpu"), num_threads=1, allow_tqdm=False,
                        label_mapping=lambda lab, rec: (lab * 2, "doubled"))
    p.initialize_from_trained_model_folder(model_folder, ["all"])
    _, centroids, record = p.predict_single_image(ct, "a")
    assert record["labels"] == "doubled" and sorted(centroids) == [2, 4, 6, 8]
    p = VertKDPredictor(device=torch.device("cpu"), num_threads=1, allow_tqdm=False, label_mapping={1: 20})
    p.initialize_from_trained_model_folder(model_folder, ["all"])
    _, centroids, record = p.predict_single_image(ct, "b")
    assert record["labels"] == "mapped" and sorted(centroids) == [2, 3, 4, 20]


def test_cli_label_options(tmp_path, monkeypatch):
    from nnunet_vertkd.inference.cli import build_parser
    from nnunet_vertkd.labelling import cli_support
    args = build_parser().parse_args(["-i", "x", "-o", "y"])
    assert args.labels == "verse" and args.label_model is None
    args = build_parser().parse_args(["-i", "x", "-o", "y", "--labels", "sequential"])
    assert cli_support.make_label_mapping(args, "cpu", None) is None
    monkeypatch.setattr(cli_support, "SHIPPED_LABEL_MODEL", str(tmp_path / "none"))
    args = build_parser().parse_args(["-i", "x", "-o", "y"])
    assert cli_support.make_label_mapping(args, "cpu", None) is None  # no label model: sequential, with a message
    args = build_parser().parse_args(["-i", "x", "-o", "y", "--label-model", str(tmp_path)])

    def resolve(dataset, tr, p, c, folder, what):
        assert what == "label" and folder == str(tmp_path)
        return folder
    from nnunet_vertkd.command_line import InputError
    with pytest.raises(InputError, match="plans.json missing"):
        cli_support.make_label_mapping(args, "cpu", resolve)


def test_labels_line_and_shipped_model():
    from nnunet_vertkd.labelling import cli_support
    info = {"vertebrae": [{"name": "T12", "probability": 0.91}, {"name": "L1", "probability": 0.88}],
            "flags": ["low_confidence"]}
    assert cli_support.labels_line(info) == "T12 0.91, L1 0.88 [low_confidence]"
    mapping = cli_support.shipped_label_mapping("cpu")
    if mapping is None:
        pytest.skip("no label model shipped in this checkout")
    assert mapping.needs_image and mapping.meta["role"] == "label"
