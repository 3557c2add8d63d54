"""The Hopper check of the migration guide: how GORMPO's reward penalties move when a
model file of the old ``vae_module`` is replaced by a model retrained through
``skvae.compat``, and what ``match_penalty_scale`` keeps.

In-distribution data: Hopper-v5 transitions of one behaviour policy (MuJoCo simulator,
needs ``gymnasium[mujoco]``), split 60/20/20 in time order. Out-of-distribution sets: a
uniform random policy, the same policy with motors three times stronger, and held-out
transitions whose next observations are perturbed by 0.1, 0.3 and 1.0 standard
deviations (as a learned dynamics model errs).

Models, all ``[next_obs, action]`` -> [256, 128] -> 8, batch 256, lr 1e-3 (GORMPO's sparse
hopper config):

- ``old file``: trained as the old module trained (summed squared error + KL on a random
  latent sample, Adam, early stopping that keeps the last weights), its ``thr``,
  ``mean`` and ``std`` from stochastic scores, written as the old pair
  ``_model.pth`` + ``_meta_data.pkl`` and read by ``VAE.load_model``;
- ``retrained``: ``VAE(14, 8, [256, 128]).fit`` + ``save_model`` + ``load_model``;
- ``retrained, matched``: the same model after
  ``match_penalty_scale(<old file>)``;
- ``retrained, ELBO``: ``score_type="elbo"``, the opt-in.

Each model goes through GORMPO's own sequence (normalise with ``mean``/``std``, compare
with ``thr``) for every penalty type, on a batch of the 20 % held-out transitions mixed
with one out-of-distribution set (the ``'linear'`` type clips at the batch's quartiles).

    python benchmarks/migration_check.py [--n-steps 30000] [--epochs 100] \
        [--out benchmarks/results/migration.json]
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from skvae.compat import VAE
from skvae.datasets import collect_transitions, make_features, split_indices
from skvae.penalty import OFFLINE_RL_KINDS, RewardPenalty

WEIGHTS = np.random.RandomState(1234).normal(scale=0.5, size=(3, 11))
HIDDEN, LATENT = [256, 128], 8


def behaviour(obs, rng):
    """A fixed linear feedback policy with a little exploration noise."""
    return np.tanh(WEIGHTS @ obs + [0.5, -0.5, 0.3]) + 0.1 * rng.normal(size=3)


class OldVAE(nn.Module):
    """The old ``vae_module`` network, under its state-dict names."""

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: list[int]) -> None:
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

    def forward(self, x):
        h = self.encoder.encoder(x)
        mu, logvar = self.encoder.fc_mu(h), self.encoder.fc_logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder.decoder(z), mu, logvar

    def loss(self, x):
        recon, mu, logvar = self(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp())
        return (((recon - x) ** 2).sum() + kl) / len(x)

    def stochastic_scores(self, x):
        """The old ``score_samples``: a fresh latent sample at every call."""
        with torch.no_grad():
            return -((self(x)[0] - x) ** 2).sum(1).numpy()


def write_old_file(stem: Path, X, train, val, epochs: int, patience: int = 15) -> float:
    """Train as the old module trained and write its pair; returns the seconds taken."""
    torch.manual_seed(0)
    old = OldVAE(X.shape[1], LATENT, HIDDEN)
    opt = torch.optim.Adam(old.parameters(), lr=1e-3)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    start, best, waited = time.perf_counter(), float("inf"), 0
    for _ in range(epochs):
        for rows in torch.randperm(len(train)).split(256):
            loss = old.loss(Xt[train][rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_loss = float(old.loss(Xt[val]))
        best, waited = (val_loss, 0) if val_loss < best else (best, waited + 1)
        if waited >= patience:  # the old loop stopped and kept the last weights
            break
    seconds = time.perf_counter() - start
    s_train, s_val = old.stochastic_scores(Xt[train]), old.stochastic_scores(Xt[val])
    torch.save(old.state_dict(), f"{stem}_model.pth")
    meta = {
        "threshold": float(np.quantile(s_val, 0.01)),
        "input_dim": X.shape[1],
        "latent_dim": LATENT,
        "device": "cpu",
        "mean": float(s_train.mean()),
        "std": float(s_train.std()),
        "threshold_candidates": {p: float(np.percentile(s_val, p)) for p in (1, 5, 10, 15, 20)},
    }
    with open(f"{stem}_meta_data.pkl", "wb") as fh:
        pickle.dump(meta, fh)
    return seconds


def gormpo_penalties(d: dict, X: np.ndarray, kind: str) -> np.ndarray:
    """GORMPO's transition_model.py on one batch: normalise, then the penalty type."""
    s = (d["model"].score_samples(X, "cpu") - d["mean"]) / d["std"]
    return RewardPenalty(d["model"], kind=kind, thr=d["thr"]).from_normalized(s)


