"""Behaviour of VAEOutlierDetector beyond scikit-learn's generic checks."""

import os
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skvae import VAEOutlierDetector, make_synthetic
from skvae._network import VAEEnsemble

SCORE_TYPES = ["elbo", "reconstruction", "reconstruction_probability"]
FAST = dict(epochs=15, n_estimators=2, patience=None, random_state=0)


def gaussian_with_outliers(n=600, d=6, n_out=30, seed=0):
    rng = np.random.RandomState(seed)
    cov = np.eye(d) + 0.5
    inliers = rng.multivariate_normal(np.zeros(d), cov, size=n)
    outliers = rng.uniform(-8, 8, size=(n_out, d))
    X = np.vstack([inliers, outliers])
    y = np.r_[np.zeros(n), np.ones(n_out)]
    return X, y


def manifold_with_outliers(n=800, n_out=40, seed=1):
    """A noisy circle in 3-D (a curved 1-D manifold) and points off it inside its hull."""
    rng = np.random.RandomState(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    inliers = np.c_[np.cos(t), np.sin(t), 0.5 * np.sin(2 * t)] + 0.03 * rng.normal(size=(n, 3))
    outliers = rng.uniform(-0.6, 0.6, size=(n_out, 3))
    return np.vstack([inliers, outliers]), np.r_[np.zeros(n), np.ones(n_out)]


@pytest.fixture(scope="module")
def data():
    return gaussian_with_outliers()


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    # on the CPU also where a GPU is ('auto'): tests compare its scores bit for bit
    return VAEOutlierDetector(device="cpu", **FAST).fit(X)


@pytest.mark.parametrize("score_type", SCORE_TYPES)
@pytest.mark.parametrize(
    "make", [gaussian_with_outliers, pytest.param(manifold_with_outliers, marks=pytest.mark.slow)]
)
def test_finds_anomalies(score_type, make):
    X, y = make()
    # a curved manifold takes more optimisation steps than the default budget
    params = {"epochs": 2000, "patience": None} if make is manifold_with_outliers else {}
    det = VAEOutlierDetector(score_type=score_type, random_state=0, **params).fit(X)
    auc = roc_auc_score(y, -det.score_samples(X))
    assert auc > 0.95, (score_type, make.__name__, auc)


def test_trimmed_loss_keeps_a_contaminating_cluster_abnormal():
    # 10 % of the training rows form a tight cluster off the data: the plain ELBO
    # learns it as normal, the trimmed ELBO leaves it out.
    X, y = make_synthetic(1000, 10, anomaly_type="cluster", anomaly_fraction=0.1, random_state=0)
    aucs = {
        trim: roc_auc_score(
            y, -VAEOutlierDetector(trim_fraction=trim, random_state=0).fit(X).score_samples(X)
        )
        for trim in (0.0, 0.1)
    }
    assert aucs[0.1] > 0.99 and aucs[0.0] < 0.9, aucs


def test_held_out_rows_calibrate_the_decoder_variance(data, monkeypatch):
    X, _ = data
    calls = []
    original = VAEEnsemble.calibrate_decoder_variance

    def record(module, x, trim_fraction):
        calls.append((x.shape[0], trim_fraction))
        return original(module, x, trim_fraction)

    monkeypatch.setattr(VAEEnsemble, "calibrate_decoder_variance", record)
    rng = np.random.RandomState(0)
    noisy = np.vstack([X] * 3)[:1500] + rng.normal(size=(1500, X.shape[1]))
    kwargs = dict(epochs=30, n_estimators=2, random_state=0)
    calibrated = VAEOutlierDetector(trim_fraction=0.2, **kwargs).fit(X, validation_data=noisy)
    assert calls == [(1024, 0.2)]  # a large validation set: 1024 evenly spaced rows
    plain = VAEOutlierDetector(validation_fraction=0.0, **kwargs).fit(X)
    assert calls[-1][0] == 0  # no held-out rows: nothing to calibrate
    variance = {
        name: det.module_.decoder_logvar.detach().exp().mean().item()
        for name, det in [("calibrated", calibrated), ("plain", plain)]
    }
    # held-out rows with unit noise: the decoder cannot be as sure of them
    assert variance["calibrated"] > 1.5 * variance["plain"], variance


def test_sign_conventions_and_threshold(fitted, data):
    X, y = data
    scores = fitted.score_samples(X)
    assert scores.dtype == np.float64
    assert scores[y == 1].mean() < scores[y == 0].mean()
    np.testing.assert_allclose(fitted.decision_function(X), scores - fitted.offset_)
    pred = fitted.predict(X)
    assert set(np.unique(pred)) <= {-1, 1}
    np.testing.assert_array_equal(pred == -1, fitted.decision_function(X) < 0)
    # contamination=0.1 -> about 10 % of the training rows are flagged
    assert abs((fitted.predict(X) == -1).mean() - 0.1) < 0.01
    # PyOD-style attributes
    np.testing.assert_allclose(fitted.decision_scores_, -scores)
    assert fitted.threshold_ == -fitted.offset_
    np.testing.assert_array_equal(fitted.labels_, (pred == -1).astype(int))
    assert fitted.score_mean_ == pytest.approx(scores.mean())


def test_fit_predict_matches_fit_then_predict(data):
    X, _ = data
    a = VAEOutlierDetector(**FAST).fit_predict(X)
    b = VAEOutlierDetector(**FAST).fit(X).predict(X)
    np.testing.assert_array_equal(a, b)


def test_contamination_auto_is_tukey_fence(data):
    X, _ = data
    det = VAEOutlierDetector(contamination="auto", **FAST).fit(X)
    s = det.score_samples(X)
    q1, q3 = np.percentile(s, [25, 75])
    assert det.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))


