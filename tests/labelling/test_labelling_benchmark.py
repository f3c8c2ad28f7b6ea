"""Pieces of the labelling benchmark: oracle instances from a VerSe mask, the 'anywhere' synthetic field of view
(partial scans starting and ending at any level), and the labelling cues of the generator's T13 / L6 variants."""
import numpy as np

from nnunet_vertkd.synthetic import make_case_with_info
from nnunet_vertkd.labelling.benchmark import oracle_instances


def test_oracle_instances_follow_the_chain_not_the_numbers():
    m = np.zeros((40, 4, 4), np.int16)
    for i, lab in enumerate([19, 28, 20, 21]):  # T12 T13 L1 L2: 28 sorts after 21 by number
        m[i * 10:i * 10 + 8] = lab
    inst, truth = oracle_instances(m)
    assert truth == [19, 28, 20, 21]
    assert [int(inst[i * 10, 0, 0]) for i in range(4)] == [1, 2, 3, 4]


def test_anywhere_field_of_view_starts_at_any_level():
    firsts = set()
    for seed in range(8):
        _, _, ctd, _ = make_case_with_info(seed, scale=0.4, fov="anywhere", spacing="iso1", orientation="LPI")
        labels = sorted(ctd)
        assert 2 <= len(labels) <= 13
        firsts.add(labels[0])
    assert len(firsts) >= 4  # starts spread over the spine (8 seeds: C3, T3, T10, L1)
