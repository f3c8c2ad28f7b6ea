"""Exact tests of the whole-scan label decoder (nnunet_vertkd.labelling.decoder): hand-made probability tables
with a known best sequence, T13 / L6, one vertebra, ties, and the posteriors."""
import itertools

import numpy as np
import pytest

from nnunet_vertkd.labelling.decoder import (
    N_STATES, STATES, STATE_INDEX, decode_labels, emission_log_likelihoods, evidence_from_verse_probabilities,
    start_prior, transition_matrix)


def one_hot_rows(labels, p=0.9):
    """Evidence rows that put p on the given VerSe label and spread the rest uniformly."""
    e = np.full((len(labels), N_STATES), (1 - p) / (N_STATES - 1))
    for i, lab in enumerate(labels):
        e[i, STATE_INDEX[lab]] = p
    return e


def brute_force(evidence, p_t13=0.05, p_l6=0.05, floor=1e-3):
    """Every valid path scored exhaustively: (best labels, {labels: probability})."""
    log_e = emission_log_likelihoods(evidence, None, floor)
    a, s = transition_matrix(p_t13, p_l6), start_prior(p_t13, p_l6)
    n = len(evidence)
    scores = {}

    def extend(path, score):
        if len(path) == n:
            scores[tuple(STATES[i] for i in path)] = score
            return
        for j in np.flatnonzero(a[path[-1]] > 0):
            extend(path + [int(j)], score + np.log(a[path[-1], j]) + log_e[len(path), j])

    for i in range(N_STATES):
        if s[i] > 0:
            extend([i], np.log(s[i]) + log_e[0, i])
    z = np.logaddexp.reduce(list(scores.values()))
    probs = {k: float(np.exp(v - z)) for k, v in scores.items()}
    return max(scores, key=scores.get), probs


def test_chain_and_priors():
    a = transition_matrix(0.1, 0.2)
    assert a[STATE_INDEX[19], STATE_INDEX[28]] == pytest.approx(0.1)   # T12 -> T13
    assert a[STATE_INDEX[19], STATE_INDEX[20]] == pytest.approx(0.9)   # T12 -> L1
    assert a[STATE_INDEX[28], STATE_INDEX[20]] == 1.0                  # T13 -> L1
    assert a[STATE_INDEX[24], STATE_INDEX[25]] == pytest.approx(0.2)   # L5 -> L6
    assert a[STATE_INDEX[25]].sum() == 0                               # nothing below L6
    assert a[STATE_INDEX[7], STATE_INDEX[8]] == 1.0                    # C7 -> T1
    # no skipping, no going up
    assert a[STATE_INDEX[8], STATE_INDEX[10]] == 0 and a[STATE_INDEX[9], STATE_INDEX[8]] == 0
    assert STATES[:3] == [1, 2, 3] and STATES[19] == 28 and STATES[-1] == 25


def test_clear_evidence_decodes_exactly():
    truth = [17, 18, 19, 20, 21, 22]  # T10-L3 (sub-verse012)
    d = decode_labels(one_hot_rows(truth))
    assert d.labels == truth
    assert [v.name for v in d.vertebrae] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    assert all(v.probability > 0.99 for v in d.vertebrae)
    assert d.flags == []


def test_one_confident_vertebra_fixes_its_neighbours():
    # six vertebrae, uninformative evidence except the fourth: "certainly L1"
    e = np.full((6, N_STATES), 1.0 / N_STATES)
    e[3] = 0.0
    e[3, STATE_INDEX[20]] = 1.0
    d = decode_labels(e)
    # T13 before L1 costs the T13 prior: T10, T11, T12, L1, L2, L3
    assert d.labels == [17, 18, 19, 20, 21, 22]
    assert d.vertebrae[3].probability > 0.99
    # the vertebra above L1 is T12 unless it is a T13: the runner-up is T13 with the prior's share
    assert d.vertebrae[2].runner_up == 28
    assert d.vertebrae[2].runner_up_probability == pytest.approx(0.05, abs=0.01)


def test_wrong_single_vertebra_is_outvoted():
    truth = [20, 21, 22, 23, 24]
    e = one_hot_rows(truth, 0.8)
    e[2] = one_hot_rows([18], 0.99)[0]  # a confidently wrong "T11" in the middle
    d = decode_labels(e)
    assert d.labels == truth
    assert d.vertebrae[2].evidence_label == 18
    assert d.vertebrae[2].probability > 0.9


def test_t13_case():
    truth = [17, 18, 19, 28, 20, 21]  # T10 T11 T12 T13 L1 L2
    d = decode_labels(one_hot_rows(truth))
    assert d.labels == truth
    assert "transitional_suspected" in d.vertebrae[3].flags
    assert "transitional_suspected" in d.flags
    # weak evidence for T13 loses against the prior: the fourth vertebra's evidence split between T13 and L1
    e = one_hot_rows([17, 18, 19, 20, 20, 21])
    e[3] = 0
    e[3, STATE_INDEX[28]] = 0.5
    e[3, STATE_INDEX[20]] = 0.5
    e[4] = 0
    e[4, STATE_INDEX[20]] = 0.5
    e[4, STATE_INDEX[21]] = 0.5
    e[5] = 0
    e[5, STATE_INDEX[21]] = 0.5
    e[5, STATE_INDEX[22]] = 0.5
    d = decode_labels(e)
    best, _ = brute_force(e)
    assert tuple(d.labels) == best == (17, 18, 19, 20, 21, 22)
    assert d.vertebrae[3].runner_up == 28


