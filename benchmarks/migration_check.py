"""The Hopper check of the migration guide: the old score against the ELBO opt-in.

Trains ``skvae.compat.VAE`` twice on Hopper-v5 transitions of one behaviour policy
(MuJoCo simulator, needs ``gymnasium[mujoco]``): once with the default score (the old
module's, minus the summed squared reconstruction error) and once with
``score_type="elbo"``. Both go through GORMPO's own sequence (``save_model``,
``load_model``, normalise, ``tanh`` penalty with ``thr``, default and the 5th-percentile
candidate) on held-out transitions of the same policy and on two out-of-distribution
sets: a uniform random policy and the same policy with motors three times stronger.

    python benchmarks/migration_check.py [--epochs 50] [--out benchmarks/results/migration.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from skvae.compat import VAE
from skvae.datasets import collect_transitions, make_features, split_indices

WEIGHTS = np.random.RandomState(1234).normal(scale=0.5, size=(3, 11))


def behaviour(obs, rng):
    """A fixed linear feedback policy with a little exploration noise."""
    return np.tanh(WEIGHTS @ obs + [0.5, -0.5, 0.3]) + 0.1 * rng.normal(size=3)


def gormpo_tanh_penalty(d: dict, X: np.ndarray, thr: float) -> np.ndarray:
    s = (d["model"].score_samples(X, "cpu") - d["mean"]) / d["std"]
    return np.clip(np.tanh(0.1 * (thr - s)), 0, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/migration.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    data = collect_transitions("Hopper-v5", behaviour, 8000, seed=0, max_episode_steps=200)
    train, val, test = split_indices(data, 0.2, 0.2)
    X = make_features(data)
    strong = gym.make("Hopper-v5", max_episode_steps=200)
    strong.unwrapped.model.actuator_gear[:] *= 3.0
    ood = {
        "uniform policy": make_features(collect_transitions("Hopper-v5", "uniform", 2000, 1)),
        "motors x3": make_features(collect_transitions(strong, behaviour, 2000, seed=2)),
    }
    rows = []
    folder = Path(tempfile.mkdtemp())
    for score_type in ("squared_error", "elbo"):
        model = VAE(14, 8, [256, 128], device="cpu", score_type=score_type)
        start = time.perf_counter()
        model.fit(X[train], X[val], epochs=args.epochs, batch_size=256, verbose=False)
        fit_seconds = time.perf_counter() - start
        model.save_model(str(folder / score_type), X[train])
        d = VAE.load_model(str(folder / score_type))
        for thr_name, thr in (("thr", d["thr"]), ("candidate 5", d["threshold_candidates"][5])):
            p_in = gormpo_tanh_penalty(d, X[test], thr)
            for name, X_ood in ood.items():
                p_out = gormpo_tanh_penalty(d, X_ood, thr)
                s_in = d["model"].score_samples(X[test])
                s_out = d["model"].score_samples(X_ood)
                y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
                rows.append(
                    {
                        "score_type": score_type,
                        "threshold": thr_name,
                        "ood_set": name,
                        "roc_auc": float(roc_auc_score(y, -np.r_[s_in, s_out])),
                        "in_penalised": float(np.mean(p_in > 0)),
                        "in_mean_penalty": float(p_in.mean()),
                        "ood_penalised": float(np.mean(p_out > 0)),
                        "ood_mean_penalty": float(p_out.mean()),
                        "fit_seconds": fit_seconds,
                    }
                )
    head = "score | threshold | OOD set | ROC AUC | in: penalised | in: mean | OOD: penalised"
    print(f"| {head} | OOD: mean |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['score_type']} | {r['threshold']} | {r['ood_set']} | {r['roc_auc']:.3f} | "
            f"{r['in_penalised']:.1%} | {r['in_mean_penalty']:.3f} | "
            f"{r['ood_penalised']:.1%} | {r['ood_mean_penalty']:.3f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
