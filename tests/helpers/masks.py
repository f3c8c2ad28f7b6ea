"""Hand-made vertebra masks for metric and evaluation tests."""
import numpy as np


def slabs(labels, shape=(40, 12, 12), thickness=4, gap=1, inset=2, dtype=np.int16):
    """Vertebra-like slabs stacked along array axis 0 (top-down) in the given label order; 0 leaves a slab empty.
    Each slab covers ``thickness`` slices and the in-plane square ``inset:-inset``, slabs ``gap`` slices apart."""
    m = np.zeros(shape, dtype=dtype)
    z = 0
    for lab in labels:
        if lab:
            m[z:z + thickness, inset:shape[1] - inset, inset:shape[2] - inset] = lab
        z += thickness + gap
    return m
