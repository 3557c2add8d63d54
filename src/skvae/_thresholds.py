"""The one threshold convention.

- ``offset_`` is the threshold on ``score_samples`` (the detector's score units,
  higher = more normal): a row is an outlier when its score is below it.
- ``threshold_`` is ``-offset_``, the same threshold on anomaly scores (PyOD).
- ``thr`` is the same threshold in normalised units, ``(offset_ - mean) / std`` with the
  mean and standard deviation of the training scores: the units of the offline-RL
  penalty and of :mod:`skvae.compat`. :func:`normalize` is the only conversion.
- Threshold candidates are ``thr`` values at integer percentiles of held-out scores.
- Where a model is trained with a validation split for offline RL (``skvae train`` and
  :mod:`skvae.compat`), :func:`heldout_statistics` is the one rule: ``mean`` and ``std``
  are the training rows', the threshold and the candidates come from the validation
  rows (the training rows when there are none).
"""

from __future__ import annotations

import math

import numpy as np

# Percentiles offered as threshold candidates (keys of ``threshold_candidates``), as
# offline-RL code reads them (``--threshold_percentile 5``).
CANDIDATE_PERCENTILES = (1, 5, 10, 15, 20)


def safe_std(std: float) -> float:
    """``std``, or 1 when it is zero or not finite (constant scores)."""
    std = float(std)
    return std if math.isfinite(std) and std > 0 else 1.0


def normalize(values, mean: float, std: float):
    """Scores or thresholds in normalised units ``(values - mean) / std`` (std 0 -> 1).

    Works on floats, numpy arrays and torch tensors alike.
    """
    return (values - float(mean)) / safe_std(std)


def offset_from_scores(scores: np.ndarray, contamination: float | str) -> float:
    """``offset_`` for training ``scores``: their ``contamination`` quantile, or Tukey's
    lower fence ``Q1 - 1.5 IQR`` for ``'auto'``."""
    if contamination == "auto":
        q1, q3 = np.percentile(scores, [25, 75])
        return float(q1 - 1.5 * (q3 - q1))
    return float(np.percentile(scores, 100.0 * float(contamination)))


def threshold_candidates(scores: np.ndarray, mean: float, std: float) -> dict[int, float]:
    """Normalised thresholds (``thr`` units) at :data:`CANDIDATE_PERCENTILES` of
    ``scores``, keyed by integer percentile."""
    values = np.percentile(np.asarray(scores, dtype=np.float64), CANDIDATE_PERCENTILES)
    return {p: float(normalize(v, mean, std)) for p, v in zip(CANDIDATE_PERCENTILES, values)}


def heldout_statistics(
    train_scores: np.ndarray, heldout_scores: np.ndarray | None, fraction: float
) -> tuple[float, float, float, dict[int, float]]:
    """``(offset, mean, std, candidates)`` of a model trained with a validation split.

    ``mean`` and ``std`` are those of ``train_scores``; ``offset`` is the ``fraction``
    quantile of ``heldout_scores`` and ``candidates`` are their percentiles in ``thr``
    units. Without held-out scores (``None`` or empty) the training scores stand in.
    """
    train = np.asarray(train_scores, dtype=np.float64)
    held = train if heldout_scores is None or len(heldout_scores) == 0 else heldout_scores
    held = np.asarray(held, dtype=np.float64)
    mean, std = float(train.mean()), float(train.std())
    offset = offset_from_scores(held, fraction)
    return offset, mean, std, threshold_candidates(held, mean, std)


def conformal_pvalues(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores`` against sorted ``calibration`` scores:
    ``(1 + #{cal <= s}) / (n_cal + 1)`` (Bates et al., 2023); small for outliers."""
    counts = np.searchsorted(calibration, scores, side="right")
    return (1.0 + counts) / (len(calibration) + 1.0)


def conformal_offset(calibration: np.ndarray, alpha: float) -> float:
    """The score threshold at which flagging ``score < offset`` is flagging
    ``pvalue <= alpha`` for sorted ``calibration`` scores."""
    # p <= alpha flags the rows whose count k = #{cal <= s} is below floor(alpha (n+1));
    # for alpha < 1 that is every row below the largest calibration score at most
    m = min(int(np.floor(alpha * (len(calibration) + 1) + 1e-9)) - 1, len(calibration) - 1)
    if m < 0:
        raise ValueError(
            f"alpha={alpha} needs at least {int(np.ceil(1 / alpha)) - 1} calibration rows; "
            f"the model has {len(calibration)}."
        )
    return float(calibration[m])
