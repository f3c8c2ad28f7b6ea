"""The PNG preview: sagittal | coronal, head up, each label in its own colour, physical aspect ratio."""
import numpy as np

from nnunet_vertkd.inference.preview import PALETTE, make_preview


def test_preview_head_up_and_coloured():
    ct = np.full((40, 20, 30), -1000.0, np.float32)  # [SI, AP, LR], index 0 = superior
    lab = np.zeros(ct.shape, np.uint8)
    lab[2:8, 5:15, 10:20] = 1
    lab[30:36, 5:15, 10:20] = 2
    img = np.asarray(make_preview(ct, lab, (2.0, 1.0, 1.0)).convert("RGB")).astype(int)
    h = img.shape[0]
    assert h >= 400  # small scans are enlarged; SI spacing 2 mm -> 80 mm tall, aspect kept
    c1 = (0.5 * PALETTE[0]).astype(int)
    c2 = (0.5 * PALETTE[1]).astype(int)
    rows1 = np.nonzero((np.abs(img - c1).sum(-1) < 6).any(1))[0]
    rows2 = np.nonzero((np.abs(img - c2).sum(-1) < 6).any(1))[0]
    assert rows1.size and rows2.size and rows1.max() < h / 2 < rows2.min()  # label 1 at the top
