"""The offline-RL code base skvae replaces (GORMPO) switches with one import line.

Its three call sequences run verbatim, with only ``vae_module.vae`` swapped for
``skvae.compat`` and ``python vae_module/vae.py`` for ``skvae train``, on Hopper-v5
transitions of two behaviour policies: training from a config of its shape (a pickled
dataset as ``data_path`` beside a D4RL task name), loading in the RL trainer with and
without ``threshold_percentile``, and the reward penalty of every rollout step.
"""

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from gormpo_reference import gormpo_penalty
from torch import nn

import skvae
from skvae.cli import main
from skvae.datasets import make_features, split_indices

# Exactly the keys of GORMPO's configs/vae/*.yaml.
GORMPO_CONFIG = {
    "task": "hopper-medium-expert-v2",
    "use_rl_data": True,
    "data_path": None,  # set per test: a pickled dict of D4RL arrays
    "obs_dim": 11,
    "action_dim": 3,
    "input_dim": 14,
    "latent_dim": 8,
    "hidden_dims": [64, 64],
    "epochs": 25,
    "batch_size": 256,
    "lr": 0.001,
    "beta": 1.0,
    "patience": 15,
    "val_ratio": 0.2,
    "test_ratio": 0.2,
    "device": "cpu",
    "seed": 0,
    "verbose": False,
    "model_save_path": None,  # set per test
    "fig_save_path": None,  # set per test
    "anomaly_fraction": 0.05,
}


def load_classifier(classifier_model_name, threshold_percentile, refresh_with=None):
    """GORMPO's train.py, verbatim but for the import line (and, for files of the old
    module only, the documented one-call refresh of their stochastic statistics)."""
    from skvae.compat import VAE

    util = SimpleNamespace(device="cpu")
    args = SimpleNamespace(
        classifier_model_name=classifier_model_name, threshold_percentile=threshold_percentile
    )
    classifier = VAE(device=util.device).to(util.device)  # no other arguments
    classifier_dict = classifier.load_model(args.classifier_model_name)
    if refresh_with is not None:
        classifier_dict = classifier_dict["model"].refresh_thresholds(refresh_with)
    if args.threshold_percentile is not None:  # an int: 1, 5, 10, 15 or 20
        candidates = classifier_dict.get("threshold_candidates", {})
        if args.threshold_percentile in candidates:
            classifier_dict["thr"] = candidates[args.threshold_percentile]
    return classifier_dict


def rollout_penalty(classifier_dict, next_obs, action, penalty_type="tanh"):
    """GORMPO's transition_model.py, verbatim (its penalty lines in gormpo_reference)."""
    device = "cpu"
    model, thr = classifier_dict["model"], classifier_dict["thr"]
    mean, std = classifier_dict.get("mean"), classifier_dict.get("std")
    log_probs = model.score_samples(np.concatenate([next_obs, action], axis=1), device)
    if isinstance(log_probs, torch.Tensor):
        log_probs = log_probs.detach().cpu().numpy()
    log_probs = (log_probs - mean) / std
    penalty = gormpo_penalty(penalty_type, log_probs, thr)
    return penalty


