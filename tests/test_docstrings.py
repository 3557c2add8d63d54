"""Every public function and class has a numpydoc docstring with Parameters,
Returns/Attributes and an Examples section (which the suite runs as a doctest)."""

import importlib
import inspect

import pytest

MODULES = [
    "skvae",
    "skvae.evaluation",
    "skvae.plotting",
    "skvae.datasets",
    "skvae.penalty",
    "skvae.compat",
    "skvae.cli",
]


def public_objects():
    seen = set()
    for name in MODULES:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None) or dir(module)
        for attr in names:
            obj = getattr(module, attr)
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not obj.__module__.startswith("skvae") or obj in seen:
                continue
            if name != "skvae" and obj.__module__ != name:
                continue  # imported from elsewhere
            if issubclass(type(obj), type) and issubclass(obj, Exception):
                continue
            seen.add(obj)
            yield f"{obj.__module__}.{obj.__qualname__}", obj


# ids are the names alone: an object's repr holds its address, which differs between
# processes (pytest-xdist's workers must collect the same ids)
@pytest.mark.parametrize("name, obj", [pytest.param(n, o, id=n) for n, o in public_objects()])
def test_numpydoc_sections(name, obj):
    doc = inspect.getdoc(obj) or ""
    params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
    if inspect.isclass(obj):  # a dataclass documents its fields as Attributes
        if params:
            assert "Parameters\n----------" in doc or "Attributes\n----------" in doc, name
    else:
        if params:
            assert "Parameters\n----------" in doc, f"{name}: no Parameters section"
        assert "Returns\n-------" in doc, f"{name}: no Returns section"
    assert "Examples\n--------" in doc and ">>>" in doc, f"{name}: no Examples section"
