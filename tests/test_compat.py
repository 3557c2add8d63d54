"""skvae.compat: the old vae_module API, and the reward-penalty slot of MOPO-style code."""

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rl_data import write_d4rl_hdf5
from torch import nn

from skvae.compat import VAE, create_synthetic_data, load_rl_data_for_vae
from skvae.datasets import make_features


@pytest.fixture(scope="module")
def synthetic():
    normal, anomalous = create_synthetic_data(n_samples=800, dim=5, anomaly_type="outlier")
    return normal[:500], normal[500:650], normal[650:], anomalous


@pytest.fixture(scope="module")
def trained(synthetic):
    train, val, test, _ = synthetic
    model = VAE(input_dim=5, latent_dim=3, hidden_dims=[64, 32], device="cpu")
    history = model.fit(train, val, test, epochs=40, batch_size=64, verbose=False)
    return model, history


def test_synthetic_data_shapes():
    normal, anomalous = create_synthetic_data(n_samples=200, dim=3, anomaly_type="cluster")
    assert isinstance(normal, torch.Tensor) and normal.shape == (200, 3)
    assert anomalous.shape == (20, 3)


def test_forward_loss_and_encoder_before_and_after_fit(trained):
    fresh = VAE(input_dim=5, latent_dim=3, hidden_dims=[16])
    x = torch.randn(8, 5)
    recon, mu, logvar = fresh(x)
    assert recon.shape == (8, 5) and mu.shape == logvar.shape == (8, 3)
    total, rec, kl = fresh.loss_function(recon, x, mu, logvar, beta=2.0)
    assert torch.isclose(total, rec + 2.0 * kl)
    total.backward()  # differentiable like the old module
    model, _ = trained
    mu, logvar = model.encoder(x)
    assert mu.shape == (8, 3) and mu.dtype == torch.float32
    assert isinstance(model, nn.Module)


def test_fit_history_and_best_weights(trained):
    model, history = trained
    # one entry per check (every epoch of at least 20 steps; here epochs are grouped)
    assert history["epoch"][-1] == model.detector.n_epochs_
    for key in ("train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"):
        assert len(history[key]) == len(history["epoch"])
    assert len(history["test_loss"]) == 1 and np.isfinite(history["test_loss"][0])
    best = int(np.argmin(history["val_loss"]))
    assert model.detector.best_epoch_ == history["epoch"][best]  # best weights restored
    assert model.detector.trim_fraction == 0.0  # the old module's plain ELBO on every row


def test_scores_are_deterministic_and_typed(trained, synthetic):
    model, _ = trained
    _, _, test, _ = synthetic
    s1 = model.score_samples(test.numpy())
    s2 = model.score_samples(test.numpy(), "cpu")  # old call sites pass a device
    assert isinstance(s1, np.ndarray)
    np.testing.assert_array_equal(s1, s2)
    st = model.score_samples(test)
    assert isinstance(st, torch.Tensor)
    np.testing.assert_allclose(st.numpy(), s1, rtol=1e-10)


def test_threshold_predict_and_evaluate(trained, synthetic):
    model, _ = trained
    _, val, test, anomalous = synthetic
    thr = model.set_threshold(val, anomaly_fraction=0.05)
    assert model.threshold == thr
    flags = model.predict_anomaly(test)
    assert isinstance(flags, torch.Tensor) and flags.dtype == torch.bool
    flags_np = model.predict_anomaly(test.numpy())
    assert isinstance(flags_np, np.ndarray)
    pred = model.predict(anomalous.numpy())  # numpy input works (old .cpu() bug)
    assert set(np.unique(pred)) <= {-1, 1} and (pred == -1).mean() > 0.8
    res = model.evaluate_anomaly_detection(test, anomalous)
    for key in (
        "roc_auc",
        "accuracy",
        "normal_score_mean",
        "normal_score_std",
        "anomaly_score_mean",
        "anomaly_score_std",
    ):
        assert key in res
    assert res["roc_auc"] > 0.95
    model.threshold = -50.0  # set by hand, as the old README shows
    assert model.detector.offset_ == -50.0
    model.set_threshold(val, anomaly_fraction=0.05)


def test_sample(trained):
    model, _ = trained
    s = model.sample(100)
    assert isinstance(s, torch.Tensor) and s.shape == (100, 5)


