"""Fit (which scores every row for the threshold) on an HDF5 dataset larger than half the
machine's RAM, and report the peak memory per row beyond the runtime, for the bound stated in
docs/robustness.md.

The file is generated in chunks (a correlated Gaussian with 0.1 % planted outliers),
then a fresh subprocess fits ``VAEOutlierDetector`` on the h5py dataset and reports its
peak RSS (``ru_maxrss``: h5py reads into ordinary buffers, so the file's page cache does
not count). The file is removed afterwards unless ``--keep``.

Example::

    python benchmarks/out_of_core_benchmark.py --gib 13 --features 100 --path /tmp/big.h5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CHUNK_ROWS = 65536


def generate(path: str, n: int, d: int) -> None:
    import h5py

    rng = np.random.RandomState(0)
    factor = np.linalg.cholesky(0.5 * np.ones((d, d)) + 0.5 * np.eye(d))
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("X", shape=(n, d), dtype="f8", chunks=(CHUNK_ROWS // 16, d))
        for start in range(0, n, CHUNK_ROWS):
            stop = min(n, start + CHUNK_ROWS)
            block = rng.standard_normal((stop - start, d)) @ factor.T
            block[::1000] += 6.0  # 0.1 % outliers
            ds[start:stop] = block


def child(path: str, precision: str) -> dict:
    import h5py

    from skvae import VAEOutlierDetector

    with h5py.File(path, "r") as f:
        X = f["X"]
        n, d = X.shape
        det = VAEOutlierDetector(precision=precision, random_state=0)
        t = time.perf_counter()
        det.fit(X)
        fit_s = time.perf_counter() - t
        # fit already scored every row (for the threshold): decision_scores_ holds them
        scores = -det.decision_scores_
    return {
        "n": n,
        "features": d,
        "file_gib": n * d * 8 / 2**30,
        "fit_seconds": fit_s,
        "scores_finite": bool(np.isfinite(scores).all()),
        "outlier_auc": _auc(scores, n),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _auc(scores: np.ndarray, n: int) -> float:
    """ROC AUC of the planted outliers (every 1000th row of each generated block)."""
    from sklearn.metrics import roc_auc_score

    y = np.zeros(n, dtype=int)
    for start in range(0, n, CHUNK_ROWS):
        y[start : min(n, start + CHUNK_ROWS) : 1000] = 1
    return float(roc_auc_score(y, -scores))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=13.0)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--path", default="/tmp/skvae_out_of_core.h5")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--out", default="benchmarks/output/out_of_core.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.path, args.precision)))
        return
    n = int(args.gib * 2**30 / (8 * args.features))
    t = time.perf_counter()
    generate(args.path, n, args.features)
    gen_s = time.perf_counter() - t
    try:
        # a process that imports the same libraries and does nothing: the runtime's RSS
        idle = subprocess.run(
            [
                sys.executable,
                "-c",
                "import resource, torch, h5py, skvae; "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--path",
                args.path,
                "--precision",
                args.precision,
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(res.stderr)
        result = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            os.remove(args.path)
    result["generate_seconds"] = gen_s
    result["runtime_idle_rss_mb"] = float(idle.stdout.strip())
    beyond = (result["peak_rss_mb"] - result["runtime_idle_rss_mb"]) * 2**20
    result["bytes_per_row_beyond_runtime"] = beyond / result["n"]
    result["data_bytes_per_row"] = 8 * result["features"]
    result["machine_ram_gib"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
