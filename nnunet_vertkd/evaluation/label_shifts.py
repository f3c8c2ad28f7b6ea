"""Label shifts of an anatomically labelled prediction: how many levels off each vertebra's label is.

Each reference vertebra is paired with the predicted instance that overlaps it (the one-to-one assignment of
``metrics.match_instances``, independent of the labels), and its shift is the number of places between the
predicted and the true label along the chain C1 ... T12, [T13,] L1 ... L6, where T13 belongs to the chain only
when the reference or the prediction of the scan has one: +1 = the prediction names the vertebra one level too
low (e.g. T12 called L1), -1 one level too high; a missed T13 (T13 called L1, L1 called L2 ...) is +1 for it and
the vertebrae below, an invented T13 (L1 called T13) -1. Per scan:

    label_shifts       {reference VerSe label: shift} (matched vertebrae whose predicted label is a VerSe label)
    scan_shift         the most frequent shift of the scan (ties: the smallest |shift|, then the negative one)
    n_label_shifted    matched vertebrae with a non-zero shift
    shifted_as_whole   every matched vertebra shifted by the same non-zero amount (the classic off-by-one scan)
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Optional

import numpy as np

from nnunet_vertkd.evaluation.metrics import match_instances
from nnunet_vertkd.labels import VERSE_LABELS_CRANIOCAUDAL, VERSE_TO_NNUNET


def chain_position(verse_label: int, with_t13: bool = True) -> int:
    """0-based position along C1 ... T12, T13, L1 ... L6 (without T13: C1 ... T12, L1 ... L6)."""
    chain = [v for v in VERSE_LABELS_CRANIOCAUDAL if with_t13 or v != 28]
    return chain.index(int(verse_label))


def label_shifts(ref: np.ndarray, pred: np.ndarray, mapping: Optional[Dict[int, int]] = None) -> dict:
    """Shift statistics of one scan (both arrays with VerSe labels); ``mapping`` = an overlap matching
    {ref label: pred label} already computed (default: ``match_instances``)."""
    if mapping is None:
        mapping = match_instances(ref, pred)
    pairs = [(int(r), int(p)) for r, p in sorted(mapping.items())
             if int(r) in VERSE_TO_NNUNET and int(p) in VERSE_TO_NNUNET]
    with_t13 = bool(np.any(ref == 28) or np.any(pred == 28))
    shifts = {r: chain_position(p, with_t13) - chain_position(r, with_t13) for r, p in pairs}
    if not shifts:
        return {"label_shifts": {}, "scan_shift": None, "n_label_shifted": 0, "shifted_as_whole": False}
    counts = Counter(shifts.values())
    best = max(counts.values())
    scan_shift = sorted((k for k, c in counts.items() if c == best), key=lambda k: (abs(k), k))[0]
    values = set(shifts.values())
    return {"label_shifts": shifts, "scan_shift": int(scan_shift),
            "n_label_shifted": int(sum(1 for v in shifts.values() if v != 0)),
            "shifted_as_whole": bool(len(values) == 1 and 0 not in values)}