def test_fitted_attributes(fitted, data):
    X, _ = data
    assert fitted.n_features_in_ == X.shape[1]
    assert isinstance(fitted.module_, torch.nn.Module)
    assert fitted.latent_dim_ == 2 and fitted.hidden_dims_ == (64, 32)
    assert fitted.n_epochs_ == 15 and 1 <= fitted.best_epoch_ <= 15
    # checks run once at least 20 steps have passed and after the last epoch
    epochs = fitted.history_["epoch"]
    assert epochs[-1] == fitted.n_epochs_ and fitted.best_epoch_ in epochs
    assert all(b > a for a, b in zip(epochs, epochs[1:]))
    for key in ["train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"]:
        assert len(fitted.history_[key]) == len(epochs)
        assert np.isfinite(fitted.history_[key]).all()
    h = {k: np.array(v) for k, v in fitted.history_.items()}
    # the optimised loss is trimmed: at most the mean over all rows of the batches
    assert (h["train_loss"] <= h["train_recon"] + h["train_kl"] + 1e-4).all()
    np.testing.assert_allclose(h["val_loss"], h["val_recon"] + h["val_kl"], rtol=1e-9)


def test_early_stopping_restores_best_weights(data):
    X, _ = data
    # per-sample decoder variance: no held-out calibration changes the restored weights
    det = VAEOutlierDetector(
        epochs=300,
        patience=3,
        n_estimators=1,
        lr=3e-2,
        decoder_variance="sample",
        device="cpu",
        random_state=0,
    ).fit(X)
    assert det.n_epochs_ < 300
    val, epochs = np.array(det.history_["val_loss"]), det.history_["epoch"]
    best = int(np.argmin(val))
    assert det.best_epoch_ == epochs[best]
    assert det.n_epochs_ == epochs[best + 3] == epochs[-1]  # 3 checks without improvement
    # the restored weights are those of the best epoch: recompute its validation loss
    rng = np.random.RandomState(0)
    rng.randint(np.iinfo(np.int32).max)
    _, val_idx = det._split(X.shape[0], rng)
    with torch.inference_mode():
        z = det.module_.scale_input(torch.from_numpy(X[val_idx]).double()).float()
        nll, kl = det.module_.loss_terms(z, None)
    assert float((nll + kl).mean()) == pytest.approx(val.min(), rel=1e-5)


@pytest.mark.parametrize("decoder_df", [5.0, 2.5, None])
def test_feature_terms_are_the_decoder_log_densities(decoder_df):
    # the default decoder is Student-t with 5 degrees of freedom; None is Gaussian
    X, _ = gaussian_with_outliers(n=300)
    params = {} if decoder_df == 5.0 else {"decoder_df": decoder_df}
    det = VAEOutlierDetector(epochs=5, device="cpu", random_state=0, **params).fit(X)
    assert det.decoder_df == decoder_df and det.module_.config["decoder_df"] == decoder_df
    net = det.module_
    with torch.no_grad():
        z = net.scale_input(torch.from_numpy(X[:50])).to(torch.float32)
        mean, logvar = net.decode(net.encode(z)[0])
        scale = torch.exp(0.5 * logvar)
        if decoder_df is None:
            density = torch.distributions.Normal(mean, scale)
        else:
            density = torch.distributions.StudentT(decoder_df, mean, scale)
        expected = density.log_prob(z).mean(0).double().numpy()
    np.testing.assert_allclose(det.feature_contributions(X[:50]), expected, rtol=1e-5, atol=1e-5)


def test_t_decoder_judges_values_beyond_the_clip_and_the_gaussian_ties_them():
    X, _ = gaussian_with_outliers(n=300)
    far = np.repeat(np.median(X, 0, keepdims=True), 3, 0)
    iqr_std = (np.percentile(X[:, 0], 75) - np.percentile(X[:, 0], 25)) / 1.349
    far[:, 0] += np.array([12.0, 30.0, 1e9]) * iqr_std  # robust standard deviations
    for df in (5.0, None):
        det = VAEOutlierDetector(epochs=5, decoder_df=df, random_state=0).fit(X)
        scores, (mu, _) = det.score_samples(far), det.encode(far)
        np.testing.assert_allclose(mu[1], mu[0], rtol=1e-6)  # the encoder sees +-10
        if df is None:  # the targets too
            assert scores[0] == pytest.approx(scores[1]) == pytest.approx(scores[2])
        else:  # 30 is further out than 12; 1e9 is clipped at 1e4, still finite
            assert scores[0] > scores[1] > scores[2] and np.isfinite(scores[2])


