"""benchmarks/cuda_check.py keeps working: its CPU half runs here (the GPU half runs on a
GPU machine, where the same script is the recorded check)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cuda_check_cpu_half(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cuda_check.py"), str(tmp_path)]
        + ["--sizes", "2000", "--skip-tests"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "cuda_check.json").read_text())
    (row,) = [r for r in report["timings"] if r["device"] == "cpu"]
    assert row["n"] == 2000 and row["score_rows_per_s"] > 0
    assert "| 2,000 | cpu |" in (tmp_path / "cuda_check.md").read_text()
