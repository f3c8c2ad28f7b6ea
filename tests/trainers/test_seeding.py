"""One seeding mixin for every seeded trainer (nnunet_vertkd/trainers/seeding.py): both variable names, which
wins, the class default, the thread limit."""
import random

import numpy as np
import pytest
import torch

from nnunet_vertkd.trainers import seeding
from nnunet_vertkd.trainers.seeding import SEED_ENV, STUDY_SEED_ENV, THREADS_ENV, SeededTrainerMixin


class _Base:
    """Stands in for nnUNetTrainer: records what it was built with and draws the first random numbers."""

    def __init__(self, plans, configuration, fold, dataset_json, device):
        self.args = (plans, configuration, fold, dataset_json, device)
        self.draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))


class Seeded(SeededTrainerMixin, _Base):
    pass


class SeededByDefault(SeededTrainerMixin, _Base):
    default_seed = 0


def build(cls=Seeded):
    return cls({}, "3d_fullres", 0, {}, torch.device("cpu"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (STUDY_SEED_ENV, SEED_ENV, THREADS_ENV):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", [STUDY_SEED_ENV, SEED_ENV])
def test_same_seed_same_first_random_numbers_for_either_variable(monkeypatch, name):
    monkeypatch.setenv(name, "7")
    first, second = build(), build()
    assert first.draws == second.draws
    assert first.args == ({}, "3d_fullres", 0, {}, torch.device("cpu"))  # passed on unchanged
    monkeypatch.setenv(name, "8")
    assert build().draws != first.draws


def test_both_names_give_the_same_numbers_and_the_study_seed_wins(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "3")
    general = build().draws
    monkeypatch.delenv(SEED_ENV)
    monkeypatch.setenv(STUDY_SEED_ENV, "3")
    assert build().draws == general
    monkeypatch.setenv(SEED_ENV, "4")  # both set: VERTKD_STUDY_SEED wins
    assert build().draws == general
    assert seeding.seed_from_env({SEED_ENV: "4", STUDY_SEED_ENV: "3"}) == 3


def test_class_default_when_no_variable_is_set(monkeypatch):
    assert build(SeededByDefault).draws == build(SeededByDefault).draws
    monkeypatch.setenv(SEED_ENV, "0")
    assert build().draws == build(SeededByDefault).draws
    assert seeding.seed_from_env({}, None) is None and seeding.seed_from_env({SEED_ENV: " "}, 5) == 5


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "abc")
    with pytest.raises(ValueError, match="VERTKD_SEED"):
        build()


def test_thread_limit(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    build()
    assert torch.get_num_threads() == 1
    assert seeding.apply_threads_from_env({THREADS_ENV: "0"}) == 1  # at least one
    assert seeding.apply_threads_from_env({}) is None


def test_every_seeded_trainer_uses_the_one_mixin():
    import nnunet_vertkd.trainers as trainers
    from nnunet_vertkd.trainers.benchmarking import _SeedFromEnv
    from nnunet_vertkd.trainers.cpu_recipe import _SeededCPU
    assert issubclass(_SeedFromEnv, SeededTrainerMixin) and issubclass(_SeededCPU, SeededTrainerMixin)
    assert trainers.VertKDTeacherTrainer_cpu2mm.default_seed == 0
    assert trainers.VertKDStudentTrainer_cpu2mm_realFT2.default_seed == 0
    assert trainers.VertKDTeacherTrainer_studyMini.default_seed is None
    assert trainers.VertKDSpineTrainer_demo.__mro__.index(SeededTrainerMixin) < \
        trainers.VertKDSpineTrainer_demo.__mro__.index(trainers.VertKDSpineTrainer)