@pytest.mark.parametrize("bad", [0, -1.0, "5", float("nan")])
def test_decoder_df_must_be_positive_or_none(bad):
    X, _ = gaussian_with_outliers(n=50)
    with pytest.raises((ValueError, TypeError), match="decoder_df"):
        VAEOutlierDetector(decoder_df=bad, epochs=1).fit(X)


def test_recorded_training_losses_are_means_weighted_by_rows():
    from skvae._training import mean_training_losses

    t = torch.tensor
    recorded = [  # (rows, member losses, member nlls, member KLs) of two steps
        (4, t([1.0, 3.0]), t([2.0, 2.0]), t([0.0, 2.0])),
        (2, t([4.0, 4.0]), t([5.0, 7.0]), t([1.0, 1.0])),
    ]
    expected = [(2 * 4 + 4 * 2) / 6, (2 * 4 + 6 * 2) / 6, (1 * 4 + 1 * 2) / 6]
    assert mean_training_losses(recorded) == pytest.approx(expected)


@pytest.mark.parametrize(
    "max_samples, n_train, expected",
    [("auto", 10_000, 128), ("auto", 200, 100), ("auto", 1, 1), (64, 50, 50), (0.25, 400, 100)],
)
def test_member_subsample_size(max_samples, n_train, expected):
    # 'auto': 128 rows, but at most half the training rows so that members differ
    assert VAEOutlierDetector(max_samples=max_samples)._member_rows(n_train) == expected


def test_checks_run_every_20_steps_and_after_the_last_epoch():
    X, _ = gaussian_with_outliers(n=300)
    # 128-row subsamples in one batch: one step an epoch, so a check every 20 epochs
    det = VAEOutlierDetector(epochs=50, patience=None, random_state=0).fit(X)
    assert det.history_["epoch"] == [20, 40, 50]
    # epochs of 27 steps: a check after each
    det = VAEOutlierDetector(
        epochs=3, batch_size=10, max_samples=1.0, n_estimators=1, random_state=0
    ).fit(X)
    assert det.history_["epoch"] == [1, 2, 3]


def test_auto_epochs_take_100_steps():
    X, _ = gaussian_with_outliers(n=300)
    det = VAEOutlierDetector(patience=None, random_state=0).fit(X)
    assert det.n_epochs_ == 100 and det.history_["epoch"] == [20, 40, 60, 80, 100]


def test_no_validation_split():
    X, _ = gaussian_with_outliers(n=100)
    det = VAEOutlierDetector(validation_fraction=0.0, epochs=4, random_state=0).fit(X)
    assert "val_loss" not in det.history_
    assert det.n_epochs_ == det.best_epoch_ == 4


def test_defaults_choose_architecture_from_data():
    rng = np.random.RandomState(0)
    det = VAEOutlierDetector(epochs=1, random_state=0).fit(rng.normal(size=(50, 100)))
    assert det.hidden_dims_ == (64, 32) and det.latent_dim_ == 16
    det = VAEOutlierDetector(epochs=1, hidden_dims=[16], latent_dim=3).fit(rng.normal(size=(50, 5)))
    assert det.hidden_dims_ == (16,) and det.latent_dim_ == 3


def test_in_pipeline_and_grid_search(data):
    X, y = data
    pipe = Pipeline([("scale", StandardScaler()), ("vae", VAEOutlierDetector(**FAST))])
    pipe.fit(X)
    assert pipe.predict(X).shape == (len(X),)
    assert roc_auc_score(y, -pipe.score_samples(X)) > 0.9

    def auc(estimator, X, y):
        return roc_auc_score(y, -estimator.score_samples(X))

    search = GridSearchCV(
        pipe,
        {"vae__latent_dim": [1, 3], "vae__beta": [0.5, 1.0]},
        scoring=auc,
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_score_ > 0.9


def test_clone_keeps_params_not_fit(fitted):
    c = clone(fitted)
    assert c.get_params() == fitted.get_params()
    assert not hasattr(c, "module_")


@pytest.mark.parametrize("dump_load", ["pickle", "joblib"])
def test_persistence_round_trip(fitted, data, tmp_path, dump_load):
    X, _ = data
    if dump_load == "pickle":
        restored = pickle.loads(pickle.dumps(fitted))
    else:
        joblib.dump(fitted, tmp_path / "det.joblib")
        restored = joblib.load(tmp_path / "det.joblib")
    np.testing.assert_array_equal(restored.score_samples(X), fitted.score_samples(X))
    assert restored.offset_ == fitted.offset_


def test_pickle_stores_module_on_cpu(fitted):
    state = fitted.__getstate__()
    assert all(t.device.type == "cpu" for t in state["module_"]["state_dict"].values())
    assert isinstance(state["device_"], str)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_pickles_to_cpu_loadable_file(data, tmp_path, monkeypatch):
    X, _ = data
    det = VAEOutlierDetector(device="cuda", **FAST).fit(X)
    assert next(det.module_.parameters()).is_cuda
    joblib.dump(det, tmp_path / "gpu.joblib")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = joblib.load(tmp_path / "gpu.joblib")
    assert cpu.device_.type == "cpu"
    np.testing.assert_allclose(cpu.score_samples(X), det.score_samples(X), rtol=1e-4)


def test_cuda_path_in_state_loads_on_cpu(fitted, data, monkeypatch):
    """A pickle written with device_='cuda' unpickles on the CPU when CUDA is absent."""
    X, _ = data
    state = fitted.__getstate__()
    state["device_"] = "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = VAEOutlierDetector.__new__(VAEOutlierDetector)
    with pytest.warns(UserWarning, match="loaded on the CPU"):
        restored.__setstate__(state)
    assert restored.device_.type == "cpu"
    np.testing.assert_array_equal(restored.score_samples(X), fitted.score_samples(X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_with_validation_data(data):
    """validation_data is scaled like the training rows before the network moves to the
    GPU."""
    X, _ = data
    det = VAEOutlierDetector(device="cuda", **FAST).fit(X[:400], validation_data=X[400:])
    assert np.isfinite(det.history_["val_loss"]).all()
    assert np.isfinite(det.sample(5, random_state=0)).all()


def test_same_random_state_same_scores(data):
    X, _ = data
    a = VAEOutlierDetector(**FAST).fit(X).score_samples(X)
    b = VAEOutlierDetector(**FAST).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)
    c = VAEOutlierDetector(**{**FAST, "random_state": 1}).fit(X).score_samples(X)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_input_dtypes(dtype):
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(80, 3)) * 10).astype(dtype)
    det = VAEOutlierDetector(epochs=2, random_state=0).fit(X)
    s = det.score_samples(X)
    assert s.dtype == np.float64 and np.isfinite(s).all()


