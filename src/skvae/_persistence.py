"""A model file format that executes no code when loaded.

A ``.skvae`` file is a zip archive with two members:

- ``metadata.json``: hyperparameters, fitted scalars and arrays (scaling, threshold,
  score statistics, history, feature names), the network's architecture, versions and
  the SHA-256 of the weights member;
- ``weights.pt``: the network's state dict (and the training scores), written with
  ``torch.save`` and read with ``torch.load(weights_only=True)``, which only rebuilds
  tensors.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

FORMAT_NAME = "skvae-model"
FORMAT_VERSION = 1
_PARAM_TYPES = (type(None), bool, int, float, str)


def _jsonable_params(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, np.random.RandomState):
            value = None  # the fitted state does not depend on it any more
        if isinstance(value, np.generic):
            value = value.item()
        if not (isinstance(value, _PARAM_TYPES) or isinstance(value, list)):
            raise TypeError(f"parameter {key}={value!r} cannot be stored in a .skvae file")
        out[key] = value
    return out


def save(detector, path: str | os.PathLike) -> Path:
    """Write a fitted :class:`~skvae.VAEOutlierDetector` to a ``.skvae`` file.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
        The detector to save.
    path : path-like
        Destination file (``.skvae`` is conventional).

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> import skvae
    >>> det = skvae.VAEOutlierDetector(epochs=3, random_state=0).fit(np.random.randn(50, 3))
    >>> f = skvae.save(det, os.path.join(tempfile.mkdtemp(), "det.skvae"))
    >>> x = np.ones((1, 3))
    >>> np.allclose(skvae.load(f).score_samples(x), det.score_samples(x))
    True
    """
    import sklearn
    from sklearn.utils.validation import check_is_fitted

    from . import __version__

    check_is_fitted(detector)
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in detector.module_.state_dict().items()}
    state["__decision_scores__"] = torch.from_numpy(np.asarray(detector.decision_scores_))
    torch.save(state, buffer)
    weights = buffer.getvalue()
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": type(detector).__name__,
        "versions": {
            "skvae": __version__,
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "params": _jsonable_params(detector.get_params()),
        "network": dict(detector.module_.config),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "fitted": {
            "device": str(detector.device_),
            "n_features_in": int(detector.n_features_in_),
            "feature_names_in": (
                [str(n) for n in detector.feature_names_in_]
                if hasattr(detector, "feature_names_in_")
                else None
            ),
            "center": detector.center_.tolist(),
            "scale": detector.scale_.tolist(),
            "latent_dim": int(detector.latent_dim_),
            "hidden_dims": list(detector.hidden_dims_),
            "offset": float(detector.offset_),
            "score_mean": float(detector.score_mean_),
            "score_std": float(detector.score_std_),
            "history": detector.history_,
            "n_epochs": int(detector.n_epochs_),
            "best_epoch": int(detector.best_epoch_),
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps(meta, indent=1))
        zf.writestr("weights.pt", weights)
    return path


def load(path: str | os.PathLike, device: str | None = None):
    """Load a detector written by :func:`save`, without executing code from the file.

    Parameters
    ----------
    path : path-like
        The ``.skvae`` file.
    device : str, optional
        Where to put the network; default: where it was trained, or the CPU when that
        device is not available here.

    Returns
    -------
    detector : VAEOutlierDetector
        The fitted detector.

    Raises
    ------
    ValueError
        If the file is truncated, corrupted, tampered with, or not a skvae model,
        or was written by a newer, incompatible format version.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "bad.skvae")
    >>> _ = open(f, "wb").write(b"garbage")
    >>> try:
    ...     load(f)
    ... except ValueError as e:
    ...     print(str(e).split(":")[0])
    not a skvae model file (not a zip archive)
    """
    from . import __version__
    from ._estimator import VAEOutlierDetector, resolve_device, scoring_dtype
    from ._network import VAEEnsemble

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
            weights = zf.read("weights.pt")
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a skvae model file (not a zip archive): {path}") from exc
    except KeyError as exc:
        raise ValueError(f"not a skvae model file (missing {exc}): {path}") from exc
    except Exception as exc:  # damaged members: zlib and CRC errors, bad JSON
        raise ValueError(f"corrupted skvae model file {path}: {exc}") from exc
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"not a skvae model file: {path}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model format {version}, newer than this skvae "
            f"({__version__}, format {FORMAT_VERSION}) reads: upgrade skvae."
        )
    if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise ValueError(f"{path}: the weights do not match their checksum (tampered?)")
    written_by = meta.get("versions", {}).get("skvae")
    if written_by != __version__:
        warnings.warn(
            f"{path} was written by skvae {written_by}; this is skvae {__version__}.",
            UserWarning,
            stacklevel=2,
        )
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        fitted = meta["fitted"]
        detector = VAEOutlierDetector(**meta["params"])
        module = VAEEnsemble(**meta["network"])
        decision_scores = state.pop("__decision_scores__").numpy()
        module.load_state_dict(state)
    except Exception as exc:
        raise ValueError(f"corrupted skvae model file {path}: {exc}") from exc
    if device is None:
        device = fitted["device"]
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
    dev = resolve_device(device)
    module.eval()
    detector.module_ = module.to(dev, scoring_dtype(dev, detector.precision))
    detector.device_ = dev
    detector.n_features_in_ = fitted["n_features_in"]
    if fitted["feature_names_in"] is not None:
        detector.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
    detector.center_ = np.asarray(fitted["center"], dtype=np.float64)
    detector.scale_ = np.asarray(fitted["scale"], dtype=np.float64)
    detector.latent_dim_ = fitted["latent_dim"]
    detector.hidden_dims_ = tuple(fitted["hidden_dims"])
    detector.offset_ = fitted["offset"]
    detector.threshold_ = -fitted["offset"]
    detector.score_mean_ = fitted["score_mean"]
    detector.score_std_ = fitted["score_std"]
    detector.history_ = fitted["history"]
    detector.n_epochs_ = fitted["n_epochs"]
    detector.best_epoch_ = fitted["best_epoch"]
    detector.decision_scores_ = decision_scores
    detector.labels_ = (decision_scores > detector.threshold_).astype(int)
    return detector
