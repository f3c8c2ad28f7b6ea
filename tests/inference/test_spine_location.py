"""Step 1 helpers: the HU heuristic and the mapping of a raw-grid map into the preprocessed space."""
import numpy as np
import SimpleITK as sitk

from helpers import stand_in_model as h
from nnunet_vertkd.inference.spine_location import heuristic_spine_mask, to_preprocessed_space


def test_heuristic_joins_the_vertebrae_and_ignores_lateral_bone():
    ct, lab = h.phantom()
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    ref = sitk.GetArrayFromImage(lab)
    hu[20:30, 15:25, 1:4] = 700  # a lateral "rib"
    mask = heuristic_spine_mask(hu, (1.0, 1.0, 1.0), lr_axis=2, si_axis=0)
    assert mask[ref > 0].all()  # every block, one component across the gaps
    assert not mask[20:30, 15:25, 1:3].any()
    assert mask.sum() < 0.5 * mask.size


def test_heuristic_on_air_or_soft_tissue_is_empty():
    assert heuristic_spine_mask(np.full((10, 10, 10), -1000.0), (1, 1, 1)).sum() == 0
    assert heuristic_spine_mask(np.full((10, 10, 10), 40.0), (1, 1, 1)).sum() == 0


def test_to_preprocessed_space_transposes_crops_and_resamples():
    raw = np.zeros((10, 12, 14), np.float32)  # (z, y, x)
    raw[2:4, 5:7, 8:10] = 1
    props = {"bbox_used_for_cropping": [[8, 10], [5, 7], [2, 4]]}  # bbox in transposed axes (x, y, z)
    out = to_preprocessed_space(raw, props, (2, 1, 0), (4, 4, 4))
    assert out.shape == (4, 4, 4)
    np.testing.assert_allclose(out, 1.0)
