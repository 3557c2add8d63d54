"""Input scaling applied inside the detector, independent of any scaler the user adds."""

from __future__ import annotations

import numpy as np

# Scaled values are clipped to +-CLIP: a row can be arbitrarily far out and its score
# stays finite, while anything beyond CLIP robust standard deviations is already far out.
CLIP = 10.0
# IQR of a standard normal distribution: dividing the IQR by it gives a robust std.
_IQR_NORMAL = 1.3489795003921634


def fit_scaling(X: np.ndarray, method: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature centre and scale of ``X`` for ``method`` ('robust', 'standard', None)."""
    n_features = X.shape[1]
    if method is None:
        return np.zeros(n_features), np.ones(n_features)
    with np.errstate(over="ignore", invalid="ignore"):
        if method == "robust":
            q25, center, q75 = np.percentile(X, [25, 50, 75], axis=0)
            scale = (q75 / 2 - q25 / 2) * (2 / _IQR_NORMAL)
            # Features with a zero IQR (mostly constant, binary) fall back to their std.
            std = X.std(axis=0)
            scale = np.where(scale > 0, scale, std)
        elif method == "standard":
            center = X.mean(axis=0)
            scale = X.std(axis=0)
        else:  # pragma: no cover - guarded by parameter validation
            raise ValueError(f"unknown scaling {method!r}")
    center = np.where(np.isfinite(center), center, 0.0)
    # Non-finite or zero scales (overflowing or constant features) become 1.
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return center.astype(np.float64), scale.astype(np.float64)


def apply_scaling(X: np.ndarray, center: np.ndarray, scale: np.ndarray, clip: bool) -> np.ndarray:
    """Scale ``X`` (float64 result), clipped to +-CLIP when ``clip``."""
    with np.errstate(over="ignore", invalid="ignore"):
        Z = (np.asarray(X, dtype=np.float64) - center) / scale
    if clip:
        Z = np.nan_to_num(Z, nan=0.0, posinf=CLIP, neginf=-CLIP)
        np.clip(Z, -CLIP, CLIP, out=Z)
    return Z


def scale_tensor(x, center, scale, clip: bool):
    """The torch counterpart of :func:`apply_scaling`, for tensors already on a device
    (``center`` and ``scale`` are tensors of ``x``'s dtype and device)."""
    import torch

    z = (x - center) / scale
    if clip:
        z = torch.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP).clamp(-CLIP, CLIP)
    return z


def to_float32(Z: np.ndarray) -> np.ndarray:
    """``Z`` as float32 for training, or a ValueError when it does not fit."""
    with np.errstate(over="ignore"):
        Z32 = Z.astype(np.float32)
    if not np.isfinite(Z32).all():
        raise ValueError(
            "X has values too large for float32 computation; use scaling='robust' "
            "or 'standard', or rescale X."
        )
    return Z32