def ood_sets(X_test: np.ndarray, sd: np.ndarray, n_obs: int, n: int) -> dict[str, np.ndarray]:
    strong = gym.make("Hopper-v5", max_episode_steps=200)
    strong.unwrapped.model.actuator_gear[:] *= 3.0
    sets = {
        "uniform policy": make_features(collect_transitions("Hopper-v5", "uniform", n, 1)),
        "motors x3": make_features(collect_transitions(strong, behaviour, n, seed=2)),
    }
    rng = np.random.RandomState(5)
    for k in (0.1, 0.3, 1.0):
        Y = X_test.copy()
        Y[:, :n_obs] += k * sd[:n_obs] * rng.normal(size=(len(Y), n_obs))
        sets[f"next obs +{k} sd"] = Y
    return sets


def markdown(rows: list[dict]) -> str:
    """The table of the migration guide: per OOD set and model, the ROC AUC, the share of
    held-out and of out-of-distribution rows penalised (the same for every type: a row
    is penalised where its normalised score is below ``thr``) and each type's mean
    penalty on the out-of-distribution rows."""
    kinds = " | ".join(f"OOD mean `{k}`" for k in OFFLINE_RL_KINDS)
    lines = [
        f"| OOD set | model | ROC AUC | held out penalised | OOD penalised | {kinds} |",
        "|---" * (5 + len(OFFLINE_RL_KINDS)) + "|",
    ]
    for r in rows:
        means = " | ".join(f"{r[k]['ood_mean']:.3g}" for k in OFFLINE_RL_KINDS)
        lines.append(
            f"| {r['ood_set']} | {r['model']} | {r['roc_auc']:.3f} | "
            f"{r['tanh']['in_penalised']:.1%} | {r['tanh']['ood_penalised']:.1%} | {means} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-steps", type=int, default=30000, help="in-distribution rows")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/migration.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # the old file's stochastic statistics

    data = collect_transitions("Hopper-v5", behaviour, args.n_steps, seed=0, max_episode_steps=200)
    train, val, test = split_indices(data, 0.2, 0.2)
    X = make_features(data).astype(np.float32)
    n_obs = data["next_observations"].shape[1]
    ood = ood_sets(X[test], X[train].std(0), n_obs, max(len(test), 200))

    folder = Path(tempfile.mkdtemp())
    seconds = {"old file": write_old_file(folder / "old", X, train, val, args.epochs)}
    models = {"old file": VAE.load_model(str(folder / "old"))}
    for name, score_type in (("retrained", "squared_error"), ("retrained, ELBO", "elbo")):
        model = VAE(X.shape[1], LATENT, HIDDEN, device="cpu", score_type=score_type)
        start = time.perf_counter()
        model.fit(X[train], X[val], epochs=args.epochs, batch_size=256, lr=1e-3, verbose=False)
        seconds[name] = time.perf_counter() - start
        model.save_model(str(folder / score_type), X[train])
        models[name] = VAE.load_model(str(folder / score_type))
    matched = VAE.load_model(str(folder / "squared_error"))
    models["retrained, matched"] = matched["model"].match_penalty_scale(str(folder / "old"))
    order = ["old file", "retrained", "retrained, matched", "retrained, ELBO"]

    rows = []
    for set_name, X_ood in ood.items():
        batch = np.r_[X[test], X_ood]
        is_ood = np.r_[np.zeros(len(test), bool), np.ones(len(X_ood), bool)]
        for model_name in order:
            d = models[model_name]
            s = d["model"].score_samples(batch)
            row = {
                "ood_set": set_name,
                "model": model_name,
                "roc_auc": float(roc_auc_score(is_ood, -s)),
                "thr": d["thr"],
                "std": d["std"],
            }
            for kind in OFFLINE_RL_KINDS:
                p = np.asarray(gormpo_penalties(d, batch, kind))
                row[kind] = {
                    "in_penalised": float(np.mean(p[~is_ood] > 0)),
                    "in_mean": float(p[~is_ood].mean()),
                    "ood_penalised": float(np.mean(p[is_ood] > 0)),
                    "ood_mean": float(p[is_ood].mean()),
                    "batch_penalised": float(np.mean(p > 0)),
                }
            rows.append(row)

    print(f"fit seconds: {json.dumps({k: round(v, 1) for k, v in seconds.items()})}")
    print(markdown(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"n_steps": args.n_steps, "epochs": args.epochs, "threads": args.threads}
    out.write_text(json.dumps({**report, "fit_seconds": seconds, "rows": rows}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
