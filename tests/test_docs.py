"""The documentation site builds strictly (every warning is an error)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
