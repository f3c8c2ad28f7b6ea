"""Joint anatomical labelling of the vertebrae of one scan: an HMM over the cranio-caudal label chain.

The loop accepts vertebrae top-down, so the accepted vertebrae 1..N of a scan are consecutive vertebrae of the
spine. Their anatomical labels therefore follow the chain

    C1 C2 ... C7 T1 ... T12 [T13] L1 ... L5 [L6]

starting at any level (partial field of view) and ending at any level. T13 is an optional state between T12 and
L1, L6 an optional state after L5. ``decode_labels`` takes one probability vector per vertebra (the evidence,
e.g. a classifier's softmax over the 26 labels) and returns the single most probable label sequence (Viterbi)
plus, for every vertebra, the posterior marginal of each label (forward-backward): the probability of the
chosen label given the evidence of the *whole* scan, and the runner-up. One confident vertebra (C1, the last
rib-bearing one, the one above the sacrum) thereby fixes its neighbours: every label of a path is tied to
every other by the chain.

Model
    states        the 26 VerSe labels in cranio-caudal order (``nnunet_vertkd.labels.VERSE_LABELS_CRANIOCAUDAL``)
    start         any state, prior weight 1 (T13 and L6: ``p_t13`` / ``p_l6``)
    transitions   state -> its successor in the chain with probability 1, except
                  T12 -> T13 with ``p_t13``, T12 -> L1 with 1 - ``p_t13``, L5 -> L6 with ``p_l6``
                  (there is no other successor of L5: a scan that goes on below L5 goes on with L6)
    emissions     P(evidence_i | label) proportional to ``evidence[i, label] / label_prior[label]`` (the
                  classifier's posterior divided by its training prior: uniform by default), floored at
                  ``floor`` so that no single vertebra can veto a sequence (a classifier that is certain and
                  wrong on one vertebra is outvoted by its neighbours)

Ties (exactly equal path scores, up to 1e-9 in log space) go to the more cranial label: the last vertebra takes
the most cranial of the best final states, and every back-pointer the most cranial of the best predecessors
(so "T12 -> L1" wins over "T13 -> L1" at equal score). Uniform evidence therefore decodes to C1, C2, ...
The result is exact and deterministic; ``decode_labels`` is a pure function (numpy only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunet_vertkd.labels import VERSE_LABEL_NAMES, VERSE_LABELS_CRANIOCAUDAL

#: the states, top to bottom (VerSe labels)
STATES: List[int] = list(VERSE_LABELS_CRANIOCAUDAL)
N_STATES = len(STATES)
STATE_INDEX: Dict[int, int] = {v: i for i, v in enumerate(STATES)}
T12, T13, L1, L5, L6 = (STATE_INDEX[v] for v in (19, 28, 20, 24, 25))
TRANSITIONAL = (28, 25)

#: default prior probabilities of the transitional vertebrae (VerSe: a few % of the scans have a T13 or an L6)
DEFAULT_P_T13 = 0.05
DEFAULT_P_L6 = 0.05
#: flags
LOW_CONFIDENCE_BELOW = 0.7
TRANSITIONAL_SUSPECTED_ABOVE = 0.2
_TIE = 1e-9


def transition_matrix(p_t13: float = DEFAULT_P_T13, p_l6: float = DEFAULT_P_L6) -> np.ndarray:
    """(26, 26) transition probabilities between the states (rows: from, columns: to; rows need not sum to 1:
    the last state L6 has no successor, and the scan may end anywhere)."""
    if not (0.0 <= p_t13 <= 1.0 and 0.0 <= p_l6 <= 1.0):
        raise ValueError(f"p_t13 and p_l6 must be probabilities, got {p_t13}, {p_l6}")
    a = np.zeros((N_STATES, N_STATES))
    for i in range(N_STATES - 1):
        a[i, i + 1] = 1.0
    a[T12, T13] = p_t13
    a[T12, L1] = 1.0 - p_t13
    a[L5, L6] = p_l6
    return a


def start_prior(p_t13: float = DEFAULT_P_T13, p_l6: float = DEFAULT_P_L6) -> np.ndarray:
    """Unnormalised start weights: 1 for every label, ``p_t13`` for T13 and ``p_l6`` for L6."""
    s = np.ones(N_STATES)
    s[T13] = p_t13
    s[L6] = p_l6
    return s


@dataclass
class VertebraLabel:
    index: int                 # position in the scan, 0 = topmost accepted vertebra
    label: int                 # VerSe label of the decoded sequence
    name: str                  # e.g. "T12"
    probability: float         # posterior marginal P(label | evidence of the whole scan)
    runner_up: Optional[int]   # VerSe label with the next highest marginal (None if it has probability 0)
    runner_up_name: Optional[str]
    runner_up_probability: float
    evidence_label: int        # the label the evidence alone prefers (argmax of this vertebra's evidence row)
    flags: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "name": self.name,
                "probability": round(self.probability, 4), "runner_up": self.runner_up,
                "runner_up_name": self.runner_up_name, "runner_up_probability": round(self.runner_up_probability, 4),
                "evidence_label": self.evidence_label, "flags": list(self.flags)}


@dataclass
class DecodedLabels:
    labels: List[int]                  # VerSe labels, top to bottom
    vertebrae: List[VertebraLabel]
    marginals: np.ndarray              # (N, 26) posterior marginals, columns in STATES order
    sequence_probability: float        # posterior probability of the decoded sequence as a whole
    log_score: float                   # Viterbi log score of the decoded sequence
    flags: List[str]                   # scan flags: "low_confidence", "transitional_suspected"
    shift_probabilities: Dict[int, float]  # P(whole sequence shifted by k levels) for k = -2..2 (0 = decoded)

    def to_record(self) -> dict:
        return {"labels": list(self.labels), "sequence_probability": round(self.sequence_probability, 4),
                "flags": list(self.flags),
                "shift_probabilities": {str(k): round(v, 4) for k, v in self.shift_probabilities.items()},
                "vertebrae": [v.to_dict() for v in self.vertebrae]}


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m_safe), axis=axis, keepdims=True)) + m_safe
    return np.squeeze(out, axis=axis)


def emission_log_likelihoods(evidence: np.ndarray, label_prior: Optional[np.ndarray] = None,
                             floor: float = 1e-3) -> np.ndarray:
    """log P(evidence_i | state) up to a per-vertebra constant, from (N, 26) evidence rows (columns in
    ``STATES`` order; each row is normalised to sum 1 first)."""
    e = np.asarray(evidence, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != N_STATES:
        raise ValueError(f"evidence must be (N, {N_STATES}), got {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("evidence must be finite and non-negative")
    sums = e.sum(axis=1, keepdims=True)
    e = np.where(sums > 0, e / np.where(sums > 0, sums, 1.0), 1.0 / N_STATES)
    if label_prior is not None:
        prior = np.asarray(label_prior, dtype=np.float64)
        if prior.shape != (N_STATES,) or np.any(prior <= 0):
            raise ValueError(f"label_prior must be ({N_STATES},) and positive")
        e = e / prior
        e = e / e.sum(axis=1, keepdims=True)
    e = (1.0 - floor) * e + floor / N_STATES
    return _log(e)


def decode_labels(evidence: np.ndarray, p_t13: float = DEFAULT_P_T13, p_l6: float = DEFAULT_P_L6,
                  label_prior: Optional[np.ndarray] = None, floor: float = 1e-3,
                  low_confidence_below: float = LOW_CONFIDENCE_BELOW,
                  transitional_above: float = TRANSITIONAL_SUSPECTED_ABOVE) -> DecodedLabels:
    """Most probable anatomical label sequence for N consecutive vertebrae (top to bottom) and the per-vertebra
    posteriors. ``evidence``: (N, 26) non-negative scores per vertebra, columns in ``STATES`` order (C1 ... T12,
    T13, L1 ... L6); rows are normalised. N must be between 1 and 26 (a chain longer than the spine has no
    valid labelling)."""
    log_e = emission_log_likelihoods(evidence, label_prior, floor)
    n = log_e.shape[0]
    if n < 1:
        raise ValueError("no vertebra to label")
    if n > N_STATES:
        raise ValueError(f"{n} vertebrae: more than the {N_STATES} labels of the chain")
    log_a = _log(transition_matrix(p_t13, p_l6))
    log_s = _log(start_prior(p_t13, p_l6))

    # ---- Viterbi with cranial tie-breaking
    delta = np.empty((n, N_STATES))
    back = np.zeros((n, N_STATES), dtype=np.int64)
    delta[0] = log_s + log_e[0]
    for t in range(1, n):
        cand = delta[t - 1][:, None] + log_a          # (from, to)
        best = np.max(cand, axis=0)
        for j in range(N_STATES):
            if not np.isfinite(best[j]):
                back[t, j] = 0
                continue
            back[t, j] = int(np.flatnonzero(cand[:, j] >= best[j] - _TIE)[0])
        delta[t] = best + log_e[t]
    final_best = np.max(delta[-1])
    if not np.isfinite(final_best):
        raise ValueError(f"no valid label sequence for {n} vertebrae")
    state = int(np.flatnonzero(delta[-1] >= final_best - _TIE)[0])
    path = [state]
    for t in range(n - 1, 0, -1):
        state = int(back[t, state])
        path.append(state)
    path = path[::-1]

    # ---- forward-backward posteriors
    alpha = np.empty((n, N_STATES))
    beta = np.zeros((n, N_STATES))
    alpha[0] = log_s + log_e[0]
    for t in range(1, n):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + log_a, axis=0) + log_e[t]
    for t in range(n - 2, -1, -1):
        beta[t] = _logsumexp(log_a + (log_e[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = float(_logsumexp(alpha[-1], axis=0))
    marg = np.exp(alpha + beta - log_z)
    marg = np.where(np.isfinite(marg), marg, 0.0)
    marg /= marg.sum(axis=1, keepdims=True)
    sequence_probability = float(np.exp(final_best - log_z))

    # ---- probability of the whole sequence shifted by k levels (same start +k, along the chain): the mass of
    # the paths whose first state is k states below the decoded first state
    start_post = marg[0]
    shifts = {}
    for k in (-2, -1, 0, 1, 2):
        s = path[0] + k
        shifts[k] = float(start_post[s]) if 0 <= s < N_STATES else 0.0

    vertebrae = []
    raw_best = np.argmax(log_e, axis=1)
    for t in range(n):
        order = np.argsort(-marg[t], kind="stable")
        chosen = path[t]
        ru = next(int(i) for i in order if int(i) != chosen)
        ru_p = float(marg[t, ru])
        flags = []
        p = float(marg[t, chosen])
        if p < low_confidence_below:
            flags.append("low_confidence")
        if STATES[chosen] in TRANSITIONAL or float(marg[t, T13] + marg[t, L6]) > transitional_above:
            flags.append("transitional_suspected")
        vertebrae.append(VertebraLabel(
            index=t, label=STATES[chosen], name=VERSE_LABEL_NAMES[STATES[chosen]], probability=p,
            runner_up=STATES[ru] if ru_p > 0 else None,
            runner_up_name=VERSE_LABEL_NAMES[STATES[ru]] if ru_p > 0 else None, runner_up_probability=ru_p,
            evidence_label=STATES[int(raw_best[t])], flags=flags))
    scan_flags = []
    if any("low_confidence" in v.flags for v in vertebrae):
        scan_flags.append("low_confidence")
    if any("transitional_suspected" in v.flags for v in vertebrae):
        scan_flags.append("transitional_suspected")
    return DecodedLabels(labels=[STATES[s] for s in path], vertebrae=vertebrae, marginals=marg,
                         sequence_probability=sequence_probability, log_score=float(final_best), flags=scan_flags,
                         shift_probabilities=shifts)


def evidence_from_verse_probabilities(rows: Sequence[Dict[int, float]]) -> np.ndarray:
    """(N, 26) evidence from per-vertebra dicts {VerSe label: probability} (missing labels: 0)."""
    e = np.zeros((len(rows), N_STATES))
    for i, row in enumerate(rows):
        for label, p in row.items():
            if int(label) not in STATE_INDEX:
                raise ValueError(f"{label} is not a VerSe vertebra label")
            e[i, STATE_INDEX[int(label)]] = float(p)
    return e
