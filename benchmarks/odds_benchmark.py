"""Detection quality and fit time on the ODDS sets, skvae against its peers, in one run.

Protocol (PyOD's benchmark protocol): for each seed a random 60/40 train/test split,
StandardScaler fitted on the train part, every detector fitted unsupervised on the
(contaminated) train part, ROC AUC and average precision of its anomaly scores on the
test part, fit and score wall time. Every detector runs on one thread (PyTorch's,
BLAS's and isotree's), so fit times compare like with like.

The peers: scikit-learn's IsolationForest; isotree's extended isolation forest
(``eif``: ``ndim=2, sample_size=256, ntrees=100``, the settings of Bouman et al.'s
comparison); PyOD's MCD (a robust Gaussian), KNN, ECOD and COPOD at their defaults; on
request PyOD's VAE and AutoEncoder. A peer whose package is not installed is left out
with a note (``pip install -e ".[benchmark]"`` installs them all). The summary gives,
per detector, the mean ROC AUC and average precision over the sets (each set's value
the mean over seeds), the average rank (1 is best, ranked per set on ROC AUC),
skvae's wins per peer, and the paired Wilcoxon signed-rank p-value of skvae against
each peer over the sets.

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


# The strongest classical peers first; the deep ones only on request.
PEERS = ["iforest", "eif", "mcd", "knn", "ecod", "copod"]
DEFAULT_DETECTORS = ["skvae", *PEERS]
# The package each detector needs beyond skvae's own.
PACKAGES = {"eif": "isotree", "mcd": "pyod", "knn": "pyod", "ecod": "pyod", "copod": "pyod"}
PACKAGES |= {"pyod_vae": "pyod", "pyod_ae": "pyod"}


def available(names: list[str]) -> list[str]:
    """``names`` without the detectors whose package is not installed (said on stdout)."""
    import importlib.util

    kept = [n for n in names if importlib.util.find_spec(PACKAGES.get(n, "sklearn")) is not None]
    for name in set(names) - set(kept):
        print(f"{name}: {PACKAGES[name]} is not installed; left out", flush=True)
    return kept


def make_detectors(names, seed, device, skvae_params):
    """Instantiate the named detectors with their default parameters."""
    out = {}
    for name in names:
        if name == "skvae":
            out[name] = VAEOutlierDetector(random_state=seed, device=device, **skvae_params)
        elif name == "iforest":
            out[name] = IsolationForest(random_state=seed)
        elif name == "eif":
            import isotree

            out[name] = isotree.IsolationForest(
                ndim=2, sample_size=256, ntrees=100, nthreads=1, random_seed=seed
            )
        elif name == "mcd":
            from pyod.models.mcd import MCD

            out[name] = MCD(random_state=seed)
        elif name == "copod":
            from pyod.models.copod import COPOD

            out[name] = COPOD()
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
    if type(detector).__module__.startswith("isotree"):
        return detector.predict(X)  # isotree: standardised outlier score, higher = more abnormal
    return detector.decision_function(X)  # PyOD: higher = more abnormal


def warm_up(names, device, skvae_params=None) -> None:
    """Fit every detector once on a little random data, untimed: the one-off costs of a
    process (lazy imports such as the one torch's optimisers make on their first step,
    kernel initialisation) are then paid by no detector's timed fit."""
    X = np.random.RandomState(0).normal(size=(200, 5))
    for det in make_detectors(names, 0, device, skvae_params or {}).values():
        det.fit(X)


