"""Vertebral-body centroids (nnunet_vertkd.labelling.body_centre): a hand-made vertebra and the real annotated
VerSe samples (the VerSe centroids are body centres, not centres of mass)."""
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_vertkd.centroids import centroids_from_mask, read_centroids
from nnunet_vertkd.labelling.body_centre import body_centroids


def toy_vertebra(shape=(40, 60, 50)):
    """A 16 x 20 x 24-voxel body with a long "spinous process" behind it (axis 1 = posterior)."""
    m = np.zeros(shape, np.uint8)
    m[12:28, 10:30, 13:37] = 3          # body: centre (19.5, 19.5, 24.5)
    m[15:25, 30:56, 22:28] = 3          # process: 10 x 26 x 6
    return m


def test_toy_vertebra_body_centre():
    m = toy_vertebra()
    com = centroids_from_mask(m)[3]
    body = body_centroids(m, (1.0, 1.0, 1.0))[3]
    assert body == pytest.approx((24.5, 19.5, 19.5), abs=0.6)  # (X=i, Y=j, Z=k)
    assert abs(com[1] - 19.5) > 3  # the centre of mass is pulled backwards
    # anisotropic spacing: same anatomy sampled at 2 mm along k
    m2 = m[::2]
    body2 = body_centroids(m2, (2.0, 1.0, 1.0))[3]
    assert body2[0] == pytest.approx(24.5, abs=0.6) and body2[1] == pytest.approx(19.5, abs=1.0)
    assert body_centroids(np.zeros((4, 4, 4), np.uint8), (1, 1, 1)) == {}


def _real(verse_sample_dir, rel):
    base = verse_sample_dir / rel
    mask = sitk.ReadImage(str(base) + "_seg-vert_msk.nii.gz")
    arr = np.rint(sitk.GetArrayFromImage(mask)).astype(np.int16)
    _, ctd = read_centroids(str(base) + "_seg-subreg_ctd.json")
    return arr, np.array(mask.GetSpacing()[::-1]), ctd


def distances(arr, spacing_kji, ctd, centroids):
    sp_xyz = spacing_kji[::-1]
    return [float(np.linalg.norm((np.array(centroids[lab]) - np.array(xyz)) * sp_xyz))
            for lab, xyz in ctd.items() if lab in centroids]


def test_real_samples_body_centres(verse_sample_dir):
    """sub-verse004 (T9-L5) and sub-verse012 (T10-L3): annotated centroids vs body centres and centres of mass."""
    body_d, com_d = [], []
    for rel in ("dataset-verse19training/derivatives/sub-verse004/sub-verse004",
                "dataset-verse19test/derivatives/sub-verse012/sub-verse012"):
        arr, sp, ctd = _real(verse_sample_dir, rel)
        b = distances(arr, sp, ctd, body_centroids(arr, sp))
        c = distances(arr, sp, ctd, centroids_from_mask(arr))
        print(f"{rel.split('/')[-1]}: body centre mean {np.mean(b):.2f} max {np.max(b):.2f} mm, centre of mass "
              f"mean {np.mean(c):.2f} mm ({len(b)} vertebrae)")
        body_d += b
        com_d += c
    print(f"body centre: mean {np.mean(body_d):.2f} max {np.max(body_d):.2f} mm; "
          f"centre of mass: mean {np.mean(com_d):.2f} max {np.max(com_d):.2f} mm ({len(body_d)} vertebrae)")
    assert len(body_d) == 15
    assert np.mean(com_d) > 10
    assert np.mean(body_d) < 2.5 and np.max(body_d) < 5.0