def test_l6_case():
    truth = [21, 22, 23, 24, 25]  # L2 .. L6
    d = decode_labels(one_hot_rows(truth))
    assert d.labels == truth
    assert "transitional_suspected" in d.vertebrae[-1].flags
    # evidence that says "five lumbar vertebrae, the last above the sacrum" (L5 on the last) wins without L6
    d = decode_labels(one_hot_rows([20, 21, 22, 23, 24]))
    assert d.labels == [20, 21, 22, 23, 24]
    assert all(v.label != 25 for v in d.vertebrae)


def test_t13_and_l6_with_the_sacrum_anchor():
    # whole lower spine T11..L6 with T13: 10 vertebrae; evidence anchors T11 (top) and L6 (bottom) only
    truth = [18, 19, 28, 20, 21, 22, 23, 24, 25]
    e = np.full((len(truth), N_STATES), 1.0 / N_STATES)
    e[0] = one_hot_rows([18], 0.99)[0]
    e[-1] = one_hot_rows([25], 0.99)[0]
    d = decode_labels(e)
    assert d.labels == truth  # the only chain from T11 to L6 in 9 steps passes T13
    best, _ = brute_force(e)
    assert tuple(d.labels) == best


def test_one_vertebra_scan():
    d = decode_labels(one_hot_rows([24], 0.6))
    assert d.labels == [24]
    assert d.vertebrae[0].probability == pytest.approx(emission_posterior([24], 0.6), abs=1e-9)
    assert d.sequence_probability == pytest.approx(d.vertebrae[0].probability)
    # a lone T13 or L6 is penalised by its start prior
    e = np.zeros((1, N_STATES))
    e[0, STATE_INDEX[25]] = 0.5
    e[0, STATE_INDEX[24]] = 0.5
    assert decode_labels(e).labels == [24]


def emission_posterior(labels, p):
    e = one_hot_rows(labels, p)[0]
    e = (1 - 1e-3) * e + 1e-3 / N_STATES
    w = e * start_prior()
    return w[STATE_INDEX[labels[0]]] / w.sum()


def test_ties_go_cranial():
    # uniform evidence: every start ties (T13/L6 aside); the most cranial wins
    d = decode_labels(np.ones((4, N_STATES)))
    assert d.labels == [1, 2, 3, 4]
    assert "low_confidence" in d.flags
    # an exact tie between two shifted readings: T12/L1 at 0.5 each on the first vertebra, L1/L2 on the second
    e = np.zeros((2, N_STATES))
    e[0, STATE_INDEX[19]] = e[0, STATE_INDEX[20]] = 0.5
    e[1, STATE_INDEX[20]] = e[1, STATE_INDEX[21]] = 0.5
    d = decode_labels(e, p_t13=0.0)  # T12 -> L1 (prior 1) and L1 -> L2 score exactly the same
    assert d.labels == [19, 20]
    assert d.vertebrae[0].probability == pytest.approx(0.5, abs=1e-3)
    assert d.vertebrae[0].runner_up == 20
    # T12 -> T13 vs T12 -> L1 with p_t13 = 0.5 and the second vertebra split evenly: an exact tie, and T13
    # precedes L1 in the chain
    e = np.zeros((2, N_STATES))
    e[0, STATE_INDEX[19]] = 1.0
    e[1, STATE_INDEX[28]] = e[1, STATE_INDEX[20]] = 0.5
    d = decode_labels(e, p_t13=0.5, floor=0.0)
    assert d.labels == [19, 28]


@pytest.mark.parametrize("seed", range(30))
def test_viterbi_equals_brute_force_and_marginals(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    e = rng.dirichlet(np.full(N_STATES, 0.3), size=n)
    d = decode_labels(e, p_t13=0.1, p_l6=0.1)
    best, probs = brute_force(e, 0.1, 0.1)
    assert tuple(d.labels) == best
    assert d.sequence_probability == pytest.approx(probs[best], rel=1e-9)
    for t in range(n):
        for i, lab in enumerate(STATES):
            m = sum(p for path, p in probs.items() if path[t] == lab)
            assert d.marginals[t, i] == pytest.approx(m, abs=1e-9)


def test_lower_anchor_fixes_partial_lumbar_scan():
    # sub-verse012-like: T10..L3, evidence only says "rib-bearing" (thoracic) or "not" (lumbar)
    thoracic = [STATE_INDEX[v] for v in list(range(8, 20)) + [28]]
    lumbar = [STATE_INDEX[v] for v in range(20, 26)]
    e = np.zeros((6, N_STATES))
    e[:3, thoracic] = 1.0
    e[3:, lumbar] = 1.0
    d = decode_labels(e)
    assert d.labels == [17, 18, 19, 20, 21, 22]
    # the last rib-bearing vertebra is T12 or T13: T13 is the runner-up
    assert d.vertebrae[2].runner_up == 28 or d.vertebrae[2].runner_up_name in ("T13",)


def test_bad_input():
    with pytest.raises(ValueError):
        decode_labels(np.ones((0, N_STATES)))
    with pytest.raises(ValueError):
        decode_labels(np.ones((27, N_STATES)))
    with pytest.raises(ValueError):
        decode_labels(np.ones((2, 5)))
    with pytest.raises(ValueError):
        decode_labels(-np.ones((2, N_STATES)))
    assert decode_labels(np.ones((26, N_STATES))).labels == STATES


def test_evidence_from_dicts_and_record():
    e = evidence_from_verse_probabilities([{20: 0.9, 21: 0.1}, {21: 1.0}])
    d = decode_labels(e)
    rec = d.to_record()
    assert rec["labels"] == [20, 21]
    assert rec["vertebrae"][0]["name"] == "L1" and set(rec["vertebrae"][0]) >= {
        "probability", "runner_up", "runner_up_probability", "flags"}
    assert rec["shift_probabilities"]["0"] == pytest.approx(d.vertebrae[0].probability, abs=1e-4)
    with pytest.raises(ValueError):
        evidence_from_verse_probabilities([{26: 1.0}])
