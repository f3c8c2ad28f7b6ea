"""nnunet_vertkd.model_contract: the names the plugin's files share, and that every user takes them from there."""
from nnunet_vertkd import model_contract, orientation
from nnunet_vertkd.trainers import teacher_discovery


def test_names():
    assert model_contract.CHECKPOINT_KEY == "vertkd"
    assert model_contract.DATASET_JSON_KEY == "vertkd"
    assert model_contract.PLANS_KEY == "vertkd_teacher"


def test_one_definition():
    assert orientation.DATASET_JSON_KEY is model_contract.DATASET_JSON_KEY
    assert teacher_discovery.PLANS_KEY is model_contract.PLANS_KEY
