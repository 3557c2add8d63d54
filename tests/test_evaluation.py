"""Evaluation helpers and synthetic data."""

import numpy as np
import pytest

from skvae import VAEOutlierDetector, evaluate_anomaly_detection, evaluate_labelled, make_synthetic
from skvae.evaluation import ANOMALY_TYPES


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_make_synthetic_kinds(kind):
    X, y = make_synthetic(400, 5, anomaly_type=kind, anomaly_fraction=0.1, random_state=0)
    assert X.shape == (400, 5) and y.sum() == 40 and set(np.unique(y)) == {0, 1}
    X2, _ = make_synthetic(400, 5, anomaly_type=kind, anomaly_fraction=0.1, random_state=0)
    np.testing.assert_array_equal(X, X2)
    X3, _ = make_synthetic(400, 5, anomaly_type=kind, anomaly_fraction=0.1, random_state=1)
    assert not np.array_equal(X, X3)
    normal, anomaly = X[y == 0], X[y == 1]
    dist_normal = np.linalg.norm(normal - normal.mean(0), axis=1).mean()
    dist_anomaly = np.linalg.norm(anomaly - normal.mean(0), axis=1).mean()
    if kind in ("outlier", "cluster"):
        assert dist_anomaly > 1.5 * dist_normal


def test_make_synthetic_errors():
    with pytest.raises(ValueError, match="anomaly_type"):
        make_synthetic(100, 3, anomaly_type="weird")
    with pytest.raises(ValueError, match="n_features"):
        make_synthetic(100, 1)
    with pytest.raises(ValueError, match="anomaly_fraction"):
        make_synthetic(100, 3, anomaly_fraction=1.5)
    # scikit-learn's parameter validation, not numpy's "negative dimensions"
    with pytest.raises(ValueError, match="'n_samples' parameter of make_synthetic"):
        make_synthetic(0, 3)
    with pytest.raises(ValueError, match="leaves no normal sample"):
        make_synthetic(2, 3, anomaly_fraction=0.9)


@pytest.fixture(scope="module")
def model_and_data():
    X, y = make_synthetic(1200, 4, anomaly_type="outlier", random_state=0)
    det = VAEOutlierDetector(contamination=0.05, random_state=0).fit(X[y == 0][:800])
    return det, X, y


def test_evaluate_both_forms_agree(model_and_data):
    det, X, y = model_and_data
    test_normal, anomalies = X[y == 0][800:], X[y == 1]
    r1 = evaluate_anomaly_detection(det, test_normal, anomalies)
    r2 = evaluate_labelled(
        det,
        np.vstack([test_normal, anomalies]),
        np.r_[np.zeros(len(test_normal)), np.ones(len(anomalies))],
    )
    assert r1.to_dict() == r2.to_dict()
    assert r1.roc_auc > 0.95 and r1["roc_auc"] == r1.roc_auc
    assert 0 <= r1.accuracy <= 1 and 0 <= r1.f1 <= 1 and r1.recall > 0.8
    assert r1.normal_score_mean > r1.anomaly_score_mean
    assert r1.threshold == det.offset_
    assert r1.n_normal == len(test_normal) and r1.n_anomaly == len(anomalies)
    assert set(r1.keys()) >= {"roc_auc", "accuracy", "normal_score_mean", "anomaly_score_std"}


def test_evaluate_needs_both_classes(model_and_data):
    det, X, y = model_and_data
    with pytest.raises(ValueError, match="both classes"):
        evaluate_labelled(det, X[y == 0], np.zeros((y == 0).sum()))
    with pytest.raises(ValueError, match=r"need at least one row each; got \d+ and 0"):
        evaluate_anomaly_detection(det, X[y == 0], X[:0])


@pytest.mark.parametrize(
    "labels, match",
    [
        (lambda y: y[:10], "y has 10 labels but X has 1200 rows"),
        (lambda y: np.where(y == 1, -1, 1), r"got values -1, 1 \(for predict's convention"),
        (lambda y: np.where(y == 1, np.nan, 0.0), "got values 0.0, nan"),
        (lambda y: np.where(y == 1, 1.7, 0.0), "got values 0.0, 1.7"),  # not truncated to 1
        (lambda y: np.where(y == 1, "a", "n"), "got values 'a', 'n'"),
    ],
)
def test_evaluate_says_what_is_wrong_with_the_labels(model_and_data, labels, match):
    det, X, y = model_and_data
    with pytest.raises(ValueError, match=match):
        evaluate_labelled(det, X, labels(y))


def test_evaluate_accepts_boolean_and_column_labels(model_and_data):
    det, X, y = model_and_data
    expected = evaluate_labelled(det, X, y).to_dict()
    assert evaluate_labelled(det, X, y.astype(bool)).to_dict() == expected
    assert evaluate_labelled(det, X.tolist(), y[:, None].astype(float)).to_dict() == expected


def test_evaluate_with_plot(model_and_data):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    det, X, y = model_and_data
    report = evaluate_labelled(det, X, y, plot=True)
    assert len(report.figure.axes) == 3


@pytest.mark.slow
def test_package_imports_without_matplotlib():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import skvae, skvae.plotting, skvae.evaluation\n"
        "try:\n"
        "    skvae.plotting.plot_score_histogram([0.0, 1.0])\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "skvae[plot]" in out.stdout


def test_model_selection_in_one_line_with_either_label_convention():
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

    from skvae import outlier_scorer

    X, y = make_synthetic(500, 4, anomaly_type="local", magnitude=1.5, random_state=0)
    det = VAEOutlierDetector(epochs=20, random_state=0).fit(X)
    expected = roc_auc_score(y, -det.score_samples(X))
    scorer = outlier_scorer()
    assert scorer(det, X, y) == scorer(det, X, np.where(y == 1, -1, 1)) == expected
    # the trap it avoids: scikit-learn's 'roc_auc' ranks by decision_function
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    ours = cross_val_score(det, X, y, scoring=scorer, cv=cv)
    theirs = cross_val_score(det, X, y, scoring="roc_auc", cv=cv)
    np.testing.assert_allclose(ours, 1 - theirs)
    ap = outlier_scorer("average_precision")(det, X, y)
    assert 0 < ap <= 1
    # without scoring, GridSearchCV maximises score(): the mean ELBO of held-out rows
    search = GridSearchCV(det, {"latent_dim": [1, 2]}, cv=2).fit(X[y == 0])
    assert np.isfinite(search.best_score_)
    assert det.score(X) == pytest.approx(det.score_samples(X).mean())
    with pytest.raises(ValueError, match="'metric' parameter"):
        outlier_scorer("accuracy")


def test_predict_proba_is_one_minus_the_pvalue_in_pyods_column_order():
    X, _ = make_synthetic(400, 4, random_state=0)
    det = VAEOutlierDetector(epochs=10, random_state=0).fit(X)
    proba = det.predict_proba(X[:50])
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba[:, 1], 1 - det.pvalues(X[:50]))


def test_a_plot_path_saves_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    X, y = make_synthetic(300, 4, random_state=0)
    det = VAEOutlierDetector(epochs=5, random_state=0).fit(X)
    report = evaluate_anomaly_detection(det, X[y == 0], X[y == 1], plot=tmp_path / "eval.png")
    assert report.figure is not None
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
