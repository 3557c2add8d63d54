"""Why is it an outlier, and how sure: feature contributions and conformal p-values."""

import functools

import numpy as np
import pytest
import torch
from sklearn import config_context

import skvae
from skvae import VAEOutlierDetector
from skvae.cli import main
from skvae.penalty import RewardPenalty

SCORE_TYPES = ["elbo", "reconstruction", "squared_error", "reconstruction_probability"]


def factor_data(n, seed, d=8, k=2):
    """Rows driven by a few correlated latent factors, plus small noise."""
    rng = np.random.RandomState(seed)
    W = np.random.RandomState(100).normal(size=(k, d))
    return rng.normal(size=(n, k)) @ W + 0.1 * rng.normal(size=(n, d))


@functools.cache
def fit_factor_data(seed):
    """The default detector on 3,000 factor rows of ``seed`` (fitted once, shared; the
    tests only read it)."""
    X = factor_data(3000, seed=seed)
    return VAEOutlierDetector(random_state=seed).fit(X), X


@pytest.fixture(scope="module")
def fitted():
    return fit_factor_data(0)


@pytest.mark.parametrize("score_type", SCORE_TYPES)
def test_contributions_add_up_to_the_score(score_type):
    X = factor_data(400, seed=1)
    det = VAEOutlierDetector(epochs=5, score_type=score_type, random_state=0).fit(X)
    contributions, latent = det.feature_contributions(X, return_latent=True)
    assert contributions.shape == X.shape and latent.shape == (400,)
    np.testing.assert_allclose(  # float32 rounding: the terms are summed in another order
        contributions.sum(1) + latent, det.score_samples(X), rtol=1e-5, atol=1e-4
    )
    if score_type != "elbo":
        assert not latent.any()  # only the ELBO has a latent (KL) term
    else:
        assert (latent <= 0).all()  # minus a KL divergence


def test_contributions_on_every_kind_of_input(fitted, tmp_path):
    import h5py
    import pandas as pd

    det, X = fitted
    expected = det.feature_contributions(X[:500])
    with config_context(working_memory=1):  # chunks of about 100 rows: other float32 kernels
        np.testing.assert_allclose(
            det.feature_contributions(X[:500]), expected, rtol=1e-5, atol=1e-5
        )
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float64, (500, 8))
    mm[:] = X[:500]
    np.testing.assert_allclose(det.feature_contributions(mm), expected, rtol=1e-12, atol=1e-12)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = X[:500]
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_allclose(
            det.feature_contributions(f["x"]), expected, rtol=1e-12, atol=1e-12
        )
    t = det.feature_contributions(torch.as_tensor(X[:500]))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-12, atol=1e-12)
    names = [f"f{j}" for j in range(8)]
    df_det = VAEOutlierDetector(epochs=3, random_state=0).fit(pd.DataFrame(X, columns=names))
    assert df_det.feature_contributions(pd.DataFrame(X[:5], columns=names)).shape == (5, 8)
    with pytest.raises(ValueError, match="features"):
        det.feature_contributions(X[:5, :3])


@pytest.mark.parametrize("seed", [0, 1])
def test_pushed_features_are_the_two_lowest(seed):
    det, X = fit_factor_data(seed)
    rng = np.random.RandomState(seed + 20)
    A = factor_data(300, seed=seed + 10)
    pairs = np.array([rng.choice(8, 2, replace=False) for _ in range(300)])
    signs = rng.choice([-1.0, 1.0], size=(300, 2))
    rows = np.arange(300)
    for i in range(2):
        A[rows, pairs[:, i]] += 6 * signs[:, i] * X.std(0)[pairs[:, i]]
    lowest_two = np.argsort(det.feature_contributions(A), 1)[:, :2]
    hits = np.mean([set(low) == set(p) for low, p in zip(lowest_two, pairs)])
    assert hits >= 0.95, hits


@pytest.mark.parametrize("seed", [0, 1])
def test_a_broken_correlation_points_at_its_feature(seed):
    det, X = fit_factor_data(seed)
    rng = np.random.RandomState(seed + 20)
    B = factor_data(400, seed=seed + 10)
    cols, donors = rng.randint(8, size=400), rng.randint(400, size=400)
    B[np.arange(400), cols] = B[donors, cols]  # the marginal is unchanged
    flagged = det.predict(B) == -1
    assert flagged.sum() > 100
    hits = np.mean(det.feature_contributions(B).argmin(1)[flagged] == cols[flagged])
    assert hits >= 0.85, hits


def test_pvalues_keep_the_false_alarm_rate_on_fresh_inliers():
    rates = {0.01: [], 0.05: [], 0.1: []}
    for seed in range(3):
        det, _ = fit_factor_data(seed)
        assert det.calibration_source_ == "out-of-bag" and len(det.calibration_scores_) > 1000
        p = det.pvalues(factor_data(4000, seed=seed + 50))
        assert ((p > 0) & (p <= 1)).all()
        for alpha in rates:
            rates[alpha].append(np.mean(p <= alpha))
    for alpha, r in rates.items():
        # the guarantee is on average over calibration sets: allow 2 standard errors
        n_cal = len(det.calibration_scores_)
        se = np.sqrt(alpha * (1 - alpha) * (1 / n_cal + 1 / 4000) / 3)
        assert np.mean(r) <= alpha + 2 * se, (alpha, r)