@pytest.fixture(scope="module")
def rl(hopper, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gormpo")
    data = hopper["linear"]
    with open(folder / "hopper_sparse.pkl", "wb") as f:  # a dict of D4RL arrays
        pickle.dump({k: np.asarray(v) for k, v in data.items()}, f)
    _, val, test = split_indices(data, 0.2, 0.2)
    held_out = (data["next_observations"][test], data["actions"][test])
    other = hopper["uniform"]
    return folder, held_out, (other["next_observations"], other["actions"]), val


def _train_with_the_old_command_line(folder):
    config = dict(GORMPO_CONFIG)
    config.update(
        data_path=str(folder / "hopper_sparse.pkl"),
        model_save_path=str(folder / "saved_models" / "vae" / "hopper_sparse"),
        fig_save_path=str(folder / "figures"),
    )
    cfg = folder / "hopper_sparse.yaml"
    cfg.write_text(yaml.safe_dump(config))
    stem = folder / "saved_models" / "vae" / "hopper_sparse"
    # `python vae_module/vae.py ARGS` -> `skvae train ARGS`, GORMPO's spellings
    args = ["--config", str(cfg), "--model_save_path", str(stem), "--device", "cpu"]
    args += ["--data_path", str(folder / "hopper_sparse.pkl"), "--epochs", "25", "--seed", "0"]
    args += ["--task", "hopper-medium-expert-v2", "--obs_dim", "11", "--action_dim", "3"]
    args += ["--fig_save_path", str(folder / "figures")]
    assert main(["train", *args]) == 0
    assert main(["train", "--config", str(cfg), "--compute_thresholds_only"]) == 0
    return stem


def _old_format_pair(folder, hopper):
    """A model in the old vae_module's files, trained as it trained (MSE + KL, random z)
    with its statistics from stochastic scores, as its files hold them."""
    torch.manual_seed(0)
    data = hopper["linear"]
    train, val, _ = split_indices(data, 0.2, 0.2)
    X = torch.as_tensor(make_features(data))

    def mlp(sizes, last=True):
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*(layers if not last else layers[:-1]))

    old = nn.Module()
    old.encoder = nn.Module()
    old.encoder.encoder = mlp([14, 64, 64], last=False)
    old.encoder.fc_mu, old.encoder.fc_logvar = nn.Linear(64, 8), nn.Linear(64, 8)
    old.decoder = nn.Module()
    old.decoder.decoder = mlp([8, 64, 64, 14])

    def forward(x):
        h = old.encoder.encoder(x)
        mu, logvar = old.encoder.fc_mu(h), old.encoder.fc_logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return old.decoder.decoder(z), mu, logvar

    opt = torch.optim.Adam(old.parameters(), lr=1e-3)
    for _ in range(25):
        for rows in torch.randperm(len(train)).split(256):
            x = X[train][rows]
            recon, mu, logvar = forward(x)
            kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
            loss = ((recon - x) ** 2).sum() + kl
            opt.zero_grad()
            (loss / len(x)).backward()
            opt.step()
    with torch.no_grad():  # the old score_samples: a fresh random z at every call
        s_train = -((forward(X[train])[0] - X[train]) ** 2).sum(1).numpy()
        s_val = -((forward(X[val])[0] - X[val]) ** 2).sum(1).numpy()
    torch.save(old.state_dict(), folder / "old_model.pth")
    meta = {
        "threshold": float(np.quantile(s_val, 0.01)),
        "input_dim": 14,
        "latent_dim": 8,
        "mean": float(s_train.mean()),
        "std": float(s_train.std()),
        "threshold_candidates": {p: float(np.percentile(s_val, p)) for p in (1, 5, 10, 15, 20)},
    }
    with open(folder / "old_meta_data.pkl", "wb") as f:
        pickle.dump(meta, f)
    return folder / "old"


def _native_detector(folder, hopper):
    data = hopper["linear"]
    train, _, _ = split_indices(data, 0.2, 0.2)
    X = make_features(data)
    det = skvae.VAEOutlierDetector(
        max_samples=1.0, trim_fraction=0.0, epochs=25, contamination=0.05, random_state=0
    ).fit(X[train])
    skvae.save(det, folder / "native.skvae")
    return folder / "native"


@pytest.fixture(scope="module", params=["skvae train", "old vae_module pair", "skvae.save"])
def saved(request, rl, hopper):
    folder = rl[0] / request.param.replace(" ", "_").replace(".", "_")
    folder.mkdir()
    if request.param == "skvae train":
        (folder / "hopper_sparse.pkl").write_bytes((rl[0] / "hopper_sparse.pkl").read_bytes())
        return request.param, _train_with_the_old_command_line(folder)
    if request.param == "old vae_module pair":
        return request.param, _old_format_pair(folder, hopper)
    return request.param, _native_detector(folder, hopper)


@pytest.mark.parametrize("threshold_percentile", [None, 5])
def test_load_and_penalise_verbatim(saved, rl, hopper, threshold_percentile):
    kind, stem = saved
    _, (next_obs, action), (ood_next_obs, ood_action), val = rl
    if kind.startswith("old"):  # its thr/mean/std came from stochastic scores
        refresh = make_features(hopper["linear"])[val]
        with pytest.warns(UserWarning, match="stochastic scores"):
            classifier_dict = load_classifier(str(stem), threshold_percentile, refresh)
    else:
        classifier_dict = load_classifier(str(stem), threshold_percentile)
    assert hasattr(classifier_dict["model"], "encoder")
    assert hasattr(classifier_dict["model"], "decoder")
    first = rollout_penalty(classifier_dict, next_obs, action)
    again = rollout_penalty(classifier_dict, next_obs, action)
    np.testing.assert_array_equal(first, again)  # deterministic scores
    ood = rollout_penalty(classifier_dict, ood_next_obs, ood_action)
    share_in, share_out = np.mean(first > 0), np.mean(ood > 0)
    print(f"{kind} p={threshold_percentile}: penalised in {share_in:.3f} out {share_out:.3f}")
    # held-out in-distribution rows: penalised at about the chosen percentile (5 %, or
    # the model's own threshold: 5 % of training rows, 1 % of validation rows for old files)
    if threshold_percentile == 5:
        assert 0.01 <= share_in <= 0.12, (kind, share_in)
    else:
        assert share_in <= 0.12, (kind, share_in)
    # out-of-distribution rows: clearly more, and a larger mean penalty
    assert share_out > max(share_in + 0.2, 3 * share_in), (kind, share_in, share_out)
    assert ood.mean() > 5 * first.mean() + 1e-3, kind


