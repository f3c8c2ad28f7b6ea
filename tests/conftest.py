import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VERSE_SAMPLE_DIR = REPO_ROOT.parent / "shared" / "data" / "verse_sample"


@pytest.fixture
def verse_sample_dir():
    """The real VerSe'19 sample cases shipped beside the repository (../shared/data/verse_sample)."""
    if not VERSE_SAMPLE_DIR.is_dir():
        pytest.skip(f"real VerSe samples not found at {VERSE_SAMPLE_DIR} (expected ../shared/data/verse_sample)")
    return VERSE_SAMPLE_DIR


@pytest.fixture
def nnunet_env(tmp_path):
    """A private nnU-Net environment (raw/preprocessed/results under tmp_path) for subprocesses.

    nnUNet_n_proc_DA is left alone: nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA) and
    crashes on 0. Set it to 0 only for training commands, where it makes data loading single-process.
    """
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = tmp_path / name
        folder.mkdir()
        env[name] = str(folder)
    env.update({"nnUNet_compile": "false", "OMP_NUM_THREADS": "1",
                "nnUNet_def_n_proc": "1"})
    return env


@pytest.fixture
def converter_dirs(tmp_path):
    """Empty nnU-Net raw / preprocessed / results folders for the converter (keys raw, pre, res)."""
    d = {k: tmp_path / k for k in ("raw", "pre", "res")}
    for p in d.values():
        p.mkdir()
    return d


@pytest.fixture
def standin_model(tmp_path, monkeypatch):
    """The stand-in vertebra model (tests/helpers/stand_in_model.py) in a private nnU-Net environment; returns its
    model folder (for ``vertkd_predict -m``)."""
    from helpers import stand_in_model as h
    h.set_env(monkeypatch, tmp_path / "ext")
    results = tmp_path / "results"
    folder = h.make_standin_vertebra_model(results, tmp_path / "ext")
    for name, sub in (("nnUNet_results", "results"), ("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    return folder
