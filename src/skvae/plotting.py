"""Figures for a fitted detector: training curves, score distributions, ROC/PR, latents,
per-feature contributions.

Needs matplotlib (``pip install skvae[plot]``); the rest of skvae imports without it.
Every function returns the matplotlib Axes or Figure it drew on and never calls
``plt.show()``.
"""

from __future__ import annotations

import numpy as np

from ._inputs import check_labels


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Plotting needs matplotlib: pip install 'skvae[plot]', or "
            "pip install -e '.[plot]' in a checkout"
        ) from exc
    return plt


def _axes(ax):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots()
    return ax


def _scores_and_labels(scores, y, both_classes: bool):
    """Scores as a finite 1-D float array and labels (0 normal, 1 anomaly, or None)
    checked against them, else a ValueError saying what is wrong."""
    scores = np.asarray(scores, dtype=float).ravel()
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity.")
    if y is None:
        if both_classes:
            raise ValueError("y is required: 0 for normal samples, 1 for anomalies.")
        return scores, None
    return scores, check_labels(y, len(scores), both_classes, against="there are {} scores")


def plot_training_history(history_or_detector, ax=None):
    """Training and validation losses at each check, with the kept epoch marked.

    Parameters
    ----------
    history_or_detector : dict or fitted VAEOutlierDetector
        A ``history_`` dict (``epoch``, ``train_loss``, ``train_recon``, ``train_kl``,
        optionally ``val_*``; without ``epoch``, one entry an epoch) or a fitted
        detector.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made when omitted.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEOutlierDetector
    >>> from skvae.plotting import plot_training_history
    >>> det = VAEOutlierDetector(epochs=5, random_state=0).fit(np.random.randn(100, 3))
    >>> ax = plot_training_history(det)
    >>> ax.get_xlabel()
    'epoch'
    """
    best = None
    if isinstance(history_or_detector, dict):
        history = history_or_detector
    else:
        history = history_or_detector.history_
        best = history_or_detector.best_epoch_
    ax = _axes(ax)
    styles = {"loss": "-", "recon": "--", "kl": ":"}
    for split, color in (("train", "C0"), ("val", "C1")):
        for part, style in styles.items():
            key = f"{split}_{part}"
            if key in history:
                values = history[key]
                # the epoch each check ran after; histories without it have one an epoch
                epochs = history.get("epoch") or np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, color=color, marker=".", label=key)
    if best is not None:
        ax.axvline(best, color="k", linewidth=0.8, label=f"kept epoch ({best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per sample")
    ax.set_title("training history")
    ax.legend(fontsize="small")
    return ax


def plot_score_histogram(scores, y=None, threshold=None, ax=None, bins=50):
    """Histogram of normality scores, split by label, with the threshold drawn.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        ``score_samples`` output (higher = more normal).
    y : array-like of shape (n_samples,), optional
        1 for anomalies, 0 for normal samples.
    threshold : float, optional
        The detector's ``offset_``.
    ax : matplotlib Axes, optional
        Axes to draw on.
    bins : int, default=50
        Number of bins.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae.plotting import plot_score_histogram
    >>> ax = plot_score_histogram(np.r_[np.zeros(50), -np.ones(5)], np.r_[[0] * 50, [1] * 5])
    >>> ax.get_xlabel()
    'score (higher = more normal)'
    """
    scores, y = _scores_and_labels(scores, y, both_classes=False)
    ax = _axes(ax)
    edges = np.histogram_bin_edges(scores, bins=bins)
    if y is None:
        ax.hist(scores, bins=edges, alpha=0.7, label="all")
    else:
        for value, name in ((0, "normal"), (1, "anomaly")):
            if (y == value).any():  # a density of no rows is undefined
                ax.hist(scores[y == value], bins=edges, alpha=0.6, density=True, label=name)
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label="threshold")
    ax.set_xlabel("score (higher = more normal)")
    ax.set_ylabel("density" if y is not None else "count")
    ax.set_title("score distribution")
    ax.legend(fontsize="small")
    return ax