@pytest.mark.parametrize("score_type", SCORE_TYPES)
def test_scores_invariant_to_batching_and_order(fitted, data, score_type):
    X, _ = data
    det = clone(fitted).set_params(score_type=score_type).fit(X)
    full = det.score_samples(X)
    one_by_one = np.concatenate([det.score_samples(X[i : i + 1]) for i in range(50)])
    np.testing.assert_allclose(one_by_one, full[:50], rtol=1e-12)
    for size in (7, 100, 333):
        parts = np.concatenate([det.score_samples(X[i : i + size]) for i in range(0, len(X), size)])
        np.testing.assert_allclose(parts, full, rtol=1e-12)
    perm = np.random.RandomState(0).permutation(len(X))
    np.testing.assert_allclose(det.score_samples(X[perm]), full[perm], rtol=1e-12)
    # repeated calls are deterministic (Monte-Carlo noise is fixed at fit time)
    np.testing.assert_array_equal(det.score_samples(X), full)


def test_tiny_data_and_single_row_batches():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(5, 3))
    det = VAEOutlierDetector(batch_size=64, epochs=3, random_state=0).fit(X)
    assert det.score_samples(X).shape == (5,)
    det = VAEOutlierDetector(batch_size=1, epochs=2, random_state=0).fit(X)
    assert np.isfinite(det.score_samples(X)).all()
    det = VAEOutlierDetector(epochs=2, random_state=0).fit(X[:1])
    assert np.isfinite(det.score_samples(X)).all()


def test_init_only_stores_parameters():
    det = VAEOutlierDetector(device="not-a-device", score_type="nope", contamination=3)
    assert det.device == "not-a-device" and det.score_type == "nope"
    assert not hasattr(det, "device_")


def test_pandas_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    df = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    det = VAEOutlierDetector(epochs=2, random_state=0).fit(df)
    np.testing.assert_array_equal(det.feature_names_in_, ["a", "b", "c"])
    with pytest.warns(UserWarning, match="feature names"):
        det.score_samples(df.to_numpy())


@pytest.mark.parametrize(
    "X, match",
    [
        (np.full((2, 2), np.nan), "X has no row with an observed value"),
        (np.array([[1.0, np.nan], [2.0, np.nan]]), "features with every value missing"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), "infinity"),
        (np.empty((0, 3)), "0 sample"),
        (np.array([1.0, 2.0, 3.0]), "2D array"),
        (np.array([["a", "b"], ["c", "d"]]), "string|convert"),
    ],
)
def test_bad_input_to_fit(X, match):
    with pytest.raises(ValueError, match=match):
        VAEOutlierDetector(epochs=1).fit(X)


def test_bad_input_at_score_time(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match="features"):
        fitted.score_samples(X[:, :3])
    with pytest.raises(ValueError, match="infinity"):
        fitted.predict(np.full((2, X.shape[1]), np.inf))
    with pytest.raises(NotFittedError):
        VAEOutlierDetector().score_samples(X)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"score_type": "likelihood"}, "score_type"),
        ({"device": "tpu"}, "device"),
        ({"contamination": 0.7}, "contamination"),
        ({"contamination": 0.0}, "contamination"),
        ({"hidden_dims": (64, -1)}, "hidden_dims"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"trim_fraction": 0.5}, "trim_fraction"),
        ({"trim_fraction": -0.1}, "trim_fraction"),
    ],
)
def test_bad_parameters(data, params, match):
    X, _ = data
    with pytest.raises(ValueError, match=match):
        VAEOutlierDetector(**params).fit(X)


