"""One model file, every writer and every reader: the round-trip matrix.

Writers: the estimator (`fit` + `skvae.save`), `skvae train`, `skvae.compat`
(`fit` + `save_model`), and a pair in the old `vae_module` layout written here. Readers:
`skvae.load`, `skvae score`, `compat.VAE.load_model` and a joblib round trip of the
loaded detector. Every cell gives the same scores, the same `offset_` and the same `thr`
(`(offset_ - mean) / std`, the one normalised convention).
"""

import pickle
import re

import joblib
import numpy as np
import pytest
import torch
from torch import nn

import skvae
from skvae._thresholds import normalize
from skvae.cli import main
from skvae.compat import VAE
from skvae.datasets import make_features

HIDDEN = [16, 8]


def _transitions(n, seed):
    rng = np.random.RandomState(seed)
    obs = rng.normal(size=(n, 4)).cumsum(0) * 0.1
    act = np.tanh(obs[:, :2] + 0.1 * rng.normal(size=(n, 2)))
    nxt = obs + 0.1 * np.c_[act, act]
    terminals = np.arange(n) % 50 == 49
    return {
        "observations": obs.astype(np.float32),
        "actions": act.astype(np.float32),
        "next_observations": nxt.astype(np.float32),
        "rewards": np.zeros(n, np.float32),
        "terminals": terminals,
        "timeouts": np.zeros(n, bool),
    }