def test_the_training_command_writes_what_the_trainer_reads(rl, hopper):
    folder = rl[0] / "cmd"
    folder.mkdir()
    (folder / "hopper_sparse.pkl").write_bytes((rl[0] / "hopper_sparse.pkl").read_bytes())
    stem = _train_with_the_old_command_line(folder)
    det, info = skvae.load(stem, return_info=True)
    assert det.score_type == "squared_error" and det.scaling is None  # the old meaning
    assert info["task"] == "hopper-medium-expert-v2"  # the .pkl is the data
    assert sorted(info["threshold_candidates"]) == [1, 5, 10, 15, 20]
    assert info["threshold_candidates_on"] == "validation"
    figures = sorted(p.name for p in (folder / "figures").iterdir())
    assert figures == [
        "hopper_sparse_score_distribution.png",
        "hopper_sparse_training_curves.png",
    ]
    d = load_classifier(str(stem), 5)
    assert d["thr"] == info["threshold_candidates"][5]
    # candidates and thr share units: about 5 % of validation rows fall below thr 5
    data = hopper["linear"]
    _, val, _ = split_indices(data, 0.2, 0.2)
    s = (d["model"].score_samples(make_features(data)[val]) - d["mean"]) / d["std"]
    assert np.mean(s < d["thr"]) == pytest.approx(0.05, abs=0.01)


def test_old_names_and_signatures_exist():
    from skvae.compat import (  # noqa: F401
        VAE,
        create_synthetic_data,
        load_rl_data_for_vae,
        plot_training_curves,
    )

    normal, anomalous = create_synthetic_data(200, 4, "outlier", magn=3)
    near, _ = create_synthetic_data(200, 4, "outlier", magn=1)
    assert normal.shape == (200, 4) and anomalous.shape == (20, 4)
    model = VAE()  # the old defaults: input_dim=2, latent_dim=16, hidden_dims=[256, 256]
    assert (model.input_dim, model.latent_dim, model.hidden_dims) == (2, 16, [256, 256])
    with pytest.raises(ValueError, match="input_dim"):
        VAE(0, 2, [8])
    z = torch.randn(5, 16)
    assert model.decoder(z).shape == (5, 2)


def test_a_configs_cuda_falls_back_to_the_cpu_with_one_warning(rl, capsys, monkeypatch):
    # every GORMPO config says device: cuda; its command line fell back to the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = rl[0] / "cuda_config"
    folder.mkdir()
    config = dict(GORMPO_CONFIG, device="cuda", epochs=2, hidden_dims=[16])
    config.update(data_path=str(rl[0] / "hopper_sparse.pkl"), model_save_path=str(folder / "m"))
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(folder / "c.yaml"), "--quiet"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "'cuda'" in err[0] and "CPU" in err[0]
    assert skvae.load(folder / "m").device_.type == "cpu"
    # named on the command line, a missing GPU stays an error
    assert main(["train", "--config", str(folder / "c.yaml"), "--device", "cuda"]) == 2


def _gormpo_compute_thresholds_only(save_path, val_data):
    """The --compute_thresholds_only branch of GORMPO's density-model scripts, verbatim
    but for the import line: it edits the metadata pickle beside the model."""
    from skvae.compat import VAE

    model_dict = VAE.load_model(save_path, device="cpu")
    vae_model = model_dict["model"]
    with torch.no_grad():
        val_scores = vae_model.score_samples(val_data.to("cpu"))
    percentiles = [1, 5, 10, 15, 20]
    threshold_candidates = {p: float(np.percentile(val_scores, p)) for p in percentiles}
    print(f"Threshold candidates: {threshold_candidates}")
    meta_path = f"{save_path}_meta_data.pkl"
    with open(meta_path, "rb") as f:
        metadata = pickle.load(f)
    metadata["threshold_candidates"] = threshold_candidates
    with open(meta_path, "wb") as f:
        pickle.dump(metadata, f)
    print(f"Saved threshold_candidates to {meta_path}")
    return threshold_candidates