def test_cuda_requested_without_cuda(data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        VAEOutlierDetector(device="cuda", epochs=1).fit(data[0])


def test_generative_methods(fitted, data):
    X, _ = data
    mu, logvar = fitted.encode(X)
    assert mu.shape == logvar.shape == (len(X), fitted.latent_dim_)
    mu1, _ = fitted.encode(X, member=1)
    assert not np.allclose(mu, mu1)
    with pytest.raises(ValueError, match="member"):
        fitted.encode(X, member=5)
    rec = fitted.reconstruct(X)
    assert rec.shape == X.shape
    # reconstructions are closer to the inputs than the inputs are to their mean
    inl = slice(0, 600)
    assert ((rec[inl] - X[inl]) ** 2).mean() < ((X[inl] - X[inl].mean(0)) ** 2).mean()
    new = fitted.sample(500, random_state=0)
    assert new.shape == (500, X.shape[1])
    np.testing.assert_array_equal(new, fitted.sample(500, random_state=0))
    # samples look like the inliers: their mean is near the data mean
    assert np.abs(new.mean(0) - X[inl].mean(0)).max() < 0.5
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def _poison_adam(monkeypatch, at_step, value=float("nan")):
    """Make Adam write ``value`` into every weight from optimisation step ``at_step`` on."""
    original = torch.optim.Adam.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= at_step:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(value)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)


def test_divergence_restores_best_finite_epoch(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4))
    # 30 steps per epoch (a check after each): poisoning from step 31 on makes epoch 2
    # the first non-finite one
    det = VAEOutlierDetector(
        epochs=5,
        n_estimators=1,
        max_samples=1.0,
        validation_fraction=0.0,
        batch_size=10,
        random_state=0,
    )
    _poison_adam(monkeypatch, at_step=31)
    with pytest.warns(RuntimeWarning, match="diverged by epoch 2.*epoch 1 were restored"):
        det.fit(X)
    assert det.best_epoch_ == 1 and det.n_epochs_ == 2
    assert np.isfinite(det.score_samples(X)).all()


def test_divergence_without_finite_epoch_raises(monkeypatch):
    X = np.random.RandomState(0).normal(size=(50, 4))
    det = VAEOutlierDetector(epochs=3, n_estimators=1, batch_size=10, random_state=0)
    _poison_adam(monkeypatch, at_step=1, value=float("inf"))
    with pytest.raises(ValueError, match="diverged by epoch 3"):  # the one check
        det.fit(X)
    assert not hasattr(det, "module_")


def test_large_learning_rate_never_gives_nan_scores():
    X = np.random.RandomState(0).normal(size=(200, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            det = VAEOutlierDetector(lr=10.0, epochs=20, random_state=0).fit(X)
        except ValueError as exc:
            assert "diverged" in str(exc)
        else:
            assert np.isfinite(det.score_samples(X)).all()


def test_interrupted_fit_leaves_estimator_unchanged(fitted, data):
    X, _ = data
    det = clone(fitted).fit(X)
    before = det.score_samples(X)
    original = torch.optim.Adam.step

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", interrupt)
        with pytest.raises(KeyboardInterrupt):
            det.set_params(latent_dim=4).fit(X)
    assert original is torch.optim.Adam.step
    assert det.latent_dim_ == fitted.latent_dim_
    np.testing.assert_array_equal(det.score_samples(X), before)


def test_interrupted_first_fit_leaves_estimator_unfitted(data, monkeypatch):
    X, _ = data

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt)
    det = VAEOutlierDetector(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        det.fit(X)
    with pytest.raises(NotFittedError):
        det.score_samples(X)
    assert not hasattr(det, "n_features_in_")


def test_interrupted_refit_on_other_features_keeps_the_old_model(fitted, data, monkeypatch):
    X, _ = data
    det = clone(fitted).fit(X)
    before = det.score_samples(X)

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        det.fit(X[:, :3])
    assert det.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(det.score_samples(X), before)


def test_extreme_but_finite_input_gives_finite_scores():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(100, 3))
    X[:, 1] *= 1e30
    X[:, 2] = 7.0  # constant column
    det = VAEOutlierDetector(epochs=3, random_state=0).fit(X)
    s = det.score_samples(np.vstack([X, [[1e300, -1e300, 1e-300]]]))
    assert np.isfinite(s).all()


def test_precision(data):
    X, _ = data
    d64 = VAEOutlierDetector(precision="float64", **FAST).fit(X)
    d32 = VAEOutlierDetector(**FAST).fit(X)
    assert next(d64.module_.parameters()).dtype == torch.float64
    assert next(d32.module_.parameters()).dtype == torch.float32  # 'auto'
    np.testing.assert_allclose(d32.score_samples(X), d64.score_samples(X), rtol=1e-4)
    assert d32.score_samples(X).dtype == np.float64
    restored = pickle.loads(pickle.dumps(d32))
    assert next(restored.module_.parameters()).dtype == torch.float32


def test_divergence_message_names_the_loss_that_went_non_finite(monkeypatch):
    X = np.random.RandomState(0).normal(size=(300, 4))
    # 270 training rows in batches of 10: the 27th step ends epoch 1 (and runs its
    # check), so its training loss is finite and only the validation loss after it is not
    det = VAEOutlierDetector(
        epochs=3, n_estimators=1, max_samples=1.0, batch_size=10, random_state=0
    )
    _poison_adam(monkeypatch, at_step=27)
    with pytest.raises(ValueError, match="diverged by epoch 1") as info:
        det.fit(X)
    assert "val_loss" in str(info.value) and "train_loss" not in str(info.value)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda X: X[:10, :3], "validation_data: X has 3 features, but .* expecting 4"),
        (
            lambda X: np.full((10, 4), np.nan),
            "validation_data: it has no row with an observed value",
        ),
        (lambda X: np.full((10, 4), np.inf), "validation_data: Input X contains infinity"),
        (lambda X: X[:0], r"validation_data: Found array with 0 sample\(s\)"),
    ],
)
def test_bad_validation_data_is_named(bad, match):
    X = np.random.RandomState(0).normal(size=(100, 4))
    with pytest.raises(ValueError, match=match):
        VAEOutlierDetector(epochs=2, random_state=0).fit(X, validation_data=bad(X))


