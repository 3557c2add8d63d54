"""Evaluating a fitted detector on labelled data, and synthetic data to try it on."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._inputs import check_labels
from ._persistence import atomic_write
from .plotting import plot_evaluation

ANOMALY_TYPES = ("outlier", "cluster", "local", "noise")


@dataclass
class AnomalyDetectionReport:
    """Metrics of a detector on labelled data (label 1 = anomaly).

    Attributes
    ----------
    roc_auc, average_precision : float
        Ranking quality of the anomaly scores (``-score_samples``).
    accuracy, precision, recall, f1 : float
        Quality of ``predict`` at the fitted threshold (anomaly = positive class).
    normal_score_mean, normal_score_std, anomaly_score_mean, anomaly_score_std : float
        Statistics of ``score_samples`` (higher = more normal) per class.
    threshold : float
        The detector's ``offset_``: samples scoring below it are flagged.
    n_normal, n_anomaly : int
        Class sizes.

    Examples
    --------
    >>> from skvae import VAEOutlierDetector, make_synthetic
    >>> X, y = make_synthetic(400, 3, random_state=0)
    >>> report = evaluate_labelled(VAEOutlierDetector(epochs=10, random_state=0).fit(X), X, y)
    >>> sorted(report.to_dict())[:3]
    ['accuracy', 'anomaly_score_mean', 'anomaly_score_std']
    """

    roc_auc: float
    average_precision: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    normal_score_mean: float
    normal_score_std: float
    anomaly_score_mean: float
    anomaly_score_std: float
    threshold: float
    n_normal: int
    n_anomaly: int

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self):
        return asdict(self).keys()

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a plain dict."""
        return asdict(self)


def evaluate_labelled(
    detector, X, y, plot: bool | str | os.PathLike = False
) -> AnomalyDetectionReport:
    """Evaluate a fitted detector on ``X`` with labels ``y`` (1 = anomaly, 0 = normal).

    Parameters
    ----------
    detector : fitted outlier detector
        Needs ``score_samples`` (higher = more normal), ``predict`` (+1/-1) and
        ``offset_``, as :class:`skvae.VAEOutlierDetector` has.
    X : array-like of shape (n_samples, n_features)
        Samples.
    y : array-like of shape (n_samples,)
        1 for anomalies, 0 for normal samples; both classes must be present.
    plot : bool or path-like, default=False
        Also draw the score histogram, ROC and precision-recall curves (needs
        matplotlib): the figure is ``report.figure`` (a script shows it with
        ``matplotlib.pyplot.show()``); a path also saves it there as PNG.

    Returns
    -------
    report : AnomalyDetectionReport
        The metrics; also readable as ``report["roc_auc"]``.

    Raises
    ------
    ValueError
        If ``y`` has another length than ``X``, values other than 0 and 1 (e.g.
        :meth:`~skvae.VAEOutlierDetector.predict`'s -1/+1), or only one class.

    Examples
    --------
    >>> from skvae import VAEOutlierDetector, make_synthetic
    >>> from skvae.evaluation import evaluate_labelled
    >>> X, y = make_synthetic(600, 4, anomaly_type="outlier", random_state=0)
    >>> det = VAEOutlierDetector(epochs=30, random_state=0).fit(X[y == 0])
    >>> evaluate_labelled(det, X, y).roc_auc > 0.9
    True
    """
    y = check_labels(y, X.shape[0] if hasattr(X, "shape") else len(X))
    scores = np.asarray(detector.score_samples(X), dtype=np.float64)
    flagged = (np.asarray(detector.predict(X)) == -1).astype(int)
    normal, anomaly = scores[y == 0], scores[y == 1]
    report = AnomalyDetectionReport(
        roc_auc=float(roc_auc_score(y, -scores)),
        average_precision=float(average_precision_score(y, -scores)),
        accuracy=float(accuracy_score(y, flagged)),
        precision=float(precision_score(y, flagged, zero_division=0)),
        recall=float(recall_score(y, flagged, zero_division=0)),
        f1=float(f1_score(y, flagged, zero_division=0)),
        normal_score_mean=float(normal.mean()),
        normal_score_std=float(normal.std()),
        anomaly_score_mean=float(anomaly.mean()),
        anomaly_score_std=float(anomaly.std()),
        threshold=float(detector.offset_),
        n_normal=int(len(normal)),
        n_anomaly=int(len(anomaly)),
    )
    if plot is not False:
        report.figure = plot_evaluation(scores, y, threshold=float(detector.offset_))
        if plot is not True:
            atomic_write(plot, lambda fh: report.figure.savefig(fh, format="png", dpi=100))
    return report


