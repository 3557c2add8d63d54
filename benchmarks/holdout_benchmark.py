"""Detection quality on sets that played no part in choosing skvae's defaults.

The defaults were chosen on the ODDS sets of ``odds_benchmark.py``. This script checks
them on other data, under the same protocol (per seed a stratified 60/40 split,
StandardScaler fitted on the train part, unsupervised fit on the contaminated train
part, ROC AUC and average precision on the test part), against the peers of
``odds_benchmark.py`` that are installed (IsolationForest, the extended isolation
forest, MCD, KNN, ECOD, COPOD), one thread each, with its summary statistics:

- scikit-learn's bundled sets turned into outlier tasks: breast cancer (benign normal,
  malignant downsampled to 10 %), wine (classes 0 and 1 normal, class 2 downsampled to
  10 %), digits (all digits but one normal, the held-out digit downsampled to 5 %; the
  digit changes with the seed);
- skvae's own generator (:func:`skvae.make_synthetic`, 10 features, 10 % anomalies) with
  anomalies off a curved manifold ('local'), a tight displaced cluster ('cluster') and
  one corrupted feature ('noise').

``--protocol adbench`` runs the same sets under ADBench's protocol instead (that of
``adbench_benchmark.py``): sets under 1,000 rows (cancer, wine) are resampled with
replacement to 1,000 rows, so the training part holds exact copies of the test rows,
anomalies included, as on ADBench's small sets; a stratified 70/30 split; MinMaxScaler.

Example::

    python benchmarks/holdout_benchmark.py --seeds 0 1 2 3 --out benchmarks/output/holdout
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from adbench_benchmark import adbench_protocol  # same folder
from odds_benchmark import (
    DEFAULT_DETECTORS,
    anomaly_scores,
    available,
    make_detectors,
    one_thread,
    statistics,
    statistics_markdown,
    summarise,
    warm_up,
)
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skvae import make_synthetic


def _downsampled(X, normal, anomalous, fraction, seed):
    rng = np.random.RandomState(seed)
    inliers = np.flatnonzero(normal)
    n_out = max(5, int(fraction * len(inliers)))
    outliers = rng.choice(np.flatnonzero(anomalous), n_out, replace=False)
    rows = np.r_[inliers, outliers]
    return X[rows], np.r_[np.zeros(len(inliers)), np.ones(n_out)]


def holdout_sets(seed: int):
    """Yield ``(name, X, y)`` for one seed (``y=1`` marks an anomaly)."""
    data = load_breast_cancer()
    yield "cancer", *_downsampled(data.data, data.target == 1, data.target == 0, 0.1, seed)
    data = load_wine()
    yield "wine", *_downsampled(data.data, data.target != 2, data.target == 2, 0.1, seed)
    data = load_digits()
    digit = seed % 10
    yield "digits", *_downsampled(data.data, data.target != digit, data.target == digit, 0.05, seed)
    for kind in ("local", "cluster", "noise"):
        X, y = make_synthetic(1000, 10, anomaly_type=kind, anomaly_fraction=0.1, random_state=seed)
        yield f"synthetic-{kind}", X, y


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    parser.add_argument(
        "--detectors", nargs="*", default=None, help="default: all of them that are installed"
    )
    parser.add_argument("--protocol", choices=["holdout", "adbench"], default="holdout")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/output/holdout")
    args = parser.parse_args(argv)

    names = available(args.detectors or DEFAULT_DETECTORS)
    one_thread()
    warm_up(names, args.device)
    rows = []
    for seed in args.seeds:
        for dataset, X, y in holdout_sets(seed):
            if args.protocol == "adbench":
                X_train, X_test, y_test = adbench_protocol(X, y.astype(int), seed)
            else:
                X_train, X_test, _, y_test = train_test_split(
                    X, y, test_size=0.4, random_state=seed, stratify=y
                )
                scaler = StandardScaler().fit(X_train)
                X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
            for name in names:
                # built just before its fit: PyOD seeds torch's global RNG when built
                model = make_detectors([name], seed, args.device, {})[name]
                start = time.perf_counter()
                model.fit(X_train)
                fitted = time.perf_counter()
                scores = anomaly_scores(model, X_test)
                row = dict(
                    dataset=dataset,
                    seed=seed,
                    detector=name,
                    roc_auc=float(roc_auc_score(y_test, scores)),
                    average_precision=float(average_precision_score(y_test, scores)),
                    fit_seconds=fitted - start,
                    score_seconds=time.perf_counter() - fitted,
                )
                rows.append(row)
                print(f"{dataset:18s} seed={seed} {name:9s} auc={row['roc_auc']:.3f}", flush=True)

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    stats = summarise(rows, datasets, names)
    header = "| dataset | " + " | ".join(f"{n} AUC | {n} AP" for n in names) + " |"
    lines = [header, "|---" * (1 + 2 * len(names)) + "|"]
    for ds in datasets:
        cells = [
            f"{stats[ds, n]['roc_auc']:.3f} | {stats[ds, n]['average_precision']:.3f}"
            for n in names
        ]
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    cells = [
        f"**{np.mean([stats[ds, n]['roc_auc'] for ds in datasets]):.3f}** | "
        f"**{np.mean([stats[ds, n]['average_precision'] for ds in datasets]):.3f}**"
        for n in names
    ]
    lines.append("| mean | " + " | ".join(cells) + " |")
    fit = {n: sum(r["fit_seconds"] for r in rows if r["detector"] == n) for n in names}
    base = fit.get("iforest")
    cells = [
        f"{fit[n]:.2f} s | " + (f"{fit[n] / base:.2f}x IsolationForest's" if base else "")
        for n in names
    ]
    lines.append("| fit time, all sets and seeds | " + " | ".join(cells) + " |")
    summary = statistics(stats, datasets, names)
    table = "\n".join(lines) + "\n\n" + statistics_markdown(summary)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"protocol": args.protocol, "seeds": args.seeds, "statistics": summary, "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