class _OldVAE(nn.Module):
    """The old vae_module's layout: encoder.encoder (Linear+ReLU)*, fc_mu, fc_logvar;
    decoder.decoder (Linear+ReLU)*, Linear."""

    def __init__(self, input_dim, latent_dim, hidden_dims):
        super().__init__()
        enc, prev = [], input_dim
        for h in hidden_dims:
            enc += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        self.encoder = nn.Module()
        self.encoder.encoder = nn.Sequential(*enc)
        self.encoder.fc_mu = nn.Linear(prev, latent_dim)
        self.encoder.fc_logvar = nn.Linear(prev, latent_dim)
        dec, prev = [], latent_dim
        for h in reversed(hidden_dims):
            dec += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        self.decoder = nn.Module()
        self.decoder.decoder = nn.Sequential(*dec, nn.Linear(prev, input_dim))

    def old_scores(self, x):  # -sum of squared errors at the posterior mean
        with torch.no_grad():
            mu = self.encoder.fc_mu(self.encoder.encoder(x))
            return -((self.decoder.decoder(mu) - x) ** 2).sum(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    train, test = _transitions(600, 0), _transitions(200, 1)
    np.savez(folder / "train.npz", **train)
    X, X_test = make_features(train), make_features(test)
    return folder, X, X_test


def _write_estimator(folder, X):
    det = skvae.VAEOutlierDetector(epochs=5, hidden_dims=HIDDEN, random_state=0).fit(X)
    skvae.save(det, folder / "est.skvae")
    return folder / "est", None


def _write_cli(folder, X):
    args = ["train", "--data-path", str(folder.parent / "train.npz"), "--epochs", "3"]
    args += ["--model-save-path", str(folder / "cli"), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    return folder / "cli", None


def _write_compat(folder, X):
    model = VAE(input_dim=X.shape[1], latent_dim=2, hidden_dims=HIDDEN, device="cpu")
    model.fit(X[:500], X[500:], epochs=5, verbose=False)
    model.save_model(str(folder / "compat"), X[:500])
    return folder / "compat", None


def _write_old_pair(folder, X):
    torch.manual_seed(0)
    old = _OldVAE(X.shape[1], 2, HIDDEN)
    torch.save(old.state_dict(), folder / "old_model.pth")
    scores = old.old_scores(torch.as_tensor(X, dtype=torch.float32)).numpy()
    meta = {
        "threshold": float(np.percentile(scores, 5)),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "input_dim": X.shape[1],
        "latent_dim": 2,
        "threshold_candidates": {p: float(np.percentile(scores, p)) for p in (1, 5, 10)},
    }
    with open(folder / "old_meta_data.pkl", "wb") as f:
        pickle.dump(meta, f)
    return folder / "old", HIDDEN


WRITERS = {
    "estimator": _write_estimator,
    "skvae train": _write_cli,
    "compat": _write_compat,
    "old vae_module pair": _write_old_pair,
}


@pytest.fixture(scope="module", params=list(WRITERS))
def written(request, data):
    folder, X, _ = data
    out = folder / request.param.replace(" ", "_")
    out.mkdir()
    stem, hidden = WRITERS[request.param](out, X)
    return request.param, stem, hidden


def _read_load(stem, hidden, X_test, tmp_path):
    det = skvae.load(stem, hidden_dims=hidden)
    thr = normalize(det.offset_, det.score_mean_, det.score_std_)
    return det.score_samples(X_test), det.offset_, thr


def _read_cli(stem, hidden, X_test, tmp_path):
    out = tmp_path / "scores.npy"
    np.save(tmp_path / "X.npy", X_test)
    args = ["score", str(stem), str(tmp_path / "X.npy"), "--output", str(out)]
    if hidden:
        args += ["--hidden-dims", *map(str, hidden)]
    assert main(args) == 0
    return np.load(out), None, None


def _read_compat(stem, hidden, X_test, tmp_path):
    d = VAE.load_model(str(stem), hidden_dims=hidden)
    model = d["model"]
    return model.score_samples(X_test), model.threshold, d["thr"]


def _read_joblib(stem, hidden, X_test, tmp_path):
    joblib.dump(skvae.load(stem, hidden_dims=hidden), tmp_path / "det.joblib")
    det = joblib.load(tmp_path / "det.joblib")
    thr = normalize(det.offset_, det.score_mean_, det.score_std_)
    return det.score_samples(X_test), det.offset_, thr


READERS = {
    "skvae.load": _read_load,
    "skvae score": _read_cli,
    "compat.VAE.load_model": _read_compat,
    "joblib": _read_joblib,
}


@pytest.mark.filterwarnings("ignore:.*stochastic scores:UserWarning")
def test_round_trip_matrix(written, data, tmp_path_factory, capsys):
    name, stem, hidden = written
    folder, X, X_test = data
    results = {}
    for reader, read in READERS.items():
        results[reader] = read(stem, hidden, X_test, tmp_path_factory.mktemp("read"))
        if reader == "skvae score":
            text = capsys.readouterr().out
            match = re.search(r"offset_ (\S+) \(score units\), thr (\S+) ", text)
            results[reader] = (results[reader][0], float(match[1]), float(match[2]))
    scores, offset, thr = results["skvae.load"]
    assert np.isfinite(scores).all() and np.isfinite(offset) and np.isfinite(thr)
    for reader, (s, o, t) in results.items():
        np.testing.assert_array_equal(s, scores, err_msg=f"{name} -> {reader}")
        assert o == offset and t == thr, f"{name} -> {reader}"


def test_writers_keep_their_own_scores_and_thresholds(data, tmp_path):
    """What each writer had in memory is what the file gives back."""
    folder, X, X_test = data
    det = skvae.VAEOutlierDetector(epochs=5, hidden_dims=HIDDEN, random_state=0).fit(X)
    det.save(tmp_path / "est.skvae")
    back = skvae.load(tmp_path / "est.skvae")
    np.testing.assert_array_equal(back.score_samples(X_test), det.score_samples(X_test))
    assert back.offset_ == det.offset_ and back.score_std_ == det.score_std_

    model = VAE(input_dim=X.shape[1], latent_dim=2, hidden_dims=HIDDEN, device="cpu")
    model.fit(X[:500], X[500:], epochs=5, verbose=False)
    model.save_model(str(tmp_path / "compat"), X[:500])
    d = VAE.load_model(str(tmp_path / "compat"))
    np.testing.assert_array_equal(d["model"].score_samples(X_test), model.score_samples(X_test))
    s_train = model.score_samples(X[:500])
    assert d["thr"] == pytest.approx((model.threshold - s_train.mean()) / s_train.std())
    assert sorted(d["threshold_candidates"]) == [1, 5, 10, 15, 20]

    _write_old_pair(tmp_path, X)
    old = _OldVAE(X.shape[1], 2, HIDDEN)
    old.load_state_dict(torch.load(tmp_path / "old_model.pth"))
    expected = old.old_scores(torch.as_tensor(X_test, dtype=torch.float32)).numpy()
    with pytest.warns(UserWarning, match="stochastic scores"):
        d = VAE.load_model(str(tmp_path / "old"), hidden_dims=HIDDEN)
    np.testing.assert_allclose(d["model"].score_samples(X_test), expected, rtol=1e-5)
    with open(tmp_path / "old_meta_data.pkl", "rb") as f:
        meta = pickle.load(f)
    assert d["thr"] == pytest.approx((meta["threshold"] - meta["mean"]) / meta["std"])
    # the old module's raw candidates come back in thr units, with integer keys
    assert d["threshold_candidates"][5] == pytest.approx(
        (meta["threshold_candidates"][5] - meta["mean"]) / meta["std"]
    )