def evaluate_anomaly_detection(
    detector, X_normal, X_anomaly, plot: bool | str | os.PathLike = False
) -> AnomalyDetectionReport:
    """Evaluate a fitted detector on separate normal and anomalous samples.

    Parameters
    ----------
    detector : fitted outlier detector
        See :func:`evaluate_labelled`.
    X_normal : array-like of shape (n_normal, n_features)
        Normal samples.
    X_anomaly : array-like of shape (n_anomaly, n_features)
        Anomalous samples.
    plot : bool or path-like, default=False
        Also draw the evaluation figure (``report.figure``); a path also saves it
        there (see :func:`evaluate_labelled`).

    Returns
    -------
    report : AnomalyDetectionReport
        ROC AUC, average precision, accuracy/precision/recall/F1 at the fitted
        threshold and score statistics per class.

    Examples
    --------
    >>> from skvae import VAEOutlierDetector, make_synthetic
    >>> from skvae.evaluation import evaluate_anomaly_detection
    >>> X, y = make_synthetic(600, 4, anomaly_type="cluster", random_state=0)
    >>> det = VAEOutlierDetector(epochs=30, random_state=0).fit(X[y == 0])
    >>> report = evaluate_anomaly_detection(det, X[y == 0], X[y == 1])
    >>> report["roc_auc"] > 0.9
    True
    """
    X_normal = np.asarray(X_normal)
    X_anomaly = np.asarray(X_anomaly)
    if len(X_normal) == 0 or len(X_anomaly) == 0:
        raise ValueError(
            "X_normal and X_anomaly need at least one row each; got "
            f"{len(X_normal)} and {len(X_anomaly)}."
        )
    X = np.concatenate([X_normal, X_anomaly])
    y = np.r_[np.zeros(len(X_normal), dtype=int), np.ones(len(X_anomaly), dtype=int)]
    return evaluate_labelled(detector, X, y, plot=plot)


@validate_params(
    {"metric": [StrOptions({"roc_auc", "average_precision"})]},
    prefer_skip_nested_validation=True,
)
def outlier_scorer(metric: str = "roc_auc"):
    """A scorer for model selection on labelled data in either outlier convention.

    ``GridSearchCV(..., scoring="roc_auc")`` passes ``decision_function`` (higher for
    normal rows) to the metric, so with labels 1 = anomaly it rewards the worst
    detector. This scorer ranks by ``-score_samples(X)`` and reads the labels as
    1 = anomaly / 0 = normal, or as ``predict``'s +1 = normal / -1 = anomaly.

    Parameters
    ----------
    metric : {'roc_auc', 'average_precision'}, default='roc_auc'
        The metric of anomalies against normal rows.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``, higher for better detection, for
        ``scoring=`` of ``GridSearchCV``, ``cross_val_score`` and friends.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV, StratifiedKFold
    >>> from skvae import VAEOutlierDetector, make_synthetic, outlier_scorer
    >>> X, y = make_synthetic(600, 4, anomaly_type="cluster", random_state=0)
    >>> search = GridSearchCV(
    ...     VAEOutlierDetector(epochs=20, random_state=0), {"beta": [0.5, 1.0]},
    ...     scoring=outlier_scorer(), cv=StratifiedKFold(2, shuffle=True, random_state=0),
    ... ).fit(X, y)  # every fold needs anomalies: stratify
    >>> bool(search.best_score_ > 0.8)
    True
    """
    metrics = {"roc_auc": roc_auc_score, "average_precision": average_precision_score}

    def scorer(estimator, X, y) -> float:
        y = np.asarray(y).ravel()
        values = set(np.unique(y).tolist())
        if values <= {-1, 1} and -1 in values:  # predict's convention
            if values != {-1, 1}:
                raise ValueError("y must contain both classes, +1 (inlier) and -1 (outlier).")
            is_anomaly = y == -1
        else:
            is_anomaly = check_labels(y, len(y))
        return float(metrics[metric](is_anomaly, -np.asarray(estimator.score_samples(X))))

    scorer.__name__ = f"outlier_{metric}"
    return scorer


