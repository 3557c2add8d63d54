"""The documentation site builds strictly (every warning is an error)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_examples import run as run_example

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed")
def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "estimator" / "index.html").is_file()
    html = (tmp_path / "site" / "api" / "estimator" / "index.html").read_text()
    assert "contamination" in html  # the API page is generated from the docstrings


PAGES = sorted((ROOT / "docs").glob("*.md"))


def snippets(page: Path) -> list[tuple[str, str | None]]:
    """The page's Python snippets in order, each with the reason it is not run (the
    comment line before it), or None."""
    text = page.read_text()
    out = []
    for match in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
        before = text[: match.start()].rsplit("\n", 2)[-2] if match.start() else ""
        reason = re.fullmatch(r"<!-- not run: (.+?) -->", before)
        out.append((match.group(1), reason.group(1) if reason else None))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_page_snippets_run_in_order(page, tmp_path, monkeypatch):
    """Each page's snippets run as written, in order, in a fresh namespace: standalone,
    or continuing the page's earlier ones; a snippet that cannot (it needs the user's
    files or a cluster) says why in a comment line before it."""
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    ran = 0
    for code, reason in snippets(page):
        if reason is None:
            exec(compile(code, str(page), "exec"), namespace)
            ran += 1
    assert ran or all(reason for _, reason in snippets(page))


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
        1.05,  # a few percent: the example is seeded
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, quoted, example, printed, tolerance",
    QUOTES,
    ids=[f"{q[0]}-{q[2]}-{i}" for i, q in enumerate(QUOTES)],
)
def test_docs_quote_what_the_examples_print(page, quoted, example, printed, tolerance):
    if example == "offline_rl_penalty.py":
        pytest.importorskip("mujoco")
    text = " ".join((ROOT / "docs" / page).read_text().split())
    said = re.search(quoted, text)
    assert said, f"{page} no longer quotes {quoted!r}"
    shown = re.search(printed, run_example(example))
    assert shown, f"{example} no longer prints {printed!r}"
    for doc, out in zip(map(float, said.groups()), map(float, shown.groups())):
        if tolerance < 1:
            assert abs(doc - out) <= tolerance, (page, doc, example, out)
        else:
            assert max(doc, out) <= tolerance * max(min(doc, out), 1e-9), (page, doc, out)
