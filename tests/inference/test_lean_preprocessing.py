"""Memory-lean preprocessing and export (peak RSS): same numbers as nnU-Net's, bounded temporaries."""
import copy
import json
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from helpers import stand_in_model as h
from nnunet_vertkd.centroids import centroids_from_mask
from nnunet_vertkd.inference import geometry, lean_preprocessing
from nnunet_vertkd.inference.lean_preprocessing import resample_slabwise


def nnunet_resample(x, new_shape, order=3):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
    return resample_data_or_seg_to_shape(x[None], new_shape, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], is_seg=False,
                                         order=order, order_z=0, force_separate_z=None)[0]


@pytest.mark.parametrize("shape, new_shape, order", [((70, 50, 60), (90, 40, 61), 3), ((70, 50, 60), (41, 77, 30), 3),
                                                     ((40, 30, 20), (55, 30, 18), 1), ((9, 8, 7), (9, 8, 7), 3)])
def test_slabwise_resampling_equals_nnunet(monkeypatch, shape, new_shape, order):
    monkeypatch.setattr(lean_preprocessing, "SLAB_BYTES", 8 * 50 * 60 * 30)  # many slabs
    monkeypatch.setattr(lean_preprocessing, "MIN_SLAB_SLICES", 4)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 2).astype(np.float32)
    x[:, :5] = -1.0
    np.testing.assert_allclose(resample_slabwise(x, new_shape, order), nnunet_resample(x, new_shape, order),
                               rtol=0, atol=2e-6)


def test_slabwise_resampling_bounds_the_temporaries(monkeypatch):
    monkeypatch.setattr(lean_preprocessing, "SLAB_BYTES", 2 ** 20)
    monkeypatch.setattr(lean_preprocessing, "MIN_SLAB_SLICES", 8)
    x = np.random.default_rng(0).normal(size=(240, 48, 48)).astype(np.float32)  # 2.2 MB
    new_shape = (300, 60, 60)
    nnunet_resample(x[:20], (25, 60, 60))  # imports and caches outside the measurement
    tracemalloc.start()

    def peak(fn):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        used = tracemalloc.get_traced_memory()[1] - base
        del result
        return used

    lean_peak = peak(lambda: resample_slabwise(x, new_shape))
    nnunet_peak = peak(lambda: nnunet_resample(x, new_shape))
    tracemalloc.stop()
    out_bytes = 4 * int(np.prod(new_shape))  # float32 output, 4.3 MB; nnU-Net: float64 copies of everything
    assert lean_peak < out_bytes + 12 * 2 ** 20, (lean_peak, nnunet_peak)  # + one slab's buffers
    assert lean_peak < 0.5 * nnunet_peak, (lean_peak, nnunet_peak)


def test_lean_run_case_npy_equals_nnunet_preprocessing():
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm = PlansManager(h.plans_dict((1.5, 1.5, 1.5), (32, 32, 32)))
    cm = pm.get_configuration("3d_fullres")
    ct, _ = h.phantom(n_blocks=3)
    ct.SetSpacing((0.9, 1.1, 1.3))
    data, props = geometry.nnunet_input(ct)
    dj = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "vertebra": 1}}
    ref, _, ref_props = DefaultPreprocessor(verbose=False).run_case_npy(data, None, copy.deepcopy(props), pm, cm, dj)
    got, _, got_props = lean_preprocessing.run_case_npy(DefaultPreprocessor(verbose=False), data,
                                                        copy.deepcopy(props), pm, cm, dj)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    assert json.dumps(got_props, default=str) == json.dumps(ref_props, default=str)


def test_centroids_without_full_size_temporaries_are_the_same():
    rng = np.random.default_rng(1)
    m = np.zeros((40, 50, 60), np.uint8)
    for lab in (1, 3, 7, 28):
        z, y, x = rng.integers(0, 30), rng.integers(0, 40), rng.integers(0, 50)
        m[z:z + 8, y:y + 6, x:x + 7] = lab
    m[(m == 0) & (rng.random(m.shape) < 0.001)] = 5  # a scattered label
    labels = [int(v) for v in np.unique(m) if v]
    ref = ndimage.center_of_mass(np.ones_like(m), m, labels)
    got = centroids_from_mask(m)
    assert sorted(got) == labels
    for lab, c in zip(labels, ref):
        np.testing.assert_allclose(got[lab], c[::-1], atol=1e-9)


@pytest.mark.slow
def test_memory_command_runs(tmp_path):
    """``python -m nnunet_vertkd.benchmarks.memory`` on a small scan, with the stand-in spine model too."""
    from nnunet_vertkd.benchmarks import memory
    out = tmp_path / "mem.json"
    rc = memory.main(["--shape", "64", "64", "80", "--spacing", "1.5", "1.5", "1.5", "--work-dir", str(tmp_path / "w"),
                      "--json", str(out), "--spine-m", "standin"])
    result = json.loads(out.read_text())
    assert rc == 0 and result["within_limit"] and 0.1 < result["peak_rss_gb"] < 4
    assert result["n_vertebrae"] and result["stage_seconds"]["spine"] > 0


@pytest.mark.parametrize("shape, new_shape", [((50, 40, 30), (77, 35, 44)), ((70, 20, 20), (33, 20, 20)),
                                              ((10, 12, 14), (10, 30, 7))])
def test_chunked_trilinear_equals_torch(monkeypatch, shape, new_shape):
    """The spine map's resampling, chunk by chunk and from uint8 without a float32 copy of the whole input."""
    import torch
    import torch.nn.functional as F
    from nnunet_vertkd.inference import spine_location
    monkeypatch.setattr(spine_location, "RESAMPLE_CHUNK_SLICES", 7)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    for arr in (x, (x > 0.5).astype(np.uint8)):
        ref = F.interpolate(torch.from_numpy(arr.astype(np.float32))[None, None], size=new_shape, mode="trilinear",
                            align_corners=False)[0, 0].numpy()
        got = spine_location.resample_linear(arr, new_shape)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)  # torch computes source coordinates in float32
