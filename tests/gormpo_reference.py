"""The penalty lines of GORMPO's ``transition_model.py``, verbatim: the reference the
offline-RL penalty types and the call-sequence tests are checked against."""

import numpy as np


def gormpo_penalty(penalty_type, log_probs, thr):
    """``log_probs`` already normalised, ``thr`` in the same units."""
    if penalty_type == "linear":
        w = thr - log_probs
        q1, q3 = np.percentile(w, [25, 75])
        penalty = np.clip(w, 0, q3 + 1.5 * (q3 - q1))
    elif penalty_type == "inverse":
        penalty = np.where(log_probs < thr, np.exp(thr) / (np.exp(log_probs) + 1e-6), 0)
    elif penalty_type == "tanh":
        penalty = np.clip(np.tanh(0.1 * (thr - log_probs)), 0, None)
    elif penalty_type == "tanh_reg":
        penalty = np.tanh(0.1 * (thr - log_probs))
    return penalty
