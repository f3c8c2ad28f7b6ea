"""The shipped reference model (nnunet_vertkd/pretrained): small files, loads into the networks its trainers
build, and is what ``vertkd_predict`` uses without model arguments (on a small crop of the embedded real scan,
which the model never saw in training). Needs neither a GPU nor the sample data beside the repository."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd import pretrained
from nnunet_vertkd.demo import DEMO_DATA
from nnunet_vertkd.inference import cli
from nnunet_vertkd.inference.model_loading import load_checkpoint, load_vertebra_model
from nnunet_vertkd.trainers.network import count_parameters

pytestmark = pytest.mark.skipif(not pretrained.available(), reason="shipped model files not present")
CT_012 = DEMO_DATA / "rawdata" / "sub-verse012" / "sub-verse012_ct.nii.gz"


def test_shipped_files_are_small_and_hold_only_inference_keys():
    for folder in pretrained.model_folders():
        ckpt_path = os.path.join(folder, "fold_all", "checkpoint_final.pth")
        assert os.path.getsize(ckpt_path) < 4e6
        ckpt = load_checkpoint(ckpt_path)
        assert set(ckpt) <= set(pretrained.KEPT_KEYS)
        assert "optimizer_state" not in ckpt
        card = json.load(open(os.path.join(folder, "model_card.json"), encoding="utf-8"))
        assert card["trainer"] == ckpt["trainer_name"]
        assert "sub-verse012" not in json.dumps(card.get("training_cases", []))


def test_shipped_student_loads_into_its_trainer_network():
    vertebra, _ = pretrained.model_folders()
    model = load_vertebra_model(vertebra, ("all",))
    assert model.trainer_name == "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3"
    assert model.patch_size == (64, 64, 64)
    assert tuple(float(s) for s in model.configuration_manager.spacing) == (2.0, 2.0, 2.0)
    assert count_parameters(model.networks[0]) == 366155


def test_predict_without_model_arguments_uses_the_shipped_pair(tmp_path, capsys):
    img = sitk.ReadImage(str(CT_012))
    # a small crop: the upper ~80 mm of the scan (3 vertebrae), all slices of the thin axis
    size = list(img.GetSize())
    crop = sitk.RegionOfInterest(img, [size[0], size[1], 90], [0, 0, 0])
    inp = tmp_path / "in"
    inp.mkdir()
    sitk.WriteImage(crop, str(inp / "crop012.nii.gz"))
    out = tmp_path / "out"
    rc = cli.main(["-i", str(inp), "-o", str(out), "-device", "cpu", "-npp", "2", "--disable-tta"])
    err = capsys.readouterr().err
    assert "using the shipped reference model" in err
    assert rc == 0
    mask = sitk.ReadImage(str(out / "crop012.nii.gz"))
    assert mask.GetSize() == crop.GetSize()
    record = json.load(open(out / "crop012_record.json", encoding="utf-8"))
    assert record["spine_source"] != "heuristic" and record["trainer"] == "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3"
    assert record["n_vertebrae"] >= 1 and int(sitk.GetArrayFromImage(mask).max()) >= 1
    assert (out / "crop012_ctd.json").is_file()


def test_python_api_uses_the_shipped_pair():
    predictor = pretrained.pretrained_predictor(device="cpu", use_mirroring=False, num_threads=1)
    assert predictor.model.trainer_name == "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3"
    assert predictor.spine_model is not None


def test_shipped_files_carry_no_machine_paths():
    """Model cards and the checkpoints' plugin entries name files relative to nnUNet_results, never an absolute
    path of the machine that trained them (pretrained.portable_paths)."""
    import json
    import os

    import torch

    from nnunet_vertkd import pretrained
    from nnunet_vertkd.model_contract import CHECKPOINT_KEY

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    for folder in pretrained.model_folders():
        with open(os.path.join(folder, "model_card.json"), encoding="utf-8") as f:
            card = json.load(f)
        ckpt = torch.load(os.path.join(folder, "fold_all", "checkpoint_final.pth"), map_location="cpu",
                          weights_only=False)
        found = [s for s in list(strings(card)) + list(strings(ckpt.get(CHECKPOINT_KEY))) if os.path.isabs(s)]
        assert found == [], f"{folder}: {found}"
    assert pretrained.portable_paths({"a": ["/x/y/Dataset601_V/T__p__c/fold_all/c.pth", "/x/y/z.json", "rel"]}) == \
        {"a": ["$nnUNet_results/Dataset601_V/T__p__c/fold_all/c.pth", "z.json", "rel"]}


@pytest.mark.slow
def test_shipped_pair_segments_the_held_out_real_scan():
    """The target of docs/pretrained.md on the embedded held-out sub-verse012 (T10-L3): every annotated vertebra
    found (the predicted instance that overlaps it most has Dice >= 0.5 with it) and mean Dice >= 0.80. The whole
    scan, mirroring on, as ``vertkd_demo`` runs it (about 20 s on 2 cores)."""
    from nnunet_vertkd.evaluation.metrics import dice
    predictor = pretrained.pretrained_predictor(device="cpu", num_threads=2, allow_tqdm=False)
    mask, _, record = predictor.predict_single_image(sitk.ReadImage(str(CT_012)), "sub-verse012")
    pred = sitk.GetArrayFromImage(mask)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(DEMO_DATA / "derivatives" / "sub-verse012" /
                                                    "sub-verse012_seg-vert_msk.nii.gz")))
    scores = {}
    for label in np.unique(ref[ref > 0]):
        overlapping = pred[(ref == label) & (pred > 0)]
        best = np.bincount(overlapping).argmax() if overlapping.size else 0
        scores[int(label)] = dice(ref == label, pred == best) if best else 0.0
    assert sorted(scores) == [17, 18, 19, 20, 21, 22]
    assert min(scores.values()) >= 0.5, scores
    assert np.mean(list(scores.values())) >= 0.80, scores
