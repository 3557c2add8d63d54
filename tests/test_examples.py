"""Every example runs and prints the result it promises, so examples never rot."""

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a whole script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@functools.cache
def run(name: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_quickstart():
    auc = float(re.search(r"ROC AUC: ([0-9.]+)", run("quickstart.py")).group(1))
    assert auc > 0.95


def test_grid_search():
    text = run("grid_search.py")
    assert len(re.findall(r"latent_dim=\d beta=", text)) == 9
    assert float(re.search(r"with ROC AUC ([0-9.]+)", text).group(1)) > 0.8


def test_beta_vae():
    text = run("beta_vae.py")
    kl = [float(v) for v in re.findall(r"final KL\s+([0-9.]+)", text)]
    assert len(kl) == 3 and kl[0] > kl[1] > kl[2]  # a larger beta squeezes the KL


def test_choosing_a_score():
    text = run("choosing_a_score.py")
    rows = dict(re.findall(r"^(\w+)\s+(elbo=.*)$", text, flags=re.M))
    assert set(rows) == {"outlier", "cluster", "local", "noise"}
    assert float(re.search(r"elbo=([0-9.]+)", rows["outlier"]).group(1)) > 0.95


def test_save_and_load():
    text = run("save_and_load.py")
    assert text.count(": True") == 3


def test_offline_rl_penalty():
    pytest.importorskip("mujoco")
    text = run("offline_rl_penalty.py")
    aucs = [float(v) for v in re.findall(r"ROC AUC in vs out: ([0-9.]+)", text)]
    assert len(aucs) == 2 and min(aucs) > 0.9


def test_explain_and_calibrate(tmp_path):
    figure = tmp_path / "contributions.png"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "explain_and_calibrate.py"), str(figure)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    pushed = re.search(r"pushed row: p-value [0-9.]+, lowest contributions: (\S+), (\S+)", text)
    assert pushed and set(pushed.groups()) == {"sensor_1", "sensor_6"}
    assert re.search(r"swapped row: p-value 0\.0\d+, lowest contributions: sensor_3", text)
    rate = float(re.search(r"alpha=0.05: ([0-9.]+)", text).group(1))
    assert rate < 0.07
    assert figure.stat().st_size > 10_000


def test_examples_compare_something():
    """The comparisons the examples print are not all ties."""
    scores = re.findall(r"=([0-9.]+)", run("choosing_a_score.py"))
    assert len(set(scores)) > 4 and min(map(float, scores)) < 0.9
    aucs = [float(a) for a in re.findall(r"ROC AUC ([0-9.]+)", run("beta_vae.py"))]
    assert max(aucs) - min(aucs) > 0.05