@validate_params(
    {
        "n_samples": [Interval(Integral, 2, None, closed="left")],
        "n_features": [Interval(Integral, 2, None, closed="left")],
        "anomaly_type": [StrOptions(set(ANOMALY_TYPES))],
        "anomaly_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "magnitude": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def make_synthetic(
    n_samples: int = 2000,
    n_features: int = 5,
    anomaly_type: str = "outlier",
    anomaly_fraction: float = 0.05,
    random_state=None,
    magnitude: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal data with anomalies of a chosen kind.

    Normal samples lie near a curved, low-dimensional manifold: a 2-D latent Gaussian
    mapped through a fixed smooth nonlinear map into ``n_features`` dimensions, plus
    small noise.

    Parameters
    ----------
    n_samples : int, default=2000
        Total number of samples (normal and anomalous).
    n_features : int, default=5
        Dimension of the data (at least 2).
    anomaly_type : {'outlier', 'cluster', 'local', 'noise'}, default='outlier'
        - ``'outlier'``: points scattered far from the data (uniform in a box four
          times the data's range);
        - ``'cluster'``: a tight cluster displaced from the data;
        - ``'local'``: points off the manifold but inside the data's range;
        - ``'noise'``: normal points with one feature corrupted by a large value.
    anomaly_fraction : float, default=0.05
        Fraction of anomalous samples.
    random_state : int, RandomState instance or None, default=None
        Seeds the data.
    magnitude : float, default=3.0
        How far out the anomalies lie: the distances above scale with
        ``magnitude / 3`` (the default gives the distances as described).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The samples, normal first, then anomalies.
    y : ndarray of shape (n_samples,)
        0 for normal samples, 1 for anomalies.

    Examples
    --------
    >>> from skvae import make_synthetic
    >>> X, y = make_synthetic(100, 3, anomaly_type="local", random_state=0)
    >>> X.shape, int(y.sum())
    ((100, 3), 5)
    """
    if not np.isfinite(magnitude):
        raise ValueError(f"magnitude must be a finite number; got {magnitude!r}.")
    far = magnitude / 3.0
    rng = check_random_state(random_state)
    n_anomaly = max(1, int(round(anomaly_fraction * n_samples)))
    n_normal = n_samples - n_anomaly
    if n_normal < 1:
        raise ValueError(
            f"anomaly_fraction={anomaly_fraction} of n_samples={n_samples} leaves no normal sample."
        )
    # A fixed (not random_state dependent) smooth map from 2-D latent to n_features.
    basis = np.random.RandomState(12345).normal(size=(2, n_features))
    phase = np.random.RandomState(54321).uniform(0, np.pi, n_features)

    def manifold(t: np.ndarray) -> np.ndarray:
        return np.sin(t @ basis + phase) + 0.3 * (t @ basis)

    normal = manifold(rng.normal(size=(n_normal, 2))) + 0.05 * rng.normal(
        size=(n_normal, n_features)
    )
    lo, hi = normal.min(0), normal.max(0)
    span = hi - lo
    if anomaly_type == "outlier":
        anomaly = rng.uniform(
            lo - 1.5 * far * span, hi + 1.5 * far * span, size=(n_anomaly, n_features)
        )
    elif anomaly_type == "cluster":
        centre = hi + 0.5 * far * span
        anomaly = centre + 0.05 * span * rng.normal(size=(n_anomaly, n_features))
    elif anomaly_type == "local":
        # on-manifold points pushed off it by several noise levels, in random directions
        base = manifold(rng.normal(size=(n_anomaly, 2)))
        direction = rng.normal(size=(n_anomaly, n_features))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        anomaly = base + 0.5 * far * direction
    else:  # noise
        anomaly = manifold(rng.normal(size=(n_anomaly, 2)))
        cols = rng.randint(n_features, size=n_anomaly)
        signs = rng.choice([-1.0, 1.0], size=n_anomaly)
        anomaly[np.arange(n_anomaly), cols] += signs * far * span[cols]
    X = np.vstack([normal, anomaly])
    y = np.r_[np.zeros(n_normal, dtype=int), np.ones(n_anomaly, dtype=int)]
    return X, y
