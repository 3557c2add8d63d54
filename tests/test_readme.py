"""The README's Python snippets run as written, in order, in a fresh folder, and its
headline numbers are those of the recorded benchmark runs."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(snippets()) >= 3


def test_readme_snippets_run(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")  # the offline-RL snippet runs the Hopper simulator
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in snippets():
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "detector.skvae").is_file()
    assert namespace["penalised"].shape == namespace["rollout"]["rewards"].shape


RESULTS = README.parent / "benchmarks" / "results"


def _means(name: str) -> dict[str, tuple[float, float, float]]:
    """Per detector: mean over sets of the mean over seeds of ROC AUC and AP, and the
    total fit seconds, from a benchmark's results file."""
    rows = json.loads((RESULTS / f"{name}.json").read_text())["rows"]
    per: dict[str, dict[str, list]] = {}
    for r in rows:
        if "roc_auc" in r:
            per.setdefault(r["detector"], {}).setdefault(r["dataset"], []).append(r)
    out = {}
    for detector, sets in per.items():
        auc = np.mean([np.mean([r["roc_auc"] for r in v]) for v in sets.values()])
        ap = np.mean([np.mean([r["average_precision"] for r in v]) for v in sets.values()])
        fit = sum(r["fit_seconds"] for v in sets.values() for r in v)
        out[detector] = (float(auc), float(ap), float(fit))
    return out


@pytest.mark.parametrize(
    "row_start, quality, fit",
    [
        ("| ADBench, 21 sets", "adbench", "adbench_fit"),
        ("| ODDS, 9 sets", "odds", "odds"),
        ("| 6 sets not used", "holdout", "holdout"),
    ],
)
def test_headline_table_is_the_recorded_runs(row_start, quality, fit):
    """The README's headline numbers are those of benchmarks/results, to the digit."""
    (line,) = [x for x in README.read_text().splitlines() if x.startswith(row_start)]
    cells = [c.strip() for c in line.strip("|").split("|")]
    means = _means(quality)
    for cell, detector in ((cells[1], "skvae"), (cells[2], "iforest")):
        auc, ap = (float(v) for v in cell.split(" / "))
        assert (auc, ap) == (round(means[detector][0], 3), round(means[detector][1], 3))
    timing = _means(fit)
    assert float(cells[4]) == round(timing["skvae"][2] / timing["pyod_vae"][2], 3)
    for name, value in re.findall(r"(PyOD VAE|ECOD|PyOD AutoEncoder) (0\.\d{3})", cells[3]):
        detector = {"PyOD VAE": "pyod_vae", "ECOD": "ecod", "PyOD AutoEncoder": "pyod_ae"}[name]
        source = timing if detector == "pyod_vae" and quality == "adbench" else means
        assert float(value) == round(source[detector][0], 3), name
