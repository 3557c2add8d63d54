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


@pytest.mark.slow
def test_wheel_ships_the_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("hopper", "walker2d", "halfcheetah"):
        assert f"skvae/configs/{config}.yaml" in names


@pytest.mark.slow
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
    assert entry and "skvae = skvae._entry:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()


# The import paragraph of docs/architecture.md, as data: what each module imports of
# skvae (helpers: the private modules the estimator builds on).
HELPERS = {"_device", "_inputs", "_persistence", "_scaling", "_thresholds"}
IMPORTS = {
    "__init__": set(),  # its names are imported when first used
    "__main__": {"_entry"},
    "_entry": set(),  # imports cli inside main, to answer Ctrl-C during the import
    "_device": set(),
    "_inputs": set(),
    "_thresholds": set(),
    "_scaling": set(),
    "_network": {"_device", "_inputs"},
    "_training": {"_network"},
    "_plainpickle": {"_inputs"},
    "_csvio": {"_inputs", "_network"},
    "_persistence": {"__version__", "_inputs", "_network", "_plainpickle", "_thresholds"},
    "_estimator": {*HELPERS, "_network", "_training"},
    "datasets": {"_csvio", "_inputs", "_plainpickle"},
    "plotting": {"_inputs"},
    "evaluation": {"_inputs", "_persistence", "plotting"},
    "penalty": {"_inputs", "_thresholds"},
    "cli": {"__version__", "_csvio", "_estimator", *HELPERS, "datasets", "evaluation", "plotting"},
    "compat": {"_estimator", "_network", "datasets", "evaluation", "plotting", *HELPERS},
}


def test_architecture_documents_the_imports():
    import ast

    modules = {}
    for file in sorted((ROOT / "src" / "skvae").glob("*.py")):
        tree = ast.parse(file.read_text())
        top = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                top |= {node.module} if node.module else {a.name for a in node.names}
        inner = [
            node.module
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        ]
        if file.stem != "_entry":
            assert not inner, f"{file.name} imports {inner} inside a function"
        modules[file.stem] = top
    assert modules == IMPORTS
    text = (ROOT / "docs" / "architecture.md").read_text()
    for name in modules:  # every module has its row or its place in the paragraph
        assert f"`{name}" in text or name.startswith("__"), name
