"""Ranking quality with missing values: skvae on the holes directly against imputer
pipelines, on the ADBench and ODDS sets of ``../shared/data`` under ADBench's protocol.

Per set and seed, ADBench's protocol (``adbench_benchmark.adbench_protocol``: resampling,
a stratified 70/30 split, MinMaxScaler fitted on the train part); then cells of both
parts are blanked (NaN):

- ``mcar-10``, ``mcar-20``, ``mcar-40``: each cell with probability 10, 20 or 40 %;
- ``mnar-20``: each cell of an inlier with probability 20 %, of an anomaly 40 %
  (anomalies are more often missing);
- ``complete``: none (skvae's own reference).

A row left with no observed value gets one cell back, chosen at random (every method
needs one). Methods, fitted without labels on the train part and scored on the test
part (ROC AUC, average precision): ``skvae`` on the NaN data directly; ``skvae``,
``IsolationForest`` and PyOD's ``KNN`` each behind ``SimpleImputer(strategy='median')``
and behind ``IterativeImputer`` (``random_state`` the seed, ``n_nearest_features=20`` so
that the 1,555-feature set finishes; other settings its defaults). Each imputer is
fitted on the train part once per set, seed and level and its rows go to the three
detectors (what three pipelines would compute); a method's seconds include it.

Example::

    python benchmarks/missing_benchmark.py --seeds 1 --out benchmarks/output/missing

Writes ``results.json`` (every row), ``table.md`` (mean ROC AUC and AP per level and
method) and ``auc.png`` (mean ROC AUC against the missing fraction). ``--ablation``
runs skvae with a part of its handling of missing values taken out: ``no-rescale``
(observed terms not weighted by n_features / n_observed) or ``no-mask`` (the encoder
is not given the mask of observed values, only 0 in place of a missing one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adbench_benchmark import adbench_protocol  # noqa: E402
from odds_benchmark import load_mat  # noqa: E402

from skvae import VAEOutlierDetector  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LEVELS = ["complete", "mcar-10", "mcar-20", "mcar-40", "mnar-20"]
METHODS = [
    "skvae",
    "skvae + median",
    "skvae + iterative",
    "IsolationForest + median",
    "IsolationForest + iterative",
    "KNN + median",
    "KNN + iterative",
]


def datasets(data_dir: Path) -> dict[str, Path]:
    """Every ADBench ``.npz`` and ODDS ``.mat`` set under ``data_dir``, each once: an ODDS
    set that holds the same rows and labels as an ADBench one (five do) is left out."""
    found = {f"adbench/{p.stem}": p for p in sorted((data_dir / "adbench").glob("*.npz"))}
    found.update({f"odds/{p.stem}": p for p in sorted((data_dir / "odds").glob("*.mat"))})
    seen, unique = set(), {}
    for name, path in found.items():
        X, y = load(path)
        key = hashlib.sha256(np.ascontiguousarray(X).tobytes() + y.tobytes()).hexdigest()
        if key not in seen:
            seen.add(key)
            unique[name] = path
    return unique


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".mat":
        return load_mat(path)
    data = np.load(path, allow_pickle=False)
    return np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"]).ravel().astype(int)


def blank(X: np.ndarray, y: np.ndarray | None, level: str, rng) -> np.ndarray:
    """``X`` with cells set to NaN for ``level`` (``y`` marks anomalies, for MNAR)."""
    if level == "complete":
        return X
    kind, percent = level.split("-")
    rate = np.full((len(X), 1), int(percent) / 100)
    if kind == "mnar":
        rate[np.asarray(y) == 1] *= 2
    out = X.copy()
    out[rng.rand(*X.shape) < rate] = np.nan
    empty = np.flatnonzero(np.isnan(out).all(1))
    cols = rng.randint(X.shape[1], size=len(empty))
    out[empty, cols] = X[empty, cols]  # one observed value back
    return out


def make(method: str, seed: int, n_features: int):
    """``(imputer or None, detector)`` of ``method``."""
    name, _, imputer = method.partition(" + ")
    if name == "skvae":
        det = VAEOutlierDetector(random_state=seed)
    elif name == "IsolationForest":
        det = IsolationForest(random_state=seed)
    else:
        from pyod.models.knn import KNN

        det = KNN()
    if not imputer:
        return None, det
    if imputer == "median":
        return SimpleImputer(strategy="median"), det
    return IterativeImputer(random_state=seed, n_nearest_features=min(20, n_features)), det


def anomaly_scores(model, X: np.ndarray) -> np.ndarray:
    """Higher = more anomalous: minus scikit-learn's ``score_samples``, PyOD's
    ``decision_function``."""
    if isinstance(model, (VAEOutlierDetector, IsolationForest)):
        return -model.score_samples(X)
    return model.decision_function(X)


def ablate(name: str) -> None:
    """Take out one part of skvae's handling of missing values (see the module doc)."""
    if name == "no-rescale":
        from skvae._network import VAEEnsemble

        VAEEnsemble.observed_weights = staticmethod(lambda mask: mask)
    elif name == "no-mask":
        from skvae._network import VAEEnsemble

        init = VAEEnsemble.__init__

        def without_mask(self, *args, **kwargs):
            init(self, *args, **{**kwargs, "mask_input": False})

        VAEEnsemble.__init__ = without_mask
    elif name != "none":
        raise ValueError(f"unknown ablation {name!r}")


