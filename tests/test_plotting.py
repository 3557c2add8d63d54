"""Each plot renders with Agg and has the expected artists and labels."""

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from skvae import VAEOutlierDetector, make_synthetic  # noqa: E402
from skvae.plotting import (  # noqa: E402
    plot_evaluation,
    plot_latent_space,
    plot_roc_pr,
    plot_score_histogram,
    plot_training_history,
)


@pytest.fixture(scope="module")
def fitted():
    X, y = make_synthetic(600, 5, anomaly_type="cluster", random_state=0)
    det = VAEOutlierDetector(epochs=30, latent_dim=3, random_state=0).fit(X[y == 0])
    return det, X, y


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _render(obj):
    fig = obj.figure if hasattr(obj, "figure") else obj
    fig.canvas.draw()


def test_training_history(fitted):
    det, _, _ = fitted
    ax = plot_training_history(det)
    _render(ax)
    labels = {line.get_label() for line in ax.get_lines()}
    assert {"train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"} <= labels
    kept = [line for line in ax.get_lines() if line.get_label().startswith("kept epoch")]
    assert len(kept) == 1 and kept[0].get_xdata()[0] == det.best_epoch_
    val = next(line for line in ax.get_lines() if line.get_label() == "val_loss")
    assert list(val.get_xdata()) == det.history_["epoch"]  # at the checks' epochs
    assert det.best_epoch_ in det.history_["epoch"]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    # a bare history dict works too, on given axes
    _, ax2 = plt.subplots()
    assert plot_training_history(det.history_, ax=ax2) is ax2


def test_score_histogram(fitted):
    det, X, y = fitted
    ax = plot_score_histogram(det.score_samples(X), y, threshold=det.offset_)
    _render(ax)
    assert len(ax.patches) > 0  # histogram bars
    assert any(line.get_label() == "threshold" for line in ax.get_lines())
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"normal", "anomaly"}
    assert "score" in ax.get_xlabel()


def test_roc_pr(fitted):
    det, X, y = fitted
    roc, pr = plot_roc_pr(det.score_samples(X), y)
    _render(roc)
    assert roc.get_xlabel() == "false positive rate" and pr.get_xlabel() == "recall"
    assert roc.get_legend().get_texts()[0].get_text().startswith("AUC = ")
    assert pr.get_legend().get_texts()[0].get_text().startswith("AP = ")
    assert len(roc.get_lines()) == 2 and len(pr.get_lines()) == 2


def test_latent_space(fitted):
    det, X, y = fitted
    ax = plot_latent_space(det, X, y)
    _render(ax)
    assert len(ax.collections) == 2  # normal and anomaly scatters
    assert ax.get_xlabel() == "latent PC1"  # latent_dim=3 -> PCA
    ax = plot_latent_space(det, X)
    assert len(ax.collections) == 1


def test_evaluation_figure(fitted):
    det, X, y = fitted
    fig = plot_evaluation(det.score_samples(X), y, threshold=det.offset_)
    _render(fig)
    assert len(fig.axes) == 3 and len(fig.axes[0].patches) > 0


def test_library_never_shows(fitted, monkeypatch):
    det, X, y = fitted
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show called"))
    plot_evaluation(det.score_samples(X), y)
    plot_training_history(det)


@pytest.mark.parametrize(
    "plot, labels, match",
    [
        # predict's convention (+1 normal) would have drawn the curves inverted
        (plot_roc_pr, lambda y: 1 - 2 * y, r"got values -1, 1 \(for predict's convention"),
        (plot_score_histogram, lambda y: 1 - 2 * y, "got values -1, 1"),
        (plot_evaluation, lambda y: y[:10], "y has 10 labels but there are 600 scores"),
        (plot_roc_pr, lambda y: 0 * y, "both classes"),
    ],
)
def test_plots_check_their_labels(fitted, plot, labels, match):
    det, X, y = fitted
    with pytest.raises(ValueError, match=match):
        plot(det.score_samples(X), labels(y))


def test_plots_refuse_non_finite_scores_and_draw_one_class(fitted):
    import numpy as np

    det, X, y = fitted
    scores = det.score_samples(X)
    with pytest.raises(ValueError, match="NaN or infinity"):
        plot_score_histogram(np.r_[scores, np.nan])
    with pytest.raises(ValueError, match="got values -1, 1"):
        plot_latent_space(det, X, 1 - 2 * y)
    ax = plot_score_histogram(scores[y == 0], y[y == 0])  # one class: no empty density
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["normal"]
