"""skvae: a variational autoencoder as a scikit-learn outlier detector."""

from ._estimator import VAEOutlierDetector

__all__ = ["VAEOutlierDetector", "__version__"]
__version__ = "0.1.0"
