"""Per-vertebra sampling: memory/target definition, region balancing, memory cleaning, augmentation keeps the
superior-inferior order. Runs on an in-memory fake nnU-Net dataset (no preprocessing needed)."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform

from nnunet_vertkd.labels import region_of_nnunet_label
from nnunet_vertkd.trainers.common import orientation_axes
from nnunet_vertkd.trainers.data.dataloader import VertKDDataLoader
from nnunet_vertkd.trainers.data.transforms import AugmentationSettings
from nnunet_vertkd.trainers.data.vertebra_sampling import (
    RegionBalancedSampler, all_samples, memory_and_target, sample_probabilities, vertebra_labels_from_properties,
    vertebra_labels_in_seg)

torch.set_num_threads(1)

#: statistical tolerance for empirical region frequencies (expected std ~0.0047 at 10000 draws)
FREQ_TOL = 0.02
PATCH = (32, 32, 32)
FIRST, N_VERT, HEIGHT = 5, 6, 9  # labels 5..10 (C5..T3), 9 slices each (7 bone + 2 disc)


def make_volume(superior_at_low_index=True):
    """(data (1,X,Y,Z), seg (1,X,Y,Z)) with vertebrae stacked along axis 0, label FIRST at the top."""
    shape = (64, 48, 48)
    seg = np.zeros(shape, dtype=np.int16)
    for n in range(N_VERT):
        z0 = 4 + n * HEIGHT
        seg[z0:z0 + HEIGHT - 2, 14:34, 12:36] = FIRST + n
    seg[:, :, :2] = -1  # outside nnU-Net's crop
    if not superior_at_low_index:
        seg = seg[::-1].copy()
    rng = np.random.default_rng(0)
    data = (seg > 0).astype(np.float32) * 2 + rng.normal(0, 0.1, shape).astype(np.float32)
    return data[None], seg[None]


class FakeDataset:
    """Just enough of nnU-Net's dataset interface (identifiers, load_case) for the data loader."""

    def __init__(self, cases):
        self.cases = cases
        self.identifiers = list(cases)

    def load_case(self, k):
        data, seg = self.cases[k]
        labels = [v for v in np.unique(seg) if v > 0]
        props = {"class_locations": {int(v): np.argwhere(seg == v) for v in labels}}
        return data, seg, None, props


@pytest.fixture
def label_manager():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunet_vertkd.labels import nnunet_dataset_labels
    return LabelManager(nnunet_dataset_labels(), None)


def make_loader(label_manager, sup_low=True, clean=0.0, augment=False, translation=0, balance=True):
    data, seg = make_volume(sup_low)
    dl = VertKDDataLoader(FakeDataset({"a": (data, seg)}), 1, PATCH, label_manager, superior_axis=0,
                          superior_at_low_index=sup_low, left_right_axis=2, spacing_mm=(1, 1, 1),
                          memory_cleaning_probability=clean, balance_regions=balance,
                          max_translation_voxels=(translation,) * 3, augment=augment,
                          augmentation=AugmentationSettings(p_rotation=1.0, p_zoom=1.0))
    dl.seed(1)
    return dl, seg[0]


def si_rows(mask):
    return np.nonzero(mask.numpy().any(axis=(1, 2)))[0]


def test_memory_holds_exactly_the_vertebrae_above_t():
    seg = np.array([-1, 0, 1, 2, 3, 4, 5, 3, 0])
    memory, target = memory_and_target(seg, 3)
    assert memory.tolist() == [False, False, True, True, False, False, False, False, False]
    assert target.tolist() == [False, False, False, False, True, False, False, True, False]
    assert vertebra_labels_in_seg(seg) == [1, 2, 3, 4, 5]
    props = {"class_locations": {1: np.zeros((3, 4)), 2: np.zeros((0, 4)), 7: np.ones((1, 4))}}
    assert vertebra_labels_from_properties(props) == [1, 7]


def test_sample_memory_matches_direct_crop(label_manager):
    """No augmentation, no translation: the patch's memory is exactly the crop of (seg > 0) & (seg < t)."""
    dl, seg = make_loader(label_manager)
    for t in range(FIRST, FIRST + N_VERT):
        s = dl.make_sample("a", t)
        mem_full, tgt_full = memory_and_target(seg, t)
        centroid = np.argwhere(seg == t).mean(0)
        lo = np.round(centroid + 0.5 - np.array(PATCH) / 2).astype(int)  # patch starts at centre - P/2
        pad = max(PATCH)
        sl = tuple(slice(a + pad, a + pad + p) for a, p in zip(lo, PATCH))
        crop_mem = np.pad(mem_full, pad)[sl]
        crop_tgt = np.pad(tgt_full, pad)[sl]
        assert np.array_equal(s["memory"].numpy(), crop_mem), t
        assert np.array_equal(s["target"].numpy(), crop_tgt), t
        assert s["target"].any()
        assert not (s["memory"] & s["target"]).any()


@pytest.mark.parametrize("sup_low", [True, False])
def test_cleaned_samples_have_empty_memory_and_target_at_top(label_manager, sup_low):
    dl, seg = make_loader(label_manager, sup_low=sup_low, clean=1.0, translation=8)
    for t in range(FIRST + 1, FIRST + N_VERT):
        s = dl.make_sample("a", t)
        assert s["clean_memory"] and not s["memory"].any()
        rows = si_rows(s["target"])
        top = rows.min() if sup_low else PATCH[0] - 1 - rows.max()
        assert top == 0, (t, rows)
        assert len(rows) == HEIGHT - 2  # the whole vertebra is in view, only its top is at the border


