"""Fit time of the default detector with one thread (``n_jobs=None``) against all cores
(``n_jobs=-1``, what PyTorch's default gave before) and IsolationForest, side by side in
one run, on an idle machine and with ``2 x cores`` busy processes beside it.

    python benchmarks/training_benchmark.py [--rows 2000] [--features 20] [--repeats 3] \
        [--out benchmarks/results/training.json]

This is the busy-machine part of the training benchmark; the offline-RL-scale and GPU
parts are still to come.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

from skvae import VAEOutlierDetector

BUSY_LOOP = "while True: pass"


def seconds(fit) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/training.json")
    args = parser.parse_args()
    X = np.random.RandomState(0).normal(size=(args.rows, args.features))
    VAEOutlierDetector(epochs=2, random_state=0).fit(X[:200])  # warm up
    fits = {
        "skvae n_jobs=None (1 thread)": lambda: VAEOutlierDetector(random_state=0).fit(X),
        "skvae n_jobs=-1 (all cores)": lambda: VAEOutlierDetector(random_state=0, n_jobs=-1).fit(X),
        "IsolationForest": lambda: IsolationForest(random_state=0).fit(X),
    }
    report = {"rows": args.rows, "features": args.features, "cores": os.cpu_count(), "modes": {}}
    for mode in ("idle", "busy"):
        n_busy = 0 if mode == "idle" else 2 * (os.cpu_count() or 1)
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n_busy)]
        try:
            times = {name: [] for name in fits}
            for _ in range(args.repeats):  # interleaved, so that each sees the same load
                for name, fit in fits.items():
                    times[name].append(seconds(fit))
        finally:
            for p in busy:
                p.kill()
        report["modes"][mode] = {"busy_processes": n_busy, "seconds": times}
        base = np.median(times["IsolationForest"])
        for name, values in times.items():
            print(
                f"{mode:5s} {name:30s} median {np.median(values):6.2f} s "
                f"(min {min(values):.2f}, max {max(values):.2f}), "
                f"{np.median(values) / base:5.1f}x IsolationForest"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
