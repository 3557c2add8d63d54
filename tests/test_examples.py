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


DOCS = Path(__file__).resolve().parents[1] / "docs"
# Every number the docs quote from an example, against what the example prints:
# (page, the quote with its numbers as groups, example, the printed numbers as groups in
# the same order, tolerance). A tolerance below 1 is absolute, above 1 a ratio.
QUOTES = [
    (
        "user_guide.md",
        r"ELBO ≈ ([0-9.]+), reconstruction ≈ ([0-9.]+), reconstruction probability ≈ ([0-9.]+)",
        "choosing_a_score.py",
        r"noise\s+elbo=([0-9.]+)\s+reconstruction=([0-9.]+)\s+reconstruction_probability=([0-9.]+)",
        0.03,
    ),
    (
        "user_guide.md",
        r"are found by all three \(ROC AUC ≈ ([0-9.]+)\)",
        "choosing_a_score.py",
        r"cluster\s+elbo=([0-9.]+)",
        0.01,
    ),
    (
        "user_guide.md",
        r"inside its range by none of them \(≈ ([0-9.]+)\)",
        "choosing_a_score.py",
        r"local\s+elbo=([0-9.]+)",
        0.03,
    ),
    (
        "user_guide.md",
        r"end with a KL of ≈ ([0-9.]+), ([0-9.]+) and ([0-9.]+)",
        "beta_vae.py",
        r"final KL\s+([0-9.]+).*\n.*final KL\s+([0-9.]+).*\n.*final KL\s+([0-9.]+)",
        1.25,
    ),
    (
        "user_guide.md",
        r"ROC AUC ≈ ([0-9.]+), ([0-9.]+) and ([0-9.]+), since",
        "beta_vae.py",
        r"ROC AUC ([0-9.]+)\n.*ROC AUC ([0-9.]+)\n.*ROC AUC ([0-9.]+)",
        0.03,
    ),
    (
        "offline_rl.md",
        r"held-out transitions \(≈ ([0-9.]+)\), on a uniform random policy \(≈ ([0-9.]+),"
        r" ROC AUC ([0-9.]+)\) and under motors three times stronger \(≈ ([0-9.]+), ROC AUC"
        r" ([0-9.]+)\)",
        "offline_rl_penalty.py",
        r"behaviour policy: ([0-9.]+)\n.*random policy: ([0-9.]+)\s+\(ROC AUC in vs out: ([0-9.]+)"
        r"\)\n.*stronger: ([0-9.]+)\s+\(ROC AUC in vs out: ([0-9.]+)\)",
        1.3,
    ),
]


@pytest.mark.parametrize("page, quoted, example, printed, tolerance", QUOTES)
def test_docs_quote_what_the_examples_print(page, quoted, example, printed, tolerance):
    if example == "offline_rl_penalty.py":
        pytest.importorskip("mujoco")
    text = " ".join((DOCS / page).read_text().split())
    said = re.search(quoted, text)
    assert said, f"{page} no longer quotes {quoted!r}"
    shown = re.search(printed, run(example))
    assert shown, f"{example} no longer prints {printed!r}"
    for doc, out in zip(map(float, said.groups()), map(float, shown.groups())):
        if tolerance < 1:
            assert abs(doc - out) <= tolerance, (page, doc, example, out)
        else:
            assert max(doc, out) <= tolerance * max(min(doc, out), 1e-9), (page, doc, out)


def test_examples_compare_something():
    """The comparisons the examples print are not all ties."""
    scores = re.findall(r"=([0-9.]+)", run("choosing_a_score.py"))
    assert len(set(scores)) > 4 and min(map(float, scores)) < 0.9
    aucs = [float(a) for a in re.findall(r"ROC AUC ([0-9.]+)", run("beta_vae.py"))]
    assert max(aucs) - min(aucs) > 0.05
