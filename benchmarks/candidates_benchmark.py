"""Candidate changes to the detector, measured against the defaults in one run.

Two candidates that need more than a hyperparameter (those that are one run through
``adbench_benchmark.py --detectors skvae --skvae-params '{...}'``):

- ``mixture``: a robust Gaussian on the detector's own scaled inputs (Ledoit-Wolf
  covariance refitted three times on the 90 % of rows it explains best), mixed with
  the VAE's ELBO as one density, ``log(w p_vae + (1 - w) p_gauss)``, the weight ``w``
  fitted by EM on held-out rows: a tenth of the training rows, drawn by distinct
  value so that no held-out row is a copy of a training row. Also reported: the
  Gaussian alone, and the model with the higher held-out mean log-likelihood
  (``pick``), and the product of the two experts (the mean of their log-densities,
  ``product``). The VAE here trains on the other nine tenths.
- ``distinct``: each distinct row counts once in training (exact copies dropped
  before ``fit``), against the defaults on the rows as they are.

Example::

    python benchmarks/candidates_benchmark.py mixture --benchmark odds --seeds 0 1 \
        --out benchmarks/results/candidates_mixture_odds.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from adbench_benchmark import DEFAULT_DATA_DIR as ADBENCH_DIR  # same folder
from adbench_benchmark import adbench_protocol, adbench_split
from holdout_benchmark import holdout_sets
from odds_benchmark import DEFAULT_DATA_DIR as ODDS_DIR
from odds_benchmark import odds_split, one_thread
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import VAEOutlierDetector


def distinct_holdout(X: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Masks of training and held-out rows; every copy of a row on one side."""
    _, groups = np.unique(X, axis=0, return_inverse=True)
    groups = groups.ravel()
    order = rng.permutation(groups.max() + 1)
    held = np.isin(groups, order[: int(fraction * len(order))])
    return ~held, held


def trimmed_gaussian(Z_fit: np.ndarray, trim: float = 0.1, steps: int = 3):
    """A Gaussian log-density fitted on the rows it explains best (C-steps)."""
    keep = np.arange(len(Z_fit))
    for _ in range(steps):
        density = _gaussian(LedoitWolf().fit(Z_fit[keep]))
        keep = np.argsort(-density(Z_fit))[: int((1 - trim) * len(Z_fit))]
    return _gaussian(LedoitWolf().fit(Z_fit[keep]))


def _gaussian(estimate):
    d = len(estimate.location_)
    cov = estimate.covariance_ + 1e-6 * np.eye(d) * np.trace(estimate.covariance_) / d
    precision, logdet = np.linalg.inv(cov), np.linalg.slogdet(cov)[1]

    def density(Z):
        diff = Z - estimate.location_
        return -0.5 * (
            np.einsum("ij,ij->i", diff @ precision, diff) + logdet + d * np.log(2 * np.pi)
        )

    return density


def em_weight(a: np.ndarray, b: np.ndarray, iterations: int = 50) -> float:
    """The mixture weight of density ``a`` against ``b`` (log-densities of the same rows)."""
    w = 0.5
    for _ in range(iterations):
        la, lb = np.log(w) + a, np.log(1 - w) + b
        w = float(np.clip(np.exp(la - np.logaddexp(la, lb)).mean(), 1e-3, 1 - 1e-3))
    return w


def mixture(X_tr, X_te, seed):
    rng = np.random.RandomState(seed)
    fit_rows, held = distinct_holdout(X_tr, 0.1, rng)
    det = VAEOutlierDetector(random_state=seed).fit(X_tr[fit_rows])

    def scale(X):
        return np.clip((X - det.center_) / det.scale_, -10, 10)

    gauss = trimmed_gaussian(scale(X_tr[fit_rows]))
    vae_test, vae_held = det.score_samples(X_te), det.score_samples(X_tr[held])
    g_test, g_held = gauss(scale(X_te)), gauss(scale(X_tr[held]))
    w = em_weight(vae_held, g_held)
    return {
        "defaults": VAEOutlierDetector(random_state=seed).fit(X_tr).score_samples(X_te),
        "vae_on_nine_tenths": vae_test,
        "gaussian": g_test,
        "mixture": logsumexp([np.log(w) + vae_test, np.log(1 - w) + g_test], axis=0),
        "pick": vae_test if vae_held.mean() >= g_held.mean() else g_test,
        # a product of the two experts: the mean of the log-densities
        "product": 0.5 * (vae_test + g_test),
    }, {"weight": w}


def distinct(X_tr, X_te, seed):
    unique = np.unique(X_tr, axis=0)
    scores = {"defaults": VAEOutlierDetector(random_state=seed).fit(X_tr).score_samples(X_te)}
    if len(unique) == len(X_tr):
        scores["distinct"] = scores["defaults"]
    else:
        scores["distinct"] = VAEOutlierDetector(random_state=seed).fit(unique).score_samples(X_te)
    return scores, {"distinct_rows": len(unique), "rows": len(X_tr)}


def _holdout_adbench_split(_, dataset: str, seed: int):
    """A set of ``holdout_benchmark.py`` under ADBench's protocol."""
    X, y = next((X, y) for name, X, y in holdout_sets(seed) if name == dataset)
    return adbench_protocol(X, y.astype(int), seed)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", choices=["mixture", "distinct"])
    parser.add_argument(
        "--benchmark", choices=["adbench", "odds", "holdout-adbench"], default="adbench"
    )
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    one_thread()
    if args.benchmark == "holdout-adbench":  # holdout_benchmark.py --protocol adbench's sets
        folder, split = None, _holdout_adbench_split
        datasets = args.datasets or [name for name, _, _ in holdout_sets(0)]
        seeds = args.seeds or [0, 1, 2, 3]
    else:
        adbench = args.benchmark == "adbench"
        folder, split = (ADBENCH_DIR, adbench_split) if adbench else (ODDS_DIR, odds_split)
        pattern = "*.npz" if adbench else "*.mat"
        datasets = args.datasets or sorted(p.stem for p in folder.glob(pattern))
        seeds = args.seeds or ([1, 2, 3] if adbench else [0, 1, 2])
    run = {"mixture": mixture, "distinct": distinct}[args.candidate]
    rows = []
    for ds in datasets:
        for seed in seeds:
            X_tr, X_te, y_te = split(folder, ds, seed)
            scores, extra = run(X_tr, X_te, seed)
            row = {"dataset": ds, "seed": seed, **extra}
            for name, s in scores.items():
                row[name] = float(roc_auc_score(y_te, -s))
                row[f"{name}_ap"] = float(average_precision_score(y_te, -s))
            rows.append(row)
            shown = " ".join(f"{n}={row[n]:.3f}" for n in scores)
            print(f"{ds:18s} seed={seed} {shown}", flush=True)
    names = list(scores)
    summary = {
        n: {
            "roc_auc": float(np.mean([r[n] for r in rows])),
            "average_precision": float(np.mean([r[f"{n}_ap"] for r in rows])),
        }
        for n in names
    }
    for n, s in summary.items():
        print(f"{n:20s} mean ROC AUC {s['roc_auc']:.4f}  mean AP {s['average_precision']:.4f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"candidate": args.candidate, "benchmark": args.benchmark, "seeds": seeds}
        args.out.write_text(json.dumps({**record, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
