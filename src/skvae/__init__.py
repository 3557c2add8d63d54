"""skvae: a variational autoencoder as a scikit-learn outlier detector."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.3.0"

# The public names, imported when first used: ``import skvae`` itself is cheap, so the
# command line can answer Ctrl-C while PyTorch is still loading (skvae._entry).
_EXPORTS = {
    "VAEOutlierDetector": "._estimator",
    "load": "._estimator",
    "save": "._estimator",
    "evaluate_anomaly_detection": ".evaluation",
    "evaluate_labelled": ".evaluation",
    "make_synthetic": ".evaluation",
    "outlier_scorer": ".evaluation",
    "RewardPenalty": ".penalty",
}

if TYPE_CHECKING:  # for type checkers and the documentation
    from ._estimator import VAEOutlierDetector, load, save
    from .evaluation import (
        evaluate_anomaly_detection,
        evaluate_labelled,
        make_synthetic,
        outlier_scorer,
    )
    from .penalty import RewardPenalty


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "VAEOutlierDetector",
    "RewardPenalty",
    "evaluate_anomaly_detection",
    "evaluate_labelled",
    "make_synthetic",
    "outlier_scorer",
    "save",
    "load",
    "__version__",
]
