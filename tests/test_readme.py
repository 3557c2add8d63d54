"""The README's Python snippets run as written, in order, in a fresh folder (its
headline numbers: tests/test_benchmarks.py)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(snippets()) >= 3


@pytest.mark.slow
def test_readme_snippets_run(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")  # the offline-RL snippet runs the Hopper simulator
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in snippets():
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "detector.skvae").is_file()
    assert namespace["penalised"].shape == namespace["rollout"]["rewards"].shape