def test_save_and_load_round_trip(trained, synthetic, tmp_path):
    model, _ = trained
    train, _, test, _ = synthetic
    written = model.save_model(str(tmp_path / "m" / "vae"), train)
    assert written == tmp_path / "m" / "vae.skvae"  # the model, with no code in it
    # and the old module's metadata as plain data, for scripts that edit it
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["vae.skvae", "vae_meta_data.pkl"]
    d = VAE.load_model(str(tmp_path / "m" / "vae"))  # hidden_dims read from metadata
    loaded = d["model"]
    np.testing.assert_allclose(
        loaded.score_samples(test.numpy()), model.score_samples(test.numpy())
    )
    s_train = model.score_samples(train.numpy())
    assert d["mean"] == pytest.approx(s_train.mean()) and d["std"] == pytest.approx(s_train.std())
    assert d["thr"] == pytest.approx((model.threshold - d["mean"]) / d["std"])
    assert set(d["threshold_candidates"]) == {1, 5, 10, 15, 20}
    # the threshold and the candidates from the rows set_threshold scored (one rule)
    s_val = model.score_samples(synthetic[1].numpy())
    assert model.threshold == pytest.approx(np.quantile(s_val, 0.05))  # set_threshold above
    assert d["threshold_candidates"][5] == pytest.approx(
        (np.percentile(s_val, 5) - d["mean"]) / d["std"]
    )
    with pytest.raises(FileNotFoundError):
        VAE.load_model(str(tmp_path / "absent"))
    # the file records its widths: the same request loads, a different one is refused
    assert VAE.load_model(str(tmp_path / "m" / "vae"), hidden_dims=[64, 32])["model"]
    with pytest.raises(ValueError, match=r"hidden_dims=\[64, 32\], but hidden_dims=\[128, 32\]"):
        VAE.load_model(str(tmp_path / "m" / "vae"), hidden_dims=[128, 32])
    with pytest.raises(ValueError, match="positive integers"):
        VAE.load_model(str(tmp_path / "m" / "vae"), hidden_dims=["wide"])


def test_fit_refuses_data_of_another_width(synthetic):
    train, val, _, _ = synthetic  # 5 features
    model = VAE(input_dim=4, latent_dim=2, hidden_dims=[8])
    with pytest.raises(ValueError, match="train_data has 5 features, but .* input_dim=4"):
        model.fit(train, val[:, :4], epochs=1, verbose=False)
    model = VAE(input_dim=5, latent_dim=2, hidden_dims=[8])
    with pytest.raises(ValueError, match="val_data has 4 features, but .* input_dim=5"):
        model.fit(train, val[:, :4], epochs=1, verbose=False)


def _old_module(input_dim, latent_dim, hidden_dims):
    """The old module's layout: encoder.encoder (Linear+ReLU)*, fc_mu, fc_logvar, decoder."""

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            layers, prev = [], input_dim
            for h in hidden_dims:
                layers += [nn.Linear(prev, h), nn.ReLU()]
                prev = h
            self.encoder = nn.Sequential(*layers)
            self.fc_mu = nn.Linear(prev, latent_dim)
            self.fc_logvar = nn.Linear(prev, latent_dim)

        def forward(self, x):
            h = self.encoder(x)
            return self.fc_mu(h), self.fc_logvar(h)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            layers, prev = [], latent_dim
            for h in reversed(hidden_dims):
                layers += [nn.Linear(prev, h), nn.ReLU()]
                prev = h
            layers.append(nn.Linear(prev, input_dim))
            self.decoder = nn.Sequential(*layers)

        def forward(self, z):
            return self.decoder(z)

    class Old(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = Encoder(), Decoder()

    return Old()


def test_old_format_files_load(tmp_path):
    torch.manual_seed(0)
    old = _old_module(6, 2, [32, 16])
    torch.save(old.state_dict(), tmp_path / "legacy_model.pth")
    x = torch.randn(50, 6)
    with torch.no_grad():
        mu, _ = old.encoder(x)
        old_scores = -((old.decoder(mu) - x) ** 2).sum(1)  # old score, made deterministic
    meta = {
        "threshold": float(old_scores.quantile(0.05)),
        "input_dim": 6,
        "latent_dim": 2,
        "device": "cpu",
        "mean": float(old_scores.mean()),
        "std": float(old_scores.std()),
    }
    with open(tmp_path / "legacy_meta_data.pkl", "wb") as f:
        pickle.dump(meta, f)
    with pytest.warns(UserWarning, match="stochastic scores"):  # widths read off the weights
        inferred = VAE.load_model(str(tmp_path / "legacy"))
    assert inferred["model"].hidden_dims == [32, 16]
    with pytest.warns(UserWarning, match="stochastic scores"):
        d = VAE.load_model(str(tmp_path / "legacy"), hidden_dims=[32, 16])
    np.testing.assert_allclose(d["model"].score_samples(x.numpy()), old_scores.numpy(), rtol=1e-5)
    assert d["thr"] == pytest.approx((meta["threshold"] - meta["mean"]) / meta["std"])
    with pytest.raises(ValueError, match="do not fit the architecture"):
        VAE.load_model(str(tmp_path / "legacy"), hidden_dims=[32, 8])


def test_a_damaged_old_weights_file_is_refused_not_loaded(tmp_path):
    # the old pair has no checksums: the CRCs of torch's archive are its only record
    torch.manual_seed(0)
    old = _old_module(6, 2, [32, 16])
    torch.save(old.state_dict(), tmp_path / "legacy_model.pth")
    with open(tmp_path / "legacy_meta_data.pkl", "wb") as f:
        meta = {"threshold": -1.0, "input_dim": 6, "latent_dim": 2, "mean": 0.0, "std": 1.0}
        pickle.dump(meta, f)
    raw = bytearray((tmp_path / "legacy_model.pth").read_bytes())
    weight = old.state_dict()["encoder.encoder.0.weight"].numpy().tobytes()
    at = bytes(raw).index(weight[:64])  # a byte inside a tensor's data
    raw[at + 3] ^= 0x40
    (tmp_path / "legacy_model.pth").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"legacy_model.pth: its member .* does not match"):
        VAE.load_model(str(tmp_path / "legacy"), hidden_dims=[32, 16])