def test_gormpos_threshold_sweep_reads_what_compat_writes(hopper, tmp_path, capsys):
    from skvae.compat import VAE

    data = hopper["linear"]
    train, val, _ = split_indices(data, 0.2, 0.2)
    X = torch.as_tensor(make_features(data), dtype=torch.float32)
    model = VAE(input_dim=14, latent_dim=8, hidden_dims=[32, 32], device="cpu")
    model.fit(X[train], X[val], epochs=3, batch_size=256, verbose=False)
    save_path = str(tmp_path / "saved_models" / "vae_0")
    model.save_model(save_path, X[train])
    # every file the messages name exists
    named = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert len(named) == 2 and all(Path(name).is_file() for name in named)
    # the sweep edits the metadata pickle; the trainer then reads its candidates
    raw = _gormpo_compute_thresholds_only(save_path, X[val])
    d = load_classifier(save_path, 5)
    assert d["thr"] == pytest.approx((raw[5] - d["mean"]) / d["std"])
    assert skvae.load(save_path, return_info=True)[1]["threshold_candidates"][5] == d["thr"]
    # a model file written after the edit is not overridden by the older metadata
    model.save_model(save_path, X[train])
    assert load_classifier(save_path, 5)["thr"] == pytest.approx(model.threshold_candidates[5])


def test_compat_and_the_command_line_threshold_a_network_alike(rl, hopper):
    # one rule: threshold and candidates from the validation rows, mean and std from
    # the training rows, whichever entry point set them for the same network
    from skvae.compat import VAE

    folder = rl[0] / "one_rule"
    folder.mkdir()
    (folder / "hopper_sparse.pkl").write_bytes((rl[0] / "hopper_sparse.pkl").read_bytes())
    stem = _train_with_the_old_command_line(folder)
    cli = VAE.load_model(str(stem))
    data = hopper["linear"]
    train, val, _ = split_indices(data, 0.2, 0.2)
    X = make_features(data)
    model = cli["model"]
    model.set_threshold(X[val], anomaly_fraction=GORMPO_CONFIG["anomaly_fraction"])
    model.save_model(str(folder / "through_compat"), X[train])
    compat = VAE.load_model(str(folder / "through_compat"))
    for key in ("thr", "mean", "std"):
        assert compat[key] == pytest.approx(cli[key], rel=1e-9), key
    assert compat["threshold_candidates"] == pytest.approx(cli["threshold_candidates"])


def test_a_retrained_model_keeps_the_old_penalty_scale_in_one_line(rl, hopper):
    from skvae.compat import VAE

    folder = rl[0] / "scale"
    folder.mkdir()
    old_stem = _old_format_pair(folder, hopper)
    with pytest.warns(UserWarning, match="stochastic"):
        old = load_classifier(str(old_stem), None)
    data = hopper["linear"]
    train, val, test = split_indices(data, 0.2, 0.2)
    X = make_features(data)
    model = VAE(input_dim=14, latent_dim=8, hidden_dims=[64, 64], device="cpu")
    model.fit(X[train], X[val], epochs=25, batch_size=256, verbose=False)
    model.save_model(str(folder / "retrained"), X[train])
    new = load_classifier(str(folder / "retrained"), None)
    matched = new["model"].match_penalty_scale(str(old_stem))  # the one line
    for key in ("thr", "mean", "std"):
        assert matched[key] == pytest.approx(old[key]), key
    assert matched["threshold_candidates"] == pytest.approx(old["threshold_candidates"])
    assert new["model"].match_penalty_scale(old)["std"] == pytest.approx(old["std"])
    # the 'linear' penalty of a mixed batch: the retrained model's is several times the
    # old one's; matched, it is within a factor of two of it
    _, (next_obs, action), (ood_next_obs, ood_action), _ = rl
    mixed = (np.r_[next_obs, ood_next_obs], np.r_[action, ood_action])
    p_old, p_new, p_matched = (
        rollout_penalty(d, *mixed, penalty_type="linear").mean() for d in (old, new, matched)
    )
    assert p_new > 2 * p_old and 0.5 < p_matched / p_old < 2, (p_old, p_new, p_matched)
    # saved after the match, the file keeps the matched statistics
    new["model"].save_model(str(folder / "matched"), X[train])
    assert VAE.load_model(str(folder / "matched"))["std"] == pytest.approx(old["std"])
    # another score type has other units: refused
    elbo = VAE(input_dim=14, latent_dim=8, hidden_dims=[16], score_type="elbo")
    elbo.fit(X[train], X[val], epochs=1, verbose=False)
    with pytest.raises(ValueError, match="units differ"):
        elbo.match_penalty_scale(str(old_stem))