def test_threads_follow_n_jobs_and_the_process_setting_is_restored(monkeypatch):
    import threadpoolctl

    from skvae._device import WORK_PER_THREAD, n_threads

    seen = []
    import skvae._estimator

    def spy(function):
        def wrapped(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(skvae._estimator, "train", spy(skvae._estimator.train))
    monkeypatch.setattr(VAEOutlierDetector, "_forward_rows", spy(VAEOutlierDetector._forward_rows))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    X = np.random.RandomState(0).normal(size=(200, 4))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        det = VAEOutlierDetector(epochs=2, device="cpu", random_state=0).fit(X)
        det.score_samples(X)
        assert set(seen) == {1} and torch.get_num_threads() == 2  # None: one thread
        seen.clear()
        with joblib.parallel_config(n_jobs=2):  # None follows joblib's context
            det.score_samples(X)  # (too little work for a second thread)
            det.score_samples(np.tile(X, (20, 1)))
        assert seen[0] == 1
        seen.pop(0)
        assert seen == [min(2, os.cpu_count())] and torch.get_num_threads() == 2
        assert n_threads(-1) == min(os.cpu_count(), 2) and n_threads(1) == 1
        # small work gets one thread, whatever n_jobs says; enough work gets them all
        assert n_threads(-1, work=WORK_PER_THREAD - 1) == 1
        assert n_threads(-1, work=1e12) == min(os.cpu_count(), 2)
        with threadpoolctl.threadpool_limits(1):  # a limit the process set is kept
            assert n_threads(-1, work=1e12) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what joblib's workers are given
        assert n_threads(-1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="n_jobs"):
        VAEOutlierDetector(n_jobs="all").fit(X)


def test_progress_counts_steps_with_their_rate_and_verbose_2_adds_checks(data, capsys):
    import io

    from skvae._training import Progress

    X, _ = data
    VAEOutlierDetector(epochs=2, verbose=1, random_state=0).fit(X)
    err = capsys.readouterr().err  # not a terminal: plain lines, no carriage returns
    assert "\r" not in err and "step 2/2" in err and "steps/s" in err and "train_loss" in err
    VAEOutlierDetector(epochs=40, verbose=2, random_state=0).fit(X)
    lines = capsys.readouterr().err.splitlines()
    assert sum("check at step" in line for line in lines) == 2  # checks every 20 steps
    assert "check at step 20/40" in lines[0] or any("check at step 20/40" in x for x in lines)
    # on a terminal, tqdm's bar in steps
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    progress = Progress(5, 1, terminal)
    for _ in range(5):
        progress.step()
    progress.close()
    assert "5/5" in terminal.getvalue() and "step/s" in terminal.getvalue()
    # at 80 columns, with the losses shown, the bar keeps most of the line
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    progress = Progress(100, 1, terminal, ncols=80)
    for _ in range(50):
        progress.step()
    progress.check(3, {"train_loss": 12.3456, "recon": -3.21, "kl": 4.5, "val_loss": 13.789})
    progress.bar.refresh()
    line = terminal.getvalue().split("\r")[-1]
    assert len(line) <= 80 and len(line.split("|")[1]) >= 18, line  # was 1 cell


@pytest.mark.parametrize(
    "params, match",
    [
        ({"latent_dim": 10**9}, "'latent_dim' parameter"),
        ({"hidden_dims": (2,) * 10**5}, "hidden_dims must be 1 to 64"),
        ({"hidden_dims": (65537,)}, "hidden_dims must be 1 to 64"),
        ({"n_estimators": 10**7}, "'n_estimators' parameter"),
        ({"decoder_df": 1e308}, "'decoder_df' parameter"),
        ({"hidden_dims": (2**16, 2**16), "n_estimators": 4096}, "parameters, over the limit"),
    ],
)
def test_architectures_too_large_are_refused_before_allocating(params, match):
    X = np.random.RandomState(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match=match):
        VAEOutlierDetector(epochs=1, **params).fit(X)


def test_sample_too_large_and_sparse_or_meta_tensors_are_named_errors(fitted):
    with pytest.raises(ValueError, match="draw fewer per call"):
        fitted.sample(10**9)
    X = torch.randn(5, fitted.n_features_in_)
    for tensor in (X.to_sparse(), torch.empty(5, fitted.n_features_in_, device="meta")):
        with pytest.raises(TypeError, match="dense"):
            fitted.score_samples(tensor)
        with pytest.raises(TypeError, match="dense"):
            VAEOutlierDetector(epochs=1).fit(tensor)


# ---------------------------------------------------------------------- missing values
def _with_holes(X, fraction, seed=1):
    """``X`` with a ``fraction`` of its cells NaN, no row entirely missing."""
    rng = np.random.RandomState(seed)
    out = X.copy()
    out[rng.rand(*X.shape) < fraction] = np.nan
    out[np.isnan(out).all(1), 0] = X[np.isnan(out).all(1), 0]
    return out


def test_fit_scales_into_its_training_tensor_only_the_rows_training_uses(monkeypatch):
    """The members' subsamples and the validation rows, not all of X (the scaling is
    still learned from every row)."""
    seen = []
    original = VAEOutlierDetector._training_tensor

    def recording(module, X, device):
        seen.append(len(X))
        return original(module, X, device)

    monkeypatch.setattr(VAEOutlierDetector, "_training_tensor", staticmethod(recording))
    X = np.random.RandomState(0).normal(size=(3000, 4))
    det = VAEOutlierDetector(epochs=1, n_estimators=3, random_state=0).fit(X)
    assert len(seen) == 1 and 128 < seen[0] <= 3 * 128 + 300
    # the same fit on rows scaled by the scaling every row gave
    np.testing.assert_allclose(det.module_.center.numpy(), np.median(X, axis=0))
    seen.clear()
    VAEOutlierDetector(epochs=1, n_estimators=3, max_samples=1.0, random_state=0).fit(X)
    assert seen == [3000]


def test_complete_rows_score_as_before_missing_values_were_accepted():
    """Scores of 0.2.0 (before missing values), recorded: a complete row's score did
    not change."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 5))
    X[:, 1] = X[:, 0] ** 2 + 0.1 * rng.normal(size=300)
    recorded = {
        "default": [-36.94331741333008, -6.004398345947266, -5.510041236877441,
                    -5.645707607269287, -1260.1942138671875, -12.301992416381836,
                    -7.4339704513549805, -6.032474517822266],
        "gaussian_elbo": [-37.37641525268555, -5.93247127532959, -5.828997611999512,
                          -6.110634803771973, -345.8780517578125, -13.2359037399292,
                          -8.877408027648926, -6.234708786010742],
    }  # fmt: skip
    params = {"default": {}, "gaussian_elbo": {"decoder_df": None, "score_type": "elbo"}}
    for name, kw in params.items():
        det = VAEOutlierDetector(epochs=10, random_state=0, **kw).fit(X)
        assert det.module_.config["mask_input"] is False
        np.testing.assert_allclose(det.score_samples(X[:8]), recorded[name], rtol=1e-5)
        # and scored beside rows with missing values, the same to the bit
        mixed = np.vstack([X[:8], _with_holes(X[8:40], 0.3)])
        np.testing.assert_array_equal(det.score_samples(mixed)[:8], det.score_samples(X[:8]))


def test_a_whole_batch_with_missing_values_is_split_once_per_fit(monkeypatch):
    """With one batch covering each member's rows (the defaults) the batch and its mask
    are made once, not every step (on a GPU each split waits for the device)."""
    from skvae._network import VAEEnsemble

    calls = []
    original = VAEEnsemble.observed

    def counting(x):
        calls.append(tuple(x.shape))
        return original(x)

    monkeypatch.setattr(VAEEnsemble, "observed", staticmethod(counting))
    X = _with_holes(np.random.RandomState(0).normal(size=(400, 5)), 0.2)
    VAEOutlierDetector(epochs=40, n_estimators=3, random_state=0).fit(X)
    batches = [shape for shape in calls if len(shape) == 3 and shape[0] == 3]
    assert batches == [(3, 128, 5)] * 2  # and once more to choose the kept rows
    calls.clear()
    VAEOutlierDetector(epochs=2, batch_size=32, n_estimators=3, random_state=0).fit(X)
    assert [s for s in calls if len(s) == 3 and s[0] == 3] == [(3, 32, 5)] * 8


@pytest.mark.parametrize("fit_with_holes", [True, False])
def test_every_scoring_method_takes_rows_with_missing_values(fit_with_holes):
    X, _ = make_synthetic(400, 5, random_state=0)
    X_holes = _with_holes(X, 0.25)
    det = VAEOutlierDetector(epochs=10, random_state=0).fit(X_holes if fit_with_holes else X)
    assert det.module_.config["mask_input"] is fit_with_holes
    scores = det.score_samples(X_holes)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(det.decision_function(X_holes), scores - det.offset_)
    assert set(det.predict(X_holes)) <= {-1, 1}
    p = det.pvalues(X_holes)
    assert ((p > 0) & (p <= 1)).all()
    assert np.isfinite(det.predict_proba(X_holes)).all() and np.isfinite(det.score(X_holes))
    contributions, latent = det.feature_contributions(X_holes, return_latent=True)
    assert (contributions[np.isnan(X_holes)] == 0).all()  # a missing value contributes nothing
    np.testing.assert_allclose(contributions.sum(1) + latent, scores, rtol=1e-6, atol=1e-6)
    t = torch.as_tensor(X_holes)
    np.testing.assert_allclose(det.score_samples(t).numpy(), scores, rtol=1e-6)
    assert np.isfinite(det.encode(X_holes)[0]).all() and np.isfinite(det.reconstruct(X_holes)).all()
    if fit_with_holes:
        assert np.isfinite(det.decision_scores_).all() and len(det.calibration_scores_)
        assert set(VAEOutlierDetector(epochs=3, random_state=0).fit_predict(X_holes)) <= {-1, 1}


def test_rows_with_missing_values_keep_the_scale_of_complete_rows():
    """Blanking one feature of inliers moves their mean score by a fraction of the
    spread of scores: the observed terms are weighted n_features / n_observed (leaving
    the missing term out unweighted moves it by the term's own size)."""
    X, _ = make_synthetic(1500, 8, random_state=0)
    det = VAEOutlierDetector(random_state=0).fit(_with_holes(X[:1000], 0.1))
    test = X[1000:]
    complete = det.score_samples(test)
    spread = np.subtract(*np.percentile(complete, [75, 25]))
    for j in range(8):
        holes = test.copy()
        holes[:, j] = np.nan
        shift = np.median(det.score_samples(holes)) - np.median(complete)
        assert abs(shift) < 0.5 * spread, (j, shift, spread)


def test_dataframes_with_missing_values_keep_their_labels():
    pd = pytest.importorskip("pandas")
    X, _ = make_synthetic(300, 3, random_state=0)
    frame = pd.DataFrame(_with_holes(X, 0.2), columns=["a", "b", "c"])
    det = VAEOutlierDetector(epochs=5, random_state=0).fit(frame)
    c = det.feature_contributions(frame)
    assert list(c.columns) == ["a", "b", "c"] and (c.to_numpy()[frame.isna().to_numpy()] == 0).all()


def test_rows_with_every_value_missing_get_a_defined_result_from_every_method():
    """Never a failed batch: such a row scores as the median training row (a normalised
    score near 0, an inlier with a p-value near 0.5), with one warning a call."""
    X, _ = make_synthetic(300, 3, random_state=0)
    X[np.random.RandomState(0).rand(*X.shape) < 0.2] = np.nan
    X[np.isnan(X).all(1), 0] = 0.0
    blank = X[:5].copy()
    blank[[1, 3]] = np.nan
    train = np.vstack([X, blank])
    with pytest.warns(UserWarning, match="2 row.* every value missing.* left out of training"):
        det = VAEOutlierDetector(epochs=20, random_state=0).fit(train)
    assert len(det.decision_scores_) == len(train)
    median = -np.median(det.decision_scores_)
    for method, expected in (
        (det.score_samples, median),
        (det.decision_function, median - det.offset_),
        (det.predict, 1),
    ):
        with pytest.warns(UserWarning, match="2 row.* every value missing"):
            out = method(blank)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out[[1, 3]], expected, rtol=1e-6)
    with pytest.warns(UserWarning, match="every value missing"):
        assert 0.3 < det.pvalues(blank)[1] < 0.7
    with pytest.warns(UserWarning, match="no feature contributes"):
        c, latent = det.feature_contributions(blank, return_latent=True)
    assert (c[[1, 3]] == 0).all() and np.allclose(latent[[1, 3]], median)
    with pytest.warns(UserWarning, match="encoded as the prior"):
        mu, logvar = det.encode(blank)
    assert (mu[[1, 3]] == 0).all() and (logvar[[1, 3]] == 0).all()
    with pytest.warns(UserWarning, match="centre of the input scaling"):
        np.testing.assert_allclose(det.reconstruct(blank)[[1, 3]], [det.center_] * 2)
    with pytest.warns(UserWarning, match="every value missing"):
        tensor = det.score_samples(torch.as_tensor(blank))
    np.testing.assert_allclose(tensor[[1, 3]].numpy(), median, rtol=1e-6)
    # the other rows score as if the blank ones were not there
    with pytest.warns(UserWarning, match="every value missing"):
        beside = det.score_samples(blank)[[0, 2, 4]]
    np.testing.assert_array_equal(beside, det.score_samples(blank[[0, 2, 4]]))
    with pytest.raises(ValueError, match="infinity"):
        det.score_samples(np.where(np.isnan(blank), np.inf, blank))


def test_the_estimator_says_it_takes_missing_values():
    assert VAEOutlierDetector().__sklearn_tags__().input_tags.allow_nan


def test_missing_values_in_a_pipeline_and_a_grid_search():
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skvae import outlier_scorer

    X, y = make_synthetic(400, 4, random_state=0)
    X = _with_holes(X, 0.2)
    pipe = make_pipeline(StandardScaler(), VAEOutlierDetector(epochs=3, random_state=0))
    assert np.isfinite(pipe.fit(X).score_samples(X)).all()
    grid = GridSearchCV(
        VAEOutlierDetector(epochs=3, random_state=0),
        {"latent_dim": [1, 2]},
        scoring=outlier_scorer(),
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        error_score="raise",
    ).fit(X, y)
    assert np.isfinite(grid.best_score_)
