"""Detection quality and fit time on the ADBench sets, skvae against its peers, in one run.

Protocol (ADBench's unsupervised ``DataGenerator``; Han et al., NeurIPS 2022): per seed,
sets under 1,000 rows are resampled with replacement to 1,000 rows and sets over 10,000
rows subsampled to 10,000; a stratified 70/30 train/test split; ``MinMaxScaler`` fitted
on the train part; every detector fitted without labels on the (contaminated) train
part; ROC AUC and average precision of its anomaly scores on the test part. Peers at
their defaults (``odds_benchmark.py`` lists them: IsolationForest, the extended
isolation forest, MCD, KNN, ECOD, COPOD; PyOD's VAE on request), one thread each, with
the mean, average rank and paired Wilcoxon p-values of ``odds_benchmark.statistics``.

Example::

    python benchmarks/adbench_benchmark.py --seeds 1 2 3 --out benchmarks/output/adbench

Writes ``results.json``, ``table.md`` and ``auc.png`` into ``--out`` (the helpers of
``odds_benchmark.py``); ``--detectors skvae --skvae-params '{...}'`` runs ablations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_benchmark import DEFAULT_DETECTORS, available, report, run  # noqa: E402

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench"


def adbench_split(data_dir: Path, dataset: str, seed: int):
    """ADBench's protocol for one set and seed: ``X_train, X_test, y_test``."""
    data = np.load(data_dir / f"{dataset}.npz", allow_pickle=False)
    X, y = np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"]).ravel().astype(int)
    return adbench_protocol(X, y, seed)


def adbench_protocol(X: np.ndarray, y: np.ndarray, seed: int, train_labels: bool = False):
    """ADBench's resampling, split and scaling of rows ``X`` with labels ``y`` (1 marks
    an anomaly) for ``seed``: ``X_train, X_test, y_test`` (and ``y_train`` last with
    ``train_labels``, for benchmarks that treat anomalies differently)."""
    rng = np.random.RandomState(seed)
    if len(X) < 1000:
        idx = rng.choice(len(X), 1000, replace=True)
        X, y = X[idx], y[idx]
    elif len(X) > 10000:
        idx = rng.choice(len(X), 10000, replace=False)
        X, y = X[idx], y[idx]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    scaler = MinMaxScaler().fit(X_tr)
    out = scaler.transform(X_tr), scaler.transform(X_te), y_te
    return (*out, y_tr) if train_labels else out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--detectors", nargs="*", default=DEFAULT_DETECTORS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skvae-params", type=json.loads, default={})
    parser.add_argument("--out", type=Path, default=Path("benchmarks/output/adbench"))
    args = parser.parse_args(argv)

    datasets = args.datasets or sorted(
        (p.stem for p in args.data_dir.glob("*.npz")), key=lambda s: int(s.split("_")[0])
    )
    args.detectors = available(args.detectors)
    rows = run(
        args.data_dir,
        datasets,
        args.seeds,
        args.detectors,
        args.device,
        args.skvae_params,
        split=adbench_split,
    )
    report(rows, datasets, args)


if __name__ == "__main__":
    main()
