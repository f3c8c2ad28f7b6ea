"""One CT padding everywhere: normalised air outside the volume, in training samples and in the loop."""
import types

import numpy as np
import pytest

from nnunet_vertkd.ct_padding import normalised_air_value
from nnunet_vertkd.trainers.data.transforms import VertebraSpatialAugmentation, draw_affine, AugmentationSettings


def _managers(scheme="CTNormalization", mean=300.0, std=200.0, p005=-900.0):
    pm = types.SimpleNamespace(foreground_intensity_properties_per_channel={
        "0": {"mean": mean, "std": std, "percentile_00_5": p005, "percentile_99_5": 1500.0}})
    cm = types.SimpleNamespace(normalization_schemes=[scheme])
    return pm, cm


def test_air_value_is_the_clipped_lower_bound_normalised():
    assert normalised_air_value(*_managers()) == pytest.approx((-900 - 300) / 200)
    assert normalised_air_value(*_managers(scheme="ZScoreNormalization")) is None


@pytest.mark.parametrize("rotate", [False, True])
def test_training_patch_is_air_outside_the_volume(rotate):
    """A patch centred on the corner of the volume: everything outside is the air value, as in inference
    (the old code padded with 0, which after CTNormalization is the foreground mean, i.e. bone)."""
    air = -6.0
    data = np.full((1, 20, 20, 20), 2.0, np.float32)
    seg = np.zeros((1, 20, 20, 20), np.int16)
    seg[0, 2:6, 2:6, 2:6] = 1
    aug = VertebraSpatialAugmentation((16, 16, 16), ct_pad_value=air)
    if rotate:
        settings = AugmentationSettings(p_rotation=1.0, p_zoom=1.0)
        affine = draw_affine(np.random.default_rng(0), settings, 0)
    else:
        affine = np.eye(3)
    image, memory, target = aug.apply(data, seg, 1, np.array([0.5, 0.5, 0.5]), affine, False)
    image = image[0].numpy()
    values = np.unique(np.round(image, 4))
    assert values.min() == pytest.approx(air) and values.max() == pytest.approx(2.0)
    if not rotate:
        assert np.all(image[:7] == air) and np.all(image[8:, 8:, 8:] == 2.0)


def test_no_air_value_pads_with_the_data_minimum():
    data = np.full((1, 10, 10, 10), 5.0, np.float32)
    data[0, 0, 0, 0] = -3.0
    seg = np.zeros((1, 10, 10, 10), np.int16)
    aug = VertebraSpatialAugmentation((8, 8, 8), ct_pad_value=None)
    image, _, _ = aug.apply(data, seg, 1, np.array([0.5, 0.5, 0.5]), np.eye(3), False)
    assert image.min().item() == pytest.approx(-3.0)
    assert np.all(image[0, :3].numpy() == -3.0)
