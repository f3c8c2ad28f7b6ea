"""The CPU training recipe (nnunet_vertkd/trainers/cpu_recipe.py) and the cheap border-weight maps."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from nnunet_vertkd.ext_trainers_path import EXT_TRAINER_DIR
from nnunet_vertkd.trainers import cpu_recipe
from nnunet_vertkd.trainers.losses.lessmann import (
    BORDER_WEIGHT_TOLERANCE, border_weight_map, border_weight_map_reference)

RECIPE = ("VertKDTeacherTrainer_cpu2mm", "VertKDStudentTrainer_cpu2mm", "VertKDStudentTrainer_scratch_cpu2mm",
          "VertKDSpineTrainer_cpu4mm", "VertKDTeacherTrainer_cpu2mm_realFT", "VertKDStudentTrainer_cpu2mm_realFT",
          "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3", "VertKDTeacherTrainer_cpu2mm_realFT_long",
          "VertKDStudentTrainer_cpu2mm_realFT_long_kd")


def test_recipe_classes_are_found_by_stock_lookup():
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
            f"for n in {RECIPE!r}:\n"
            "    c = f(n); print('FOUND', n, c.__module__)\n")
    env = dict(os.environ, nnUNet_extTrainer=EXT_TRAINER_DIR)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    for n in RECIPE:
        assert f"FOUND {n} nnunet_vertkd.trainers" in res.stdout


def test_recipe_settings():
    t = cpu_recipe.VertKDTeacherTrainer_cpu2mm
    s = cpu_recipe.VertKDStudentTrainer_cpu2mm
    assert t.patch_size_voxels == (64, 64, 64) == s.patch_size_voxels  # 128 mm at 2 mm
    assert t.features == (16, 32, 64, 128) and s.features == (8, 16, 32, 64)
    assert s.teacher_trainer_name == "VertKDTeacherTrainer_cpu2mm" and s.distillation == "soft_outputs"
    assert t.lr_schedule == "poly" and t.max_translation_fraction == 0.5 and t.border_sigma_mm == 6.0
    # names written out in the source (not generated), so that grep finds them
    src = open(cpu_recipe.__file__, encoding="utf-8").read()
    for n in RECIPE:
        assert f"class {n}(" in src


def test_real_fine_tune_settings_and_mixture_sampler():
    from nnunet_vertkd.trainers.data.vertebra_sampling import RegionBalancedSampler
    t, s = cpu_recipe.VertKDTeacherTrainer_cpu2mm_realFT, cpu_recipe.VertKDStudentTrainer_cpu2mm_realFT
    assert t.init_from_trainer == "VertKDTeacherTrainer_cpu2mm" and s.init_from_trainer == "VertKDStudentTrainer_cpu2mm"
    assert s.teacher_trainer_name == "VertKDTeacherTrainer_cpu2mm_realFT" and s.distillation == "soft_outputs"
    assert t.fp_weight_start == t.fp_weight_end == 1.0
    base = RegionBalancedSampler({f"syn{i}": list(range(1, 25)) for i in range(10)})
    real = RegionBalancedSampler({"sub-verse005": [20, 21, 22, 23, 24]})
    mix = cpu_recipe.RealCaseMixtureSampler(base, real, 0.5)
    rng = np.random.default_rng(0)
    draws = [mix.draw(rng).case for _ in range(4000)]
    frac = sum(c == "sub-verse005" for c in draws) / len(draws)
    assert abs(frac - 0.5) < 0.03


def test_rounds_start_from_and_distil_from_recipe_classes():
    """Every fine-tuning round starts from (and every student distils from) a class of the recipe with the same
    network: a typo or a teacher/student mix-up would only show after hours of training."""
    from nnunet_vertkd import trainers
    rounds = [c for n, c in vars(cpu_recipe).items() if n.startswith("VertKD") and getattr(c, "init_from_trainer", None)]
    assert len(rounds) >= 9
    for cls in rounds:
        base = getattr(trainers, cls.init_from_trainer)
        assert base.features == cls.features, cls.__name__
        teacher = getattr(cls, "teacher_trainer_name", None)
        if teacher and getattr(cls, "distillation", None) is not None:
            assert getattr(trainers, teacher).features == cpu_recipe.VertKDTeacherTrainer_cpu2mm.features
    kd = cpu_recipe.VertKDStudentTrainer_cpu2mm_realFT_long_kd
    assert kd.teacher_trainer_name == "VertKDTeacherTrainer_cpu2mm_realFT_long" and kd.distillation == "soft_outputs"
    assert kd.init_from_trainer == "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3"


def _blob(shape, seed, box):
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.random(shape), 3)
    t = np.zeros(shape, bool)
    t[box] = True
    return t & (f > np.percentile(f, 25))


@pytest.mark.parametrize("shape,spacing,box", [
    ((64, 64, 64), (2.0, 2.0, 2.0), np.s_[20:45, 10:40, 15:50]),
    ((48, 60, 30), (1.0, 1.0, 3.0), np.s_[5:30, 20:58, :12]),       # touches the array edge, anisotropic
    ((40, 40, 40), (1.0, 1.0, 1.0), np.s_[:, :, :]),                 # fills the array but for the noise holes
])
def test_border_weight_map_equals_scipy_reference(shape, spacing, box):
    t = _blob(shape, 1, box)
    ref = border_weight_map_reference(t, spacing)
    fast = border_weight_map(t, spacing)
    assert fast.dtype == np.float32 and fast.shape == t.shape
    np.testing.assert_allclose(fast, ref, rtol=0, atol=2 * BORDER_WEIGHT_TOLERANCE + 1e-6)


def test_border_weight_map_edge_cases():
    assert np.all(border_weight_map(np.zeros((10, 10, 10), bool)) == 1)
    assert np.all(border_weight_map(np.ones((10, 10, 10), bool)) == 1)  # the array edge is no surface
    one = np.zeros((9, 9, 9), bool)
    one[4, 4, 4] = True
    np.testing.assert_allclose(border_weight_map(one), border_weight_map_reference(one), atol=1e-5)


def _seconds(fn, t, repeats=3):
    fn(t)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(t)
    return (time.perf_counter() - start) / repeats


def test_border_weight_map_is_cheap_at_128():
    """Several times faster than the whole-array scipy definition (relative: the machine may be loaded)."""
    t = _blob((128, 128, 128), 2, np.s_[40:90, 30:100, 35:85])
    fast, ref = _seconds(border_weight_map, t), _seconds(border_weight_map_reference, t)
    assert fast < ref / 3, f"{fast:.3f} s vs {ref:.3f} s (scipy) per 128^3 map"


if __name__ == "__main__":  # timings quoted in docs/trainers.md: python tests/test_cpu_recipe.py
    for shape, spacing, box in (((128, 128, 128), (1.0, 1.0, 1.0), np.s_[40:90, 30:100, 35:85]),
                                ((64, 64, 64), (2.0, 2.0, 2.0), np.s_[20:45, 15:50, 17:42])):
        t = _blob(shape, 2, box)
        for name, fn in (("scipy reference", border_weight_map_reference), ("border_weight_map", border_weight_map)):
            fn(t, spacing)
            start = time.perf_counter()
            for _ in range(5):
                fn(t, spacing)
            print(f"{shape} {name}: {(time.perf_counter() - start) / 5:.3f} s per map")
