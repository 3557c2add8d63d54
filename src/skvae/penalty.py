"""Reward penalties for model-based offline RL (MOPO-style) from detector scores.

A rollout's reward is lowered where the predicted transition is out of distribution:
``r - coef * penalty(x)``, with ``x = [next_observation, action]`` (or whatever feature
layout the detector was trained on). Scores are first normalised by the mean and
standard deviation of the detector's training scores, and the threshold ``thr`` is
expressed in the same normalised units (:mod:`skvae._thresholds` has the one
convention), so the comparison ``thr - s`` is meaningful.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions, validate_parameter_constraints

from ._inputs import finite_number
from ._thresholds import conformal_offset, normalize, safe_std

# The penalty types of MOPO-style offline-RL code (GORMPO's ``transition_model.py``),
# under its names and with its formulas: ``s`` normalised scores, ``thr`` the normalised
# threshold. skvae's own shapes have other names.
OFFLINE_RL_KINDS = ("tanh", "linear", "inverse", "tanh_reg")
SKVAE_KINDS = ("hinge", "hinge_tanh", "softplus", "nll")
PENALTY_KINDS = OFFLINE_RL_KINDS + SKVAE_KINDS
LOG_1E_6 = float(np.log(1e-6))  # the 'inverse' type's 1e-6, in log space


class RewardPenalty:
    """Turn a fitted detector's scores into a reward penalty.

    With ``s`` the normalised score ``(score_samples(x) - score_mean_) / score_std_``
    and ``t`` the normalised threshold ``thr = (offset_ - score_mean_) / score_std_``,
    the penalty is, for the types offline-RL code (GORMPO) uses, exactly its formulas:

    - ``'tanh'``: ``clip(tanh(0.1 * (t - s)), 0, None)`` (its configs' choice);
    - ``'linear'``: ``w = t - s``, clipped to ``[0, q3 + 1.5 (q3 - q1)]`` with ``q1``,
      ``q3`` the quartiles of ``w`` over the batch;
    - ``'inverse'``: ``exp(t) / (exp(s) + 1e-6)`` where ``s < t``, else 0 (capped at the
      largest finite value of its dtype: never inf);
    - ``'tanh_reg'``: ``tanh(0.1 * (t - s))`` (negative in distribution: a bonus);

    and skvae's own shapes (``scale`` stretches the distance ``t - s``):

    - ``'hinge'``: ``max(0, scale * (t - s))``: zero in distribution, linear below;
    - ``'hinge_tanh'``: ``tanh(max(0, scale * (t - s)))``: the same, saturating at 1;
    - ``'softplus'``: ``softplus(scale * (t - s))``: a smooth hinge;
    - ``'nll'``: ``-s``: the normalised negative score itself (a negative log-likelihood
      bound for ``score_type='elbo'``), with no threshold, like MOPO's uncertainty.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector or skvae.compat.VAE
        Supplies ``score_samples``, ``offset_``, ``score_mean_`` and ``score_std_`` (a
        compat model's detector is used).
    kind : str, default='tanh'
        One of the types above.
    coef : float, default=1.0
        Weight of the penalty in :meth:`penalize` (finite).
    scale : float, default=1.0
        Multiplies ``t - s`` in skvae's shapes (positive; the offline-RL types keep
        their own constants).
    thr : float, optional
        Normalised threshold ``t``; default: the detector's ``offset_`` normalised.
    pvalue : float in (0, 1), optional
        Set ``t`` instead where the detector's conformal p-value is ``pvalue``: rows
        with p-values at or below it lie below ``t`` (for in-distribution rows, a
        fraction of at most ``pvalue``; see :meth:`VAEOutlierDetector.pvalues`).

    Attributes
    ----------
    thr_ : float
        The normalised threshold in use.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEOutlierDetector
    >>> from skvae.penalty import RewardPenalty
    >>> rng = np.random.RandomState(0)
    >>> det = VAEOutlierDetector(epochs=20, random_state=0).fit(rng.normal(size=(300, 3)))
    >>> pen = RewardPenalty(det, kind="hinge")
    >>> x = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]])
    >>> p = pen.penalty(x)
    >>> bool(p[0] == 0.0 and p[1] > 0.0)
    True
    >>> pen.penalize(np.array([1.0, 1.0]), x).shape
    (2,)
    """

    def __init__(
        self,
        detector,
        kind: str = "tanh",
        coef: float = 1.0,
        scale: float = 1.0,
        thr: float | None = None,
        pvalue: float | None = None,
    ) -> None:
        validate_parameter_constraints(
            {"kind": [StrOptions(set(PENALTY_KINDS))]}, {"kind": kind}, "RewardPenalty"
        )
        detector = getattr(detector, "detector", detector)  # a skvae.compat.VAE
        if not hasattr(detector, "score_std_"):
            raise ValueError("detector must be a fitted VAEOutlierDetector.")
        self.detector = detector
        self.kind = kind
        self.coef = finite_number(coef, "coef")
        self.scale = finite_number(scale, "scale")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive; got {scale!r}.")
        self.mean_ = float(detector.score_mean_)
        self.std_ = safe_std(detector.score_std_)
        if thr is not None and pvalue is not None:
            raise ValueError("give thr or pvalue, not both.")
        if pvalue is not None:
            if not 0 < float(pvalue) < 1:
                raise ValueError(f"pvalue must be in (0, 1); got {pvalue!r}.")
            offset = conformal_offset(detector.calibration_scores_, float(pvalue))
            thr = normalize(offset, self.mean_, self.std_)
        self.thr_ = finite_number(
            thr if thr is not None else normalize(detector.offset_, self.mean_, self.std_),
            "thr",
        )

    def normalized_scores(self, X):
        """Scores of ``X`` in units of the training scores' standard deviation.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Features in the detector's layout.

        Returns
        -------
        s : ndarray or torch.Tensor of shape (n_samples,)
            ``(score_samples(X) - mean) / std``; a tensor for tensor input.
        """
        return normalize(self.detector.score_samples(X), self.mean_, self.std_)

    def penalty(self, X):
        """Penalty of each sample (larger = further out of distribution; 0 or more,
        except ``'tanh_reg'``, whose in-distribution rows get a bonus, and GORMPO's
        ``'linear'``, whose clip bound falls below 0 when a whole batch lies inside the
        threshold).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Features in the detector's layout.

        Returns
        -------
        penalty : ndarray or torch.Tensor of shape (n_samples,)
            The penalty; a tensor on the input's device for tensor input.
        """
        s = self.normalized_scores(X)
        return self.from_normalized(s)

    def from_normalized(self, s):
        """Penalty from already normalised scores ``s`` (numpy or torch).

        Parameters
        ----------
        s : ndarray or torch.Tensor of shape (n_samples,)
            Normalised scores.

        Returns
        -------
        penalty : ndarray or torch.Tensor of shape (n_samples,)
            The penalty, of ``s``'s kind.
        """
        # computed wide, then kept finite in s's dtype: a huge scale or thr is never inf
        if isinstance(s, torch.Tensor):
            dtype = s.dtype if s.is_floating_point() else torch.float32
            return _finite(_penalty_torch(self.kind, _wide(s), self.thr_, self.scale), dtype)
        p = _penalty_numpy(self.kind, np.asarray(s, dtype=np.float64), self.thr_, self.scale)
        return _finite(p, np.float64)

    def penalize(self, rewards, X):
        """Penalised rewards ``rewards - coef * penalty(X)``.

        Parameters
        ----------
        rewards : array-like or torch.Tensor of shape (n_samples,) or (n_samples, 1)
            Rewards predicted for the transitions.
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Features of the same transitions.

        Returns
        -------
        rewards : ndarray or torch.Tensor
            Penalised rewards, shaped like ``rewards``, in their float dtype (float64
            for integer rewards, which are not truncated).
        """
        p = self.penalty(X)
        n_rewards = rewards.numel() if isinstance(rewards, torch.Tensor) else np.size(rewards)
        if n_rewards != p.shape[0]:
            raise ValueError(f"rewards has {n_rewards} values but X has {p.shape[0]} rows.")
        # computed wide, then kept finite in the rewards' dtype: a large penalty on
        # float16 rewards is the dtype's lowest value, never -inf
        if isinstance(rewards, torch.Tensor):
            if not rewards.is_floating_point():  # integer rewards: not truncated
                rewards = rewards.to(torch.float64)
            p = _wide(torch.as_tensor(p, device=rewards.device)).reshape(rewards.shape)
            return _finite(_wide(rewards) - self.coef * p, rewards.dtype)
        rewards = np.asarray(rewards)
        # float rewards keep their dtype; integer rewards become float64 (not truncated)
        dtype = rewards.dtype if rewards.dtype.kind == "f" else np.float64
        with np.errstate(over="ignore"):
            out = rewards.astype(np.float64) - self.coef * np.asarray(p).reshape(rewards.shape)
        return _finite(out, dtype)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64, or float32 on a device without float64 (Apple's MPS)."""
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