def test_alpha_flags_exactly_the_small_pvalues_and_is_off_by_default(fitted):
    det, X = fitted
    test = np.r_[factor_data(500, seed=7), factor_data(20, seed=8) * 4]
    conformal = VAEOutlierDetector(alpha=0.05, random_state=0).fit(X)
    p = conformal.pvalues(test)
    np.testing.assert_array_equal(conformal.predict(test) == -1, p <= 0.05)
    assert det.alpha is None  # default: the contamination quantile, as before
    assert det.offset_ == pytest.approx(np.percentile(-det.decision_scores_, 10))
    with pytest.raises(ValueError, match="calibration rows"):
        VAEOutlierDetector(alpha=0.001, epochs=2, random_state=0).fit(X[:300])


def test_pvalues_survive_saving(fitted, tmp_path):
    det, X = fitted
    loaded = skvae.load(det.save(tmp_path / "m.skvae"))
    np.testing.assert_array_equal(loaded.pvalues(X[:100]), det.pvalues(X[:100]))
    assert loaded.calibration_source_ == det.calibration_source_
    t = det.pvalues(torch.as_tensor(X[:100]))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), det.pvalues(X[:100]))


def test_calibration_falls_back_to_the_validation_rows():
    X = factor_data(600, seed=3)
    det = VAEOutlierDetector(max_samples=1.0, epochs=3, random_state=0).fit(X)
    assert det.calibration_source_ == "validation" and len(det.calibration_scores_) == 60
    none = VAEOutlierDetector(max_samples=1.0, validation_fraction=0.0, epochs=2).fit(X)
    assert none.calibration_source_ == "none"
    with pytest.raises(ValueError, match="no calibration rows"):
        none.pvalues(X)


def test_penalty_threshold_from_a_pvalue(fitted):
    det, X = fitted
    pen = RewardPenalty(det, kind="hinge", pvalue=0.05)
    fresh = factor_data(4000, seed=60)
    s = pen.normalized_scores(fresh)
    assert np.mean(s < pen.thr_) == pytest.approx(np.mean(det.pvalues(fresh) <= 0.05))
    with pytest.raises(ValueError, match="not both"):
        RewardPenalty(det, thr=0.0, pvalue=0.05)


def test_plot_feature_contributions(fitted):
    import matplotlib

    matplotlib.use("Agg")
    from skvae.datasets import feature_names
    from skvae.plotting import plot_feature_contributions

    det, X = fitted
    row = X[:1].copy()
    row[0, 5] += 8 * X[:, 5].std()
    ax = plot_feature_contributions(det, row, top=3)
    assert ax.get_yticklabels()[0].get_text() == "x[5]"
    assert len(ax.patches) == 3
    data = {"next_observations": np.zeros((1, 6)), "actions": np.zeros((1, 2))}
    names = feature_names(data)
    ax = plot_feature_contributions(det, np.r_[row, X[1:2]], feature_names=names, top=None)
    assert ax.get_yticklabels()[0].get_text() == "next_obs[5]"
    assert len(ax.patches) == 16 and ax.get_legend() is not None
    with pytest.raises(ValueError, match="names"):
        plot_feature_contributions(det, row, feature_names=["a"])


def test_cli_explain_and_pvalues(hopper, tmp_path, capsys):
    from rl_data import write_d4rl_hdf5

    data = write_d4rl_hdf5(tmp_path / "hopper_generated-v2.hdf5", hopper["linear"])
    args = ["train", "--data-path", str(data), "--model-save-path", str(tmp_path / "m")]
    assert main([*args, "--epochs", "3", "--device", "cpu", "--quiet"]) == 0
    out = [str(tmp_path / "c.csv"), str(tmp_path / "p.npy")]
    model = str(tmp_path / "m.skvae")
    assert main(["score", model, str(data), "--explain", out[0], "--pvalues", out[1]]) == 0
    text = capsys.readouterr().out
    assert "feature contributions written" in text and "p-values written" in text
    header = (tmp_path / "c.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "next_obs[0]" and header[-2] == "action[2]" and header[-1] == "latent"
    table = np.loadtxt(tmp_path / "c.csv", delimiter=",", skiprows=1)
    det = skvae.load(model)
    from skvae.datasets import make_features

    X = make_features(hopper["linear"])
    np.testing.assert_allclose(table.sum(1), det.score_samples(X), rtol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), det.pvalues(X))
    assert main(["score", model, str(data), "--explain", str(tmp_path / "c.npy")]) == 2
    assert ".csv" in capsys.readouterr().err


def test_feature_contributions_of_a_dataframe_keep_its_columns():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"], index=range(5, 205))
    det = VAEOutlierDetector(epochs=5, random_state=0).fit(X)
    c, latent = det.feature_contributions(X.iloc[:10], return_latent=True)
    assert list(c.columns) == ["a", "b", "c"] and list(c.index) == list(range(5, 15))
    assert latent.name == "latent" and list(latent.index) == list(range(5, 15))
    np.testing.assert_allclose(c.sum(axis=1) + latent, det.score_samples(X.iloc[:10]))
