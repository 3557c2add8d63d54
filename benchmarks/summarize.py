"""Summarise odds_benchmark.py outputs: the default's table plus one row per ablation.

Example::

    python benchmarks/summarize.py benchmarks/output/odds benchmarks/output/ablation_*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def per_dataset(rows, detector, key="roc_auc"):
    out = {}
    for ds in sorted({r["dataset"] for r in rows}):
        vals = [r[key] for r in rows if r["dataset"] == ds and r["detector"] == detector]
        if vals:
            out[ds] = float(np.mean(vals))
    return out


def main(paths):
    base = json.loads((Path(paths[0]) / "results.json").read_text())
    iforest = per_dataset(base["rows"], "iforest")
    lines = [
        "| configuration | mean ROC AUC | mean AP | sets > 0.10 below IsolationForest | "
        "total fit s (one seed) |",
        "|---|---|---|---|---|",
    ]
    for path in paths:
        res = json.loads((Path(path) / "results.json").read_text())
        auc = per_dataset(res["rows"], "skvae")
        ap = per_dataset(res["rows"], "skvae", "average_precision")
        fit = per_dataset(res["rows"], "skvae", "fit_seconds")
        below = [ds for ds in auc if auc[ds] < iforest[ds] - 0.10]
        label = json.dumps(res.get("skvae_params") or {}) if path != paths[0] else "defaults"
        lines.append(
            f"| {label} | {np.mean(list(auc.values())):.3f} | {np.mean(list(ap.values())):.3f} "
            f"| {', '.join(f'{d} ({auc[d]:.3f})' for d in below) or 'none'} "
            f"| {sum(fit.values()):.1f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