def _finite(values, dtype):
    """``values`` (an array or tensor) in ``dtype``, with what lies beyond its range
    (infinity included) at its largest finite magnitude."""
    if isinstance(values, torch.Tensor):
        limit = torch.finfo(dtype).max
        return values.clamp(min=-limit, max=limit).to(dtype)
    limit = np.finfo(dtype).max
    return np.clip(values, -limit, limit).astype(dtype)


def _penalty_numpy(kind: str, s: np.ndarray, thr: float, scale: float) -> np.ndarray:
    if kind == "tanh":
        return np.clip(np.tanh(0.1 * (thr - s)), 0, None)
    if kind == "linear":
        w = thr - s
        q1, q3 = np.percentile(w, [25, 75])
        return np.clip(w, 0, q3 + 1.5 * (q3 - q1))
    if kind == "inverse":  # GORMPO's formula in log space, capped at float64's max
        with np.errstate(over="ignore"):
            p = np.exp(thr - np.logaddexp(s, LOG_1E_6))
        return np.where(s < thr, np.minimum(p, np.finfo(np.float64).max), 0.0)
    if kind == "tanh_reg":
        return np.tanh(0.1 * (thr - s))
    return _penalty_torch(kind, torch.from_numpy(s), thr, scale).numpy()


def _penalty_torch(kind: str, s: torch.Tensor, thr: float, scale: float) -> torch.Tensor:
    if kind == "tanh":
        return torch.tanh(0.1 * (thr - s)).clamp(min=0)
    if kind == "linear":
        w = thr - s
        q1, q3 = torch.quantile(w, torch.tensor([0.25, 0.75], dtype=w.dtype, device=w.device))
        return torch.minimum(w.clamp(min=0), q3 + 1.5 * (q3 - q1))
    if kind == "inverse":  # in log space, capped at the dtype's largest finite value
        log_p = thr - torch.logaddexp(s, torch.full_like(s, LOG_1E_6))
        p = torch.exp(log_p).clamp(max=torch.finfo(s.dtype).max)
        return torch.where(s < thr, p, torch.zeros_like(s))
    if kind == "tanh_reg":
        return torch.tanh(0.1 * (thr - s))
    if kind == "nll":
        return -s
    gap = scale * (thr - s)
    if kind == "hinge":
        return gap.clamp(min=0)
    if kind == "hinge_tanh":
        return torch.tanh(gap.clamp(min=0))
    return torch.nn.functional.softplus(gap)
