"""VerSe vertebra labels, their cranio-caudal order and the consecutive labels used in nnU-Net datasets.

VerSe numbers vertebrae C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25 and the transitional T13 = 28
(26 sacrum and 27 coccyx are not annotated). Sorting by the VerSe number is therefore *not* the anatomical
order (T13 lies between T12 and L1). The vertebra dataset written by ``vertkd_convert_verse`` uses
consecutive labels 1..26 in cranio-caudal order, so that "cranial to t" is simply "label < t".
"""
from typing import Dict, List, Tuple

VERSE_LABEL_NAMES: Dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{i + 7: f"T{i}" for i in range(1, 13)},
    28: "T13",
    **{i + 19: f"L{i}" for i in range(1, 7)},
}

#: VerSe labels from top (C1) to bottom (L6).
VERSE_LABELS_CRANIOCAUDAL: List[int] = list(range(1, 20)) + [28] + list(range(20, 26))

#: VerSe label -> consecutive nnU-Net label (1 = C1 ... 19 = T12, 20 = T13, 21 = L1 ... 26 = L6).
VERSE_TO_NNUNET: Dict[int, int] = {v: i + 1 for i, v in enumerate(VERSE_LABELS_CRANIOCAUDAL)}
#: consecutive nnU-Net label -> VerSe label.
NNUNET_TO_VERSE: Dict[int, int] = {n: v for v, n in VERSE_TO_NNUNET.items()}

REGIONS = ("cervical", "thoracic", "lumbar")


def region_of_verse_label(verse_label: int) -> str:
    """'cervical', 'thoracic' or 'lumbar' for a VerSe label (T13 is thoracic, L6 lumbar)."""
    if verse_label not in VERSE_LABEL_NAMES:
        raise ValueError(f"{verse_label} is not a VerSe vertebra label (valid: {sorted(VERSE_LABEL_NAMES)})")
    name = VERSE_LABEL_NAMES[verse_label]
    return {"C": "cervical", "T": "thoracic", "L": "lumbar"}[name[0]]


def region_of_nnunet_label(nnunet_label: int) -> str:
    """Region of a consecutive (nnU-Net dataset) label."""
    return region_of_verse_label(NNUNET_TO_VERSE[nnunet_label])


def nnunet_dataset_labels() -> Dict[str, int]:
    """The ``labels`` entry of the vertebra dataset.json: background plus C1 ... L6 in cranio-caudal order."""
    labels = {"background": 0}
    for verse_label in VERSE_LABELS_CRANIOCAUDAL:
        labels[VERSE_LABEL_NAMES[verse_label]] = VERSE_TO_NNUNET[verse_label]
    return labels


#: VerSe labels that are not vertebrae of the method (26 sacrum, 27 coccyx): set to background with a warning by
#: the converter and the evaluator. Any other value outside ``VERSE_TO_NNUNET`` means "not a vertebra mask".
DROPPED_VERSE_LABELS = (26, 27)


def classify_verse_labels(values) -> Tuple[List[int], List[int], List[int]]:
    """(vertebra labels, dropped labels 26/27, unknown values) among the non-zero integer ``values`` of a
    VerSe vertebra mask; the one rule of the converter and the evaluator: unknown values (99, 255, negative
    ...) make the file "not a VerSe vertebra mask", dropped ones become background with a warning."""
    values = sorted({int(v) for v in values if int(v) != 0})
    kept = [v for v in values if v in VERSE_TO_NNUNET]
    dropped = [v for v in values if v in DROPPED_VERSE_LABELS]
    unknown = [v for v in values if v not in VERSE_TO_NNUNET and v not in DROPPED_VERSE_LABELS]
    return kept, dropped, unknown