@pytest.mark.parametrize("sup_low", [True, False])
def test_cleaned_samples_with_rotation_and_zoom(label_manager, sup_low):
    dl, _ = make_loader(label_manager, sup_low=sup_low, clean=1.0, augment=True, translation=8)
    for _ in range(10):
        for t in range(FIRST + 1, FIRST + N_VERT):
            s = dl.make_sample("a", t)
            assert not s["memory"].any()
            rows = si_rows(s["target"])
            top = rows.min() if sup_low else PATCH[0] - 1 - rows.max()
            assert top <= 1, (t, rows)  # top row up to interpolation of the rotated boundary


def test_cleaning_probability_about_one_third(label_manager):
    dl, _ = make_loader(label_manager, clean=1.0 / 3.0, translation=8)
    n = 600
    cleaned = np.mean([dl.placement.get_parameters(np.array([[30.0, 24, 24]]), np.eye(3), dl.rng).clean_memory
                       for _ in range(n)])
    assert abs(cleaned - 1 / 3) < 0.06  # 3 sigma at n = 600


@pytest.mark.parametrize("sup_low", [True, False])
def test_superior_inferior_order_survives_augmentation(label_manager, sup_low):
    """After rotation, zoom, translation, intensity and mirroring the target still lies below the memory, and
    memory and target stay binary and disjoint."""
    dl, _ = make_loader(label_manager, sup_low=sup_low, augment=True, translation=8)
    checked = 0
    for _ in range(12):
        for t in range(FIRST + 1, FIRST + N_VERT):
            s = dl.make_sample("a", t)
            mem, tgt = s["memory"], s["target"]
            assert mem.dtype == torch.bool and tgt.dtype == torch.bool
            assert not (mem & tgt).any()
            assert set(np.unique(s["weights"].numpy() >= 1)) == {True}
            if mem.any() and tgt.any():
                mem_si = np.argwhere(mem.numpy())[:, 0].mean()
                tgt_si = np.argwhere(tgt.numpy())[:, 0].mean()
                assert (tgt_si > mem_si) if sup_low else (tgt_si < mem_si)
                checked += 1
    assert checked > 20


def test_batch_layout(label_manager):
    dl, _ = make_loader(label_manager, augment=True, translation=4)
    b = dl.generate_train_batch()
    assert b["data"].shape == (1, 2, *PATCH) and b["target"].shape == (1, 1, *PATCH)
    assert b["weights"].shape == (1, 1, *PATCH)
    assert set(torch.unique(b["data"][:, 1]).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(b["target"]).tolist()) <= {0.0, 1.0}


def test_mirroring_only_left_right(label_manager):
    dl, _ = make_loader(label_manager, augment=True)
    mirrors = [t.transform for t in dl.intensity.transforms if isinstance(getattr(t, "transform", None),
                                                                           MirrorTransform)]
    assert len(mirrors) == 1 and tuple(mirrors[0].allowed_axes) == (2,)


def test_axes_come_from_orientation_and_transpose():
    class PM:
        transpose_forward = [0, 1, 2]
    dj = {"vertkd": {"orientation": "LPI"}}
    assert orientation_axes(dj, PM) == (0, True, 2)
    PM.transpose_forward = [2, 0, 1]
    assert orientation_axes(dj, PM) == (1, True, 0)
    dj = {"vertkd": {"orientation": "RAS"}}  # k runs inferior -> superior
    PM.transpose_forward = [0, 1, 2]
    assert orientation_axes(dj, PM) == (0, False, 2)
    with pytest.raises(KeyError):
        orientation_axes({}, PM)


def test_region_balance_within_tolerance():
    # imbalanced: 2 cervical, 12 thoracic, 4 lumbar pairs over three cases
    labels = {"c1": [6, 7, 8, 9, 10], "c2": list(range(11, 20)), "c3": [21, 22, 23, 24]}
    sampler = RegionBalancedSampler(labels, balance_regions=True)
    rng = np.random.default_rng(0)
    n = 10000
    regions = [sampler.draw(rng).region for _ in range(n)]
    for r in ("cervical", "thoracic", "lumbar"):
        assert abs(regions.count(r) / n - 1 / 3) < FREQ_TOL, r
    assert sampler.region_frequencies() == pytest.approx({"cervical": 1 / 3, "thoracic": 1 / 3, "lumbar": 1 / 3})
    # without balancing every pair is equally likely
    p = sample_probabilities(all_samples(labels), balance_regions=False)
    assert np.allclose(p, 1 / 18)
    unbalanced = RegionBalancedSampler(labels, balance_regions=False)
    regions = [unbalanced.draw(rng).region for _ in range(n)]
    assert abs(regions.count("cervical") / n - 2 / 18) < FREQ_TOL


def test_balance_ignores_absent_regions():
    sampler = RegionBalancedSampler({"a": [1, 2, 3, 8]}, balance_regions=True)
    freq = sampler.region_frequencies()
    assert freq["lumbar"] == 0 and freq["cervical"] == pytest.approx(0.5)
    assert region_of_nnunet_label(8) == "thoracic"