def one_thread() -> None:
    """Every library on one thread: PyTorch's intra-op pool and BLAS (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def run(data_dir, datasets, seeds, names, device, skvae_params, split=odds_split):
    """Fit and score every detector on every dataset and seed; ``split(data_dir,
    dataset, seed)`` gives the protocol's ``X_train, X_test, y_test``. Detectors are
    warmed up first (:func:`warm_up`), on one thread."""
    one_thread()
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


def statistics(table, datasets, names, reference="skvae") -> dict:
    """Per detector: mean ROC AUC and AP over ``datasets``, the average rank (ranked per
    set on ROC AUC, 1 best, ties shared), and against ``reference``: its wins, losses
    and the paired Wilcoxon signed-rank p-value over the sets, for ROC AUC and AP."""
    from scipy.stats import rankdata, wilcoxon

    auc = np.array([[table[ds, n]["roc_auc"] for n in names] for ds in datasets])
    ap = np.array([[table[ds, n]["average_precision"] for n in names] for ds in datasets])
    ranks = np.array([rankdata(-row) for row in auc]).mean(0)
    out = {}
    for j, name in enumerate(names):
        entry = {"roc_auc": float(auc[:, j].mean()), "average_precision": float(ap[:, j].mean())}
        entry["average_rank"] = float(ranks[j])
        if reference in names and name != reference:
            i = names.index(reference)
            for key, values in (("roc_auc", auc), ("average_precision", ap)):
                diff = values[:, i] - values[:, j]
                entry[f"{key}_wins"] = int((diff > 0).sum())
                entry[f"{key}_losses"] = int((diff < 0).sum())
                entry[f"{key}_wilcoxon_p"] = (
                    float(wilcoxon(values[:, i], values[:, j]).pvalue) if diff.any() else 1.0
                )
        out[name] = entry
    return out


def statistics_markdown(stats: dict, reference="skvae") -> str:
    """The summary table of :func:`statistics`."""
    lines = [
        f"| detector | mean ROC AUC | mean AP | average rank | {reference} wins (AUC) "
        f"| Wilcoxon p (AUC) | Wilcoxon p (AP) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in sorted(stats.items(), key=lambda kv: -kv[1]["roc_auc"]):
        if "roc_auc_wins" in s:
            n = s["roc_auc_wins"] + s["roc_auc_losses"]
            versus = (
                f"{s['roc_auc_wins']}/{n} | {s['roc_auc_wilcoxon_p']:.3g} "
                f"| {s['average_precision_wilcoxon_p']:.3g}"
            )
        else:
            versus = "— | — | —"
        lines.append(
            f"| {name} | {s['roc_auc']:.3f} | {s['average_precision']:.3f} "
            f"| {s['average_rank']:.2f} | {versus} |"
        )
    return "\n".join(lines)


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
    parser.add_argument("--detectors", nargs="*", default=DEFAULT_DETECTORS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skvae-params", type=json.loads, default={})
    parser.add_argument("--out", type=Path, default=Path("benchmarks/output/odds"))
    args = parser.parse_args(argv)

    datasets = args.datasets or sorted(p.stem for p in args.data_dir.glob("*.mat"))
    args.detectors = available(args.detectors)
    rows = run(args.data_dir, datasets, args.seeds, args.detectors, args.device, args.skvae_params)
    report(rows, datasets, args)


def report(rows, datasets, args) -> None:
    """Print the table and write ``results.json``, ``table.md`` and ``auc.png`` into
    ``args.out``."""
    table = summarise(rows, datasets, args.detectors)
    stats = statistics(table, datasets, args.detectors)
    fit = {n: sum(table[ds, n]["fit_seconds"] for ds in datasets) for n in args.detectors}
    for name in stats:
        stats[name]["fit_seconds"] = fit[name]
        if "iforest" in fit:
            stats[name]["fit_vs_iforest"] = fit[name] / fit["iforest"]
    md = markdown(table, datasets, args.detectors) + "\n\n" + statistics_markdown(stats)
    if "iforest" in fit:
        md += "\n\nfit time, all sets (one seed each), against IsolationForest: " + ", ".join(
            f"{n} {fit[n] / fit['iforest']:.2f}x" for n in args.detectors
        )
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "argv": sys.argv, "skvae_params": args.skvae_params}
    record["statistics"] = stats
    (args.out / "results.json").write_text(json.dumps({**record, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(md + "\n")
    try:
        plot(table, datasets, args.detectors, args.out / "auc.png")
    except ImportError:
        print("matplotlib not installed: no plot written")


if __name__ == "__main__":
    main()
