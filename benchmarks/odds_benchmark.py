"""Detection quality and fit time on the ODDS sets, skvae against its peers, in one run.

Protocol (PyOD's benchmark protocol): for each seed a random 60/40 train/test split,
StandardScaler fitted on the train part, every detector fitted unsupervised on the
(contaminated) train part, ROC AUC and average precision of its anomaly scores on the
test part, fit and score wall time.

Example::

    python benchmarks/odds_benchmark.py --data-dir ../shared/data/odds --seeds 0 1 2 \
        --out benchmarks/output/odds

Writes ``results.json`` (every number), ``table.md`` and ``auc.png`` into ``--out``.
``--skvae-params '{"n_estimators": 1}'`` and ``--detectors skvae`` run ablations of
skvae alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
import sklearn
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import skvae
from skvae import VAEOutlierDetector

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "odds"


def load_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an ODDS ``.mat`` file: ``X`` (n x d) and ``y`` (1 = outlier)."""
    mat = scipy.io.loadmat(path)
    return np.asarray(mat["X"], dtype=np.float64), np.asarray(mat["y"]).ravel().astype(int)


def odds_split(data_dir: Path, dataset: str, seed: int):
    """PyOD's protocol: a random 60/40 split, StandardScaler fitted on the train part."""
    X, y = load_mat(data_dir / f"{dataset}.mat")
    X_tr, X_te, _, y_te = train_test_split(X, y, test_size=0.4, random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_te


def make_detectors(names, seed, device, skvae_params):
    """Instantiate the named detectors with their default parameters."""
    out = {}
    for name in names:
        if name == "skvae":
            out[name] = VAEOutlierDetector(random_state=seed, device=device, **skvae_params)
        elif name == "iforest":
            out[name] = IsolationForest(random_state=seed)
        elif name == "pyod_vae":
            from pyod.models.vae import VAE

            out[name] = VAE(random_state=seed, verbose=0, device=device)
        elif name == "pyod_ae":
            from pyod.models.auto_encoder import AutoEncoder

            out[name] = AutoEncoder(random_state=seed, verbose=0, device=device)
        elif name == "ecod":
            from pyod.models.ecod import ECOD

            out[name] = ECOD()
        elif name == "knn":
            from pyod.models.knn import KNN

            out[name] = KNN()
        else:
            raise ValueError(f"unknown detector {name!r}")
    return out


def anomaly_scores(detector, X):
    """Higher = more anomalous, whatever the detector's convention."""
    if isinstance(detector, (VAEOutlierDetector, IsolationForest)):
        return -detector.score_samples(X)  # scikit-learn: higher = more normal
    return detector.decision_function(X)  # PyOD: higher = more abnormal


def warm_up(names, device, skvae_params=None) -> None:
    """Fit every detector once on a little random data, untimed: the one-off costs of a
    process (lazy imports such as the one torch's optimisers make on their first step,
    kernel initialisation) are then paid by no detector's timed fit."""
    X = np.random.RandomState(0).normal(size=(200, 5))
    for det in make_detectors(names, 0, device, skvae_params or {}).values():
        det.fit(X)


def run(data_dir, datasets, seeds, names, device, skvae_params, split=odds_split):
    """Fit and score every detector on every dataset and seed; ``split(data_dir,
    dataset, seed)`` gives the protocol's ``X_train, X_test, y_test``. Detectors are
    warmed up first (:func:`warm_up`)."""
    warm_up(names, device, skvae_params)
    rows = []
    for ds in datasets:
        for seed in seeds:
            X_tr, X_te, y_te = split(data_dir, ds, seed)
            for name, det in make_detectors(names, seed, device, skvae_params).items():
                t0 = time.perf_counter()
                det.fit(X_tr)
                t1 = time.perf_counter()
                s = anomaly_scores(det, X_te)
                t2 = time.perf_counter()
                rows.append(
                    {
                        "dataset": ds,
                        "seed": seed,
                        "detector": name,
                        "roc_auc": float(roc_auc_score(y_te, s)),
                        "average_precision": float(average_precision_score(y_te, s)),
                        "fit_seconds": t1 - t0,
                        "score_seconds": t2 - t1,
                        "n_train": int(len(X_tr)),
                        "n_features": int(X_tr.shape[1]),
                    }
                )
                print(
                    f"{ds:12s} seed={seed} {name:9s} auc={rows[-1]['roc_auc']:.3f} "
                    f"ap={rows[-1]['average_precision']:.3f} fit={t1 - t0:.2f}s",
                    flush=True,
                )
    return rows


def summarise(rows, datasets, names):
    """Per dataset and detector: mean AUC, AP and the fit seconds of one seed."""
    table = {}
    for ds in datasets:
        for name in names:
            sel = [r for r in rows if r["dataset"] == ds and r["detector"] == name]
            table[ds, name] = {
                k: float(np.mean([r[k] for r in sel]))
                for k in ("roc_auc", "average_precision", "fit_seconds", "score_seconds")
            }
    return table


def markdown(table, datasets, names):
    head = "| dataset | " + " | ".join(f"{n} AUC | {n} AP | {n} fit s" for n in names) + " |"
    sep = "|---" * (1 + 3 * len(names)) + "|"
    lines = [head, sep]
    for ds in datasets:
        cells = []
        for n in names:
            t = table[ds, n]
            cells += [
                f"{t['roc_auc']:.3f}",
                f"{t['average_precision']:.3f}",
                f"{t['fit_seconds']:.2f}",
            ]
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        cells += [
            f"**{np.mean([table[ds, n]['roc_auc'] for ds in datasets]):.3f}**",
            f"**{np.mean([table[ds, n]['average_precision'] for ds in datasets]):.3f}**",
            f"**{np.sum([table[ds, n]['fit_seconds'] for ds in datasets]):.2f}** (total)",
        ]
    lines.append("| mean | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table, datasets, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    x = np.arange(len(datasets))
    for i, n in enumerate(names):
        ax.bar(x + i * width, [table[ds, n]["roc_auc"] for ds in datasets], width, label=n)
    ax.set_xticks(
        x + width * (len(names) - 1) / 2, datasets, rotation=30, ha="right", rotation_mode="anchor"
    )
    ax.set_ylabel("ROC AUC (test, mean over seeds)")
    ax.set_ylim(0.0, 1.0)
    ax.legend(ncol=len(names), loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def environment():
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "skvae": skvae.__version__,
    }
    try:
        import pyod

        info["pyod"] = pyod.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--detectors", nargs="*", default=["skvae", "iforest", "pyod_vae", "pyod_ae"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skvae-params", type=json.loads, default={})
    parser.add_argument("--out", type=Path, default=Path("benchmarks/output/odds"))
    args = parser.parse_args(argv)

    datasets = args.datasets or sorted(p.stem for p in args.data_dir.glob("*.mat"))
    rows = run(args.data_dir, datasets, args.seeds, args.detectors, args.device, args.skvae_params)
    report(rows, datasets, args)


def report(rows, datasets, args) -> None:
    """Print the table and write ``results.json``, ``table.md`` and ``auc.png`` into
    ``args.out``."""
    table = summarise(rows, datasets, args.detectors)
    md = markdown(table, datasets, args.detectors)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "argv": sys.argv, "skvae_params": args.skvae_params}
    (args.out / "results.json").write_text(json.dumps({**record, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(md + "\n")
    try:
        plot(table, datasets, args.detectors, args.out / "auc.png")
    except ImportError:
        print("matplotlib not installed: no plot written")


if __name__ == "__main__":
    main()
