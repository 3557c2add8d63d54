"""The per-feature input scaling the detector learns at fit time (applied by the network,
:meth:`skvae._network.VAEEnsemble.scale_input`), independent of any scaler the user adds."""

from __future__ import annotations

import numpy as np

# IQR of a standard normal distribution: dividing the IQR by it gives a robust std.
_IQR_NORMAL = 1.3489795003921634


def fit_scaling(X: np.ndarray, method: str | None, missing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature centre and scale of ``X`` for ``method`` ('robust', 'standard', None),
    of the observed values when some are ``missing`` (NaN; the caller knows)."""
    n_features = X.shape[1]
    if method is None:
        return np.zeros(n_features), np.ones(n_features)
    mean, std = (np.nanmean, np.nanstd) if missing else (np.mean, np.std)
    with np.errstate(over="ignore", invalid="ignore"):
        if method == "robust":
            if X.dtype == np.float64:
                q25, center, q75 = quartiles(X, missing)
            elif missing:
                q25, center, q75 = np.nanpercentile(X, [25, 50, 75], axis=0)
            else:
                q25, center, q75 = np.percentile(X, [25, 50, 75], axis=0)
            scale = (q75 / 2 - q25 / 2) * (2 / _IQR_NORMAL)
            # Features with a zero IQR (mostly constant, binary) fall back to their std.
            flat = ~(scale > 0)
            if flat.any():
                scale[flat] = std(X[:, flat], axis=0)
        elif method == "standard":
            center = mean(X, axis=0)
            scale = std(X, axis=0)
        else:  # pragma: no cover - guarded by parameter validation
            raise ValueError(f"unknown scaling {method!r}")
    center = np.where(np.isfinite(center), center, 0.0)
    # Non-finite or zero scales (overflowing or constant features) become 1.
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return center.astype(np.float64), scale.astype(np.float64)


def quartiles(X: np.ndarray, missing: bool = False) -> np.ndarray:
    """The 25th, 50th and 75th percentiles of each column of float64 ``X``, as
    (3, n_features): equal to ``np.percentile(X, [25, 50, 75], axis=0)``, or with
    ``missing`` values (NaN) to ``np.nanpercentile`` (NaN for a column without an
    observed value).

    Without missing values only the order statistics the quartiles interpolate between
    are selected, one partition at a time; with them each column is sorted (its count
    of observed values sets its own positions). numpy's percentiles select all of them
    in one call, or column by column with missing values, which costs several times more.
    """
    n_rows, n_features = X.shape
    observed = n_rows - np.isnan(X).sum(0) if missing else np.full(n_features, n_rows)
    # numpy's 'linear' method: the virtual index (n - 1) q (exact for quarters), the
    # two order statistics around it and the fraction between them
    virtual = (np.maximum(observed, 1) - 1) * np.array([0.25, 0.5, 0.75])[:, None]
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, np.maximum(observed, 1) - 1)
    gamma = virtual - below
    if missing:
        ordered = np.sort(X, axis=0)  # NaN last
    else:
        ordered = _order_statistics(X, sorted(set(below[:, 0]) | set(above[:, 0])))
    low = np.take_along_axis(ordered, below, axis=0)
    high = np.take_along_axis(ordered, above, axis=0)
    # numpy's interpolation, from the nearer of the two values
    difference = high - low
    out = np.where(gamma < 0.5, low + difference * gamma, high - difference * (1 - gamma))
    out[:, observed == 0] = np.nan
    return out


def _order_statistics(X: np.ndarray, positions: list[int]) -> np.ndarray:
    """A copy of ``X`` (a view of shape ``X.shape``) whose columns each hold their
    order statistics at ``positions`` (sorted) in place: one partition per position,
    each within the part of the column the previous ones left."""
    columns = np.array(X.T, order="C")  # each column contiguous

    def select(start: int, stop: int, needed: list[int]) -> None:
        if needed:
            k = needed[len(needed) // 2]
            columns[:, start:stop].partition(k - start, axis=1)
            select(start, k, [i for i in needed if i < k])
            select(k + 1, stop, [i for i in needed if i > k])

    select(0, X.shape[0], positions)
    return columns.T


def to_float32(Z: np.ndarray) -> np.ndarray:
    """``Z`` as float32 for training, or a ValueError when it does not fit (NaN, a
    missing value, stays NaN)."""
    with np.errstate(over="ignore"):
        Z32 = Z.astype(np.float32)
    if np.isinf(Z32).any():
        raise ValueError(
            "X has values too large for float32 computation; use scaling='robust' "
            "or 'standard', or rescale X."
        )
    return Z32


def scaling_for(score_type: str) -> str | None:
    """The scaling that goes with ``score_type`` in the offline-RL defaults: none for
    the old module's ``'squared_error'`` (its meaning is in input units), ``'robust'``
    otherwise."""
    return None if score_type == "squared_error" else "robust"