def test_reward_penalty_slot_downstream_sequence(hopper, tmp_path):
    """The MOPO-style code path: load_model -> score_samples(x, device) -> normalise ->
    penalty from thr - s. The penalty must be higher on the other behaviour policy."""
    path = tmp_path / "d4rl" / "hopper_generated-v2.hdf5"
    write_d4rl_hdf5(path, hopper["linear"])
    args = SimpleNamespace(task="hopper-generated-v2", data_path=str(path))
    train, val, test, input_dim = load_rl_data_for_vae(
        args, val_split_ratio=0.1, test_split_ratio=0.2
    )
    assert input_dim == 14 and train.dtype == torch.float32
    model = VAE(input_dim=input_dim, latent_dim=6, hidden_dims=[64, 64], device="cpu")
    model.fit(train, val, epochs=40, batch_size=128, verbose=False)
    model.set_threshold(val, anomaly_fraction=0.05)
    model.save_model(str(tmp_path / "saved" / "hopper"), train)

    d = VAE.load_model(str(tmp_path / "saved" / "hopper"))
    loaded, thr, mean, std = d["model"], d["thr"], d["mean"], d["std"]
    device = "cpu"

    def penalty(next_obs, act):
        s = loaded.score_samples(np.concatenate([next_obs, act], 1), device)
        s = (s - mean) / std
        return np.clip(thr - s, 0, None), np.tanh(0.1 * (thr - s)), s

    same = hopper["linear"]
    other = hopper["uniform"]
    n = len(test)
    lin_in, tanh_in, s_in = penalty(same["next_observations"][-n:], same["actions"][-n:])
    lin_out, tanh_out, _ = penalty(other["next_observations"], other["actions"])
    assert lin_out.mean() > lin_in.mean() and tanh_out.mean() > tanh_in.mean()
    # thr and s share units: about 5 % of held-out in-distribution rows fall below thr
    assert 0.0 <= np.mean(s_in < thr) < 0.2
    s_train = (loaded.score_samples(train.numpy()) - mean) / std
    assert abs(s_train.mean()) < 1e-6 and abs(s_train.std() - 1) < 1e-6
    np.testing.assert_allclose(make_features(same)[-n:], test.numpy())


def test_sample_needs_a_positive_count(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="positive integer"):
        model.sample(-1)


def test_one_episode_leaves_empty_splits_with_a_warning_and_fit_names_them(tmp_path):
    n = 60  # no terminals or timeouts: one episode, which splits cannot cut
    rng = np.random.RandomState(0)
    np.savez(
        tmp_path / "one.npz",
        observations=rng.normal(size=(n, 3)),
        actions=rng.normal(size=(n, 1)),
        next_observations=rng.normal(size=(n, 3)),
    )
    args = SimpleNamespace(task=None, data_path=str(tmp_path / "one.npz"))
    with pytest.warns(UserWarning, match=r"val and test split\(s\) are empty: .* 1 episode"):
        train, val, test, dim = load_rl_data_for_vae(args, None, 0.2, 0.2)
    assert (len(train), len(val), len(test)) == (n, 0, 0)
    model = VAE(input_dim=dim, latent_dim=2, hidden_dims=[8])
    with pytest.raises(ValueError, match="val_data has no rows"):
        model.fit(train, val, epochs=1, verbose=False)


def test_plot_training_curves_writes_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from skvae.compat import plot_training_curves

    target = tmp_path / "figs" / "curves.png"
    plot_training_curves({"train_loss": [3.0, 2.0], "val_loss": [3.1, 2.5]}, save_path=target)
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in target.parent.iterdir()] == ["curves.png"]
    target.chmod(0o640)
    plot_training_curves({"train_loss": [3.0, 2.0]}, save_path=target)
    assert target.stat().st_mode & 0o777 == 0o640  # the mode of the file it replaced


def test_a_pickle_save_path_names_the_path_to_use(tmp_path):
    """GORMPO's toy_experiments saved to '.../vae_model.pkl': one line naming the stem."""
    X = np.random.RandomState(0).rand(100, 3).astype(np.float32)
    model = VAE(3, 2, [8, 4])
    model.fit(X, X, epochs=2)
    folder = tmp_path / "toy"
    with pytest.raises(
        ValueError, match=r"save to .*toy/vae_model \(it writes .*vae_model\.skvae"
    ) as info:
        model.save_model(str(folder / "vae_model.pkl"), X)
    assert "\n" not in str(info.value)
    model.save_model(str(folder / "vae_model"), X)  # the path the message names works
    assert VAE.load_model(str(folder / "vae_model"))["model"].input_dim == 3
