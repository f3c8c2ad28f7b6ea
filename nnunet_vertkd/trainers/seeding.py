"""Seeding and CPU threads of a trainer, applied before nnU-Net's ``__init__`` builds anything.

``SeededTrainerMixin`` (first in the bases of a trainer class) seeds Python's ``random``, NumPy's global
generator and torch, so that a seed fixes the initial weights, the sampling and the augmentation (with
single-process data loading, ``nnUNet_n_proc_DA=0``), and limits torch's CPU threads:

=========================  ====================================================================================
environment variable       meaning
=========================  ====================================================================================
``VERTKD_STUDY_SEED``      the seed; set per run by ``vertkd_benchmark study --seeds`` and ``vertkd_demo --train``
``VERTKD_SEED``            the seed, for any other training
``VERTKD_NUM_THREADS``     torch's CPU threads (``nnUNetv2_train -device cpu`` uses every core; two trainings
                           sharing a small machine run much faster with 1 thread each)
=========================  ====================================================================================

When both seed variables are set, ``VERTKD_STUDY_SEED`` wins: it is the seed of one study run, while
``VERTKD_SEED`` may be a default left in the shell. When neither is set the class attribute ``default_seed`` is
used (``None``: not seeded; the CPU recipe uses 0).
"""
from __future__ import annotations

import os
import random
from typing import Mapping, Optional

import numpy as np
import torch

STUDY_SEED_ENV = "VERTKD_STUDY_SEED"
SEED_ENV = "VERTKD_SEED"
#: seed variables in order of precedence (the first one set wins)
SEED_ENVS = (STUDY_SEED_ENV, SEED_ENV)
THREADS_ENV = "VERTKD_NUM_THREADS"


def _int_from_env(environ: Mapping[str, str], name: str) -> Optional[int]:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not an integer") from None


def seed_from_env(environ: Optional[Mapping[str, str]] = None, default: Optional[int] = None) -> Optional[int]:
    """The seed of ``SEED_ENVS`` (first set wins), else ``default``."""
    environ = os.environ if environ is None else environ
    for name in SEED_ENVS:
        seed = _int_from_env(environ, name)
        if seed is not None:
            return seed
    return default


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_threads_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """``torch.set_num_threads($VERTKD_NUM_THREADS)`` when the variable is set (at least 1); returns the count."""
    threads = _int_from_env(os.environ if environ is None else environ, THREADS_ENV)
    if threads is None:
        return None
    threads = max(1, threads)
    torch.set_num_threads(threads)
    return threads


class SeededTrainerMixin:
    """Seeds (module docstring) and applies ``$VERTKD_NUM_THREADS`` before nnU-Net's ``__init__``."""
    #: seed used when no seed variable is set (None: not seeded)
    default_seed: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        seed = seed_from_env(default=self.default_seed)
        if seed is not None:
            seed_everything(seed)
        apply_threads_from_env()
        super().__init__(plans, configuration, fold, dataset_json, device)
