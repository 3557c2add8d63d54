"""The wheel carries what the command line needs: the shipped configs and the
dependencies of `skvae train` (PyYAML, h5py), so `pip install skvae` alone works."""

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run = subprocess.run([*cmd, "-w", str(out), str(ROOT)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    (file,) = out.glob("skvae-*.whl")
    return file


def test_wheel_ships_the_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("hopper", "walker2d", "halfcheetah"):
        assert f"skvae/configs/{config}.yaml" in names


def test_wheel_requires_what_the_cli_imports(wheel):
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(zf.read(meta).decode())
    required = [
        r.split(">")[0].split(";")[0].strip().lower()
        for r in fields.get_all("Requires-Dist")
        if "extra ==" not in r
    ]
    assert {"pyyaml", "h5py", "torch", "scikit-learn"} <= set(required)
    entry = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt")]
    assert entry and "skvae = skvae.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
