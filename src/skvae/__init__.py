"""skvae: a variational autoencoder as a scikit-learn outlier detector."""

__version__ = "0.2.0"  # first: the modules below read it

from ._estimator import VAEOutlierDetector, load, save
from .evaluation import (
    evaluate_anomaly_detection,
    evaluate_labelled,
    make_synthetic,
    outlier_scorer,
)
from .penalty import RewardPenalty

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