def plot_roc_pr(scores, y, axes=None):
    """ROC and precision-recall curves of anomaly detection (anomaly = positive class).

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        ``score_samples`` output (higher = more normal).
    y : array-like of shape (n_samples,)
        1 for anomalies, 0 for normal samples.
    axes : pair of matplotlib Axes, optional
        Axes for the ROC and the PR curve.

    Returns
    -------
    axes : tuple of two matplotlib Axes
        The ROC and precision-recall axes.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae.plotting import plot_roc_pr
    >>> roc, pr = plot_roc_pr(np.r_[np.zeros(20), -np.ones(5)], np.r_[[0] * 20, [1] * 5])
    >>> roc.get_xlabel(), pr.get_xlabel()
    ('false positive rate', 'recall')
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    scores, y = _scores_and_labels(scores, y, both_classes=True)
    anomaly = -scores
    if axes is None:
        _, axes = _pyplot().subplots(1, 2, figsize=(9, 4))
    roc_ax, pr_ax = axes
    fpr, tpr, _ = roc_curve(y, anomaly)
    roc_ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y, anomaly):.3f}")
    roc_ax.plot([0, 1], [0, 1], color="0.6", linestyle=":")
    roc_ax.set_xlabel("false positive rate")
    roc_ax.set_ylabel("true positive rate")
    roc_ax.set_title("ROC")
    roc_ax.legend(loc="lower right")
    precision, recall, _ = precision_recall_curve(y, anomaly)
    pr_ax.plot(recall, precision, label=f"AP = {average_precision_score(y, anomaly):.3f}")
    pr_ax.axhline(y.mean(), color="0.6", linestyle=":")
    pr_ax.set_xlabel("recall")
    pr_ax.set_ylabel("precision")
    pr_ax.set_title("precision-recall")
    pr_ax.legend(loc="upper right")
    return roc_ax, pr_ax


def plot_latent_space(detector, X, y=None, ax=None, member=0):
    """2-D view of the posterior means: the first two latent dimensions, or their
    first two principal components when the latent space has more than two.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
        The detector whose encoder is used.
    X : array-like of shape (n_samples, n_features)
        Samples to encode.
    y : array-like of shape (n_samples,), optional
        Labels to colour by (1 = anomaly).
    ax : matplotlib Axes, optional
        Axes to draw on.
    member : int, default=0
        Which ensemble member's latent space.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEOutlierDetector
    >>> from skvae.plotting import plot_latent_space
    >>> X = np.random.RandomState(0).randn(100, 4)
    >>> det = VAEOutlierDetector(epochs=3, random_state=0).fit(X)
    >>> plot_latent_space(det, X).get_xlabel()
    'z1'
    """
    mu, _ = detector.encode(X, member=member)
    if mu.shape[1] > 2:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2).fit_transform(mu)
        labels = ("latent PC1", "latent PC2")
    elif mu.shape[1] == 2:
        coords, labels = mu, ("z1", "z2")
    else:
        coords = np.c_[mu[:, 0], np.zeros(len(mu))]
        labels = ("z1", "")
    ax = _axes(ax)
    if y is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.6)
    else:
        y = check_labels(y, len(coords), both_classes=False)
        for value, name in ((0, "normal"), (1, "anomaly")):
            sel = y == value
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.6, label=name)
        ax.legend(fontsize="small")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title("latent space (posterior means)")
    return ax


def plot_evaluation(scores, y, threshold=None):
    """Score histogram, ROC and precision-recall curves side by side.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        ``score_samples`` output (higher = more normal).
    y : array-like of shape (n_samples,)
        1 for anomalies, 0 for normal samples.
    threshold : float, optional
        The detector's ``offset_``.

    Returns
    -------
    fig : matplotlib Figure
        The figure with three axes.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae.plotting import plot_evaluation
    >>> fig = plot_evaluation(np.r_[np.zeros(20), -np.ones(5)], np.r_[[0] * 20, [1] * 5])
    >>> len(fig.axes)
    3
    """
    fig, axes = _pyplot().subplots(1, 3, figsize=(14, 4))
    plot_score_histogram(scores, y, threshold, ax=axes[0])
    plot_roc_pr(scores, y, axes=axes[1:])
    fig.tight_layout()
    return fig


def plot_feature_contributions(
    detector, X, feature_names=None, ax=None, top: int | None = 10, row_labels=None
):
    """Per-feature contributions to the score of one or several rows, as bars.

    The lowest bars are the features that make a row an outlier (see
    :meth:`skvae.VAEOutlierDetector.feature_contributions`). Features are ordered by
    the lowest contribution over the rows shown.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
        The detector.
    X : array-like of shape (n_rows, n_features)
        The row(s) to explain (a 1-D array is one row).
    feature_names : list of str, optional
        Names of the features; default: the detector's ``feature_names_in_`` or
        ``x[j]``. For offline-RL data, :func:`skvae.datasets.feature_names` gives
        ``next_obs[3]``, ``action[1]``, ...
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made when omitted.
    top : int or None, default=10
        Show only the ``top`` lowest features (``None``: all).
    row_labels : list of str, optional
        Legend labels of the rows (default ``row 0``, ``row 1``, ...).

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEOutlierDetector
    >>> from skvae.plotting import plot_feature_contributions
    >>> rng = np.random.RandomState(0)
    >>> det = VAEOutlierDetector(epochs=10, random_state=0).fit(rng.normal(size=(200, 4)))
    >>> ax = plot_feature_contributions(det, [0.0, 7.0, 0.0, 0.0], feature_names=list("abcd"))
    >>> ax.get_yticklabels()[0].get_text()
    'b'
    """
    X = np.asarray(X, dtype=float)
    X = X[None] if X.ndim == 1 else X
    contributions = np.asarray(detector.feature_contributions(X))
    n_features = contributions.shape[1]
    if feature_names is None:
        names = getattr(detector, "feature_names_in_", None)
        feature_names = (
            [str(n) for n in names] if names is not None else [f"x[{j}]" for j in range(n_features)]
        )
    if len(feature_names) != n_features:
        raise ValueError(f"feature_names has {len(feature_names)} names for {n_features} features.")
    order = np.argsort(contributions.min(0))
    if top is not None:
        order = order[:top]
    ax = _axes(ax)
    n_rows = len(contributions)
    height = 0.8 / n_rows
    positions = np.arange(len(order))
    labels = row_labels or [f"row {i}" for i in range(n_rows)]
    for i, row in enumerate(contributions):
        ax.barh(positions + i * height, row[order], height=height, label=labels[i])
    ax.set_yticks(positions + height * (n_rows - 1) / 2)
    ax.set_yticklabels([feature_names[j] for j in order])
    ax.invert_yaxis()  # the most abnormal feature on top
    ax.axvline(0.0, color="k", linewidth=0.5)
    ax.set_xlabel("contribution to the score (lower = more abnormal)")
    ax.set_title("feature contributions")
    if n_rows > 1:
        ax.legend(fontsize="small")
    return ax