def run(paths: dict[str, Path], seeds, levels, methods, log=print, done=None) -> list[dict]:
    """Every set, seed, level and method; ``done(rows)`` after each set."""
    rows = []
    for name, path in paths.items():
        X_all, y_all = load(path)
        for seed in seeds:
            X_tr, X_te, y_te, y_tr = adbench_protocol(X_all, y_all, seed, train_labels=True)
            for level in levels:
                rng = np.random.RandomState(seed)
                A_tr, A_te = blank(X_tr, y_tr, level, rng), blank(X_te, y_te, level, rng)
                # each imputer is fitted once per set, seed and level, and its rows
                # shared by the detectors behind it (the same as one pipeline each)
                imputed: dict[str, tuple] = {}
                for method in methods if level != "complete" else ["skvae"]:
                    imputer, det = make(method, seed, X_tr.shape[1])
                    key = method.partition(" + ")[2]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # IterativeImputer's convergence
                        if imputer is not None and key not in imputed:
                            start = time.perf_counter()
                            rows_in = imputer.fit_transform(A_tr), imputer.transform(A_te)
                            imputed[key] = (*rows_in, time.perf_counter() - start)
                        B_tr, B_te, spent = imputed[key] if imputer is not None else (A_tr, A_te, 0)
                        start = time.perf_counter()
                        s = anomaly_scores(det.fit(B_tr), B_te)
                        spent += time.perf_counter() - start
                    row = {
                        "dataset": name,
                        "seed": seed,
                        "level": level,
                        "method": method,
                        "auc": float(roc_auc_score(y_te, s)),
                        "ap": float(average_precision_score(y_te, s)),
                        "seconds": spent,
                    }
                    rows.append(row)
                    log(
                        f"{name:28s} seed={seed} {level:8s} {method:28s} "
                        f"auc={row['auc']:.3f} ap={row['ap']:.3f} {row['seconds']:.1f}s"
                    )
        if done is not None:
            done(rows)
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean ROC AUC and AP per level and method, over sets and seeds."""
    out: dict = {}
    for level in LEVELS:
        for method in METHODS:
            sel = [r for r in rows if r["level"] == level and r["method"] == method]
            if sel:
                out.setdefault(level, {})[method] = {
                    "auc": float(np.mean([r["auc"] for r in sel])),
                    "ap": float(np.mean([r["ap"] for r in sel])),
                    "n": len(sel),
                }
    return out


def table(means: dict) -> str:
    levels = [lv for lv in LEVELS if lv in means]
    lines = ["| method | " + " | ".join(levels) + " |", "|---" * (len(levels) + 1) + "|"]
    for method in [m for m in METHODS if any(m in means[lv] for lv in levels)]:
        cells = [
            f"{means[lv][method]['auc']:.3f} / {means[lv][method]['ap']:.3f}"
            if method in means[lv]
            else ""
            for lv in levels
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(means: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x_of = {"complete": 0, "mcar-10": 10, "mcar-20": 20, "mcar-40": 40}
    for method in METHODS:
        pts = [(x_of[lv], means[lv][method]["auc"]) for lv in x_of if method in means.get(lv, {})]
        if method == "skvae" and "complete" in means:
            pts = [(0, means["complete"]["skvae"]["auc"])] + pts
        if pts:
            xs, ys = zip(*sorted(set(pts)))
            ax.plot(xs, ys, marker="o", label=method, lw=2.5 if method == "skvae" else 1.2)
    ax.set_xlabel("cells missing at random (%)")
    ax.set_ylabel("mean ROC AUC")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--datasets", nargs="*", default=None, help="e.g. adbench/6_cardio")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    parser.add_argument("--levels", nargs="*", default=LEVELS)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--ablation", default="none")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/output/missing"))
    args = parser.parse_args(argv)
    ablate(args.ablation)
    paths = datasets(args.data_dir)
    if args.datasets:
        paths = {k: paths[k] for k in args.datasets}
    VAEOutlierDetector(epochs=2).fit(np.random.RandomState(0).normal(size=(100, 4)))  # warm up
    args.out.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> None:  # after every set: a stopped run keeps them
        report = {"ablation": args.ablation, "seeds": args.seeds, "means": summary(rows)}
        report["rows"] = rows
        tmp = args.out / "results.json.tmp"
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(args.out / "results.json")

    rows = run(paths, args.seeds, args.levels, args.methods, done=write)
    means = summary(rows)
    (args.out / "table.md").write_text(table(means))
    plot(means, args.out / "auc.png")
    print(table(means))


if __name__ == "__main__":
    main()
