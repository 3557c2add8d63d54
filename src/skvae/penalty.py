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

from ._thresholds import normalize, safe_std

PENALTY_KINDS = ("linear", "tanh", "softplus", "nll")


class RewardPenalty:
    """Turn a fitted detector's scores into a reward penalty.

    With ``s`` the normalised score ``(score_samples(x) - score_mean_) / score_std_``
    and ``t`` the normalised threshold ``thr = (offset_ - score_mean_) / score_std_``,
    the penalty is (``scale`` stretches the distance ``t - s``):

    - ``'linear'``: ``max(0, scale * (t - s))``: zero in distribution, growing linearly
      below the threshold;
    - ``'tanh'``: ``tanh(max(0, scale * (t - s)))``: the same, saturating at 1;
    - ``'softplus'``: ``softplus(scale * (t - s))``: a smooth version of ``'linear'``;
    - ``'nll'``: ``-s``: the normalised negative score itself (a negative log-likelihood
      bound for ``score_type='elbo'``), with no threshold, like MOPO's uncertainty.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector or skvae.compat.VAE
        Supplies ``score_samples``, ``offset_``, ``score_mean_`` and ``score_std_`` (a
        compat model's detector is used).
    kind : {'linear', 'tanh', 'softplus', 'nll'}, default='linear'
        Shape of the penalty.
    coef : float, default=1.0
        Weight of the penalty in :meth:`penalize`.
    scale : float, default=1.0
        Multiplies ``t - s`` before the shape is applied.
    thr : float, optional
        Normalised threshold ``t``; default: the detector's ``offset_`` normalised.

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
    >>> pen = RewardPenalty(det, kind="linear")
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
        kind: str = "linear",
        coef: float = 1.0,
        scale: float = 1.0,
        thr: float | None = None,
    ) -> None:
        if kind not in PENALTY_KINDS:
            raise ValueError(f"kind must be one of {PENALTY_KINDS}; got {kind!r}.")
        detector = getattr(detector, "detector", detector)  # a skvae.compat.VAE
        if not hasattr(detector, "score_std_"):
            raise ValueError("detector must be a fitted VAEOutlierDetector.")
        self.detector = detector
        self.kind = kind
        self.coef = float(coef)
        self.scale = float(scale)
        self.mean_ = float(detector.score_mean_)
        self.std_ = safe_std(detector.score_std_)
        self.thr_ = (
            float(thr)
            if thr is not None
            else float(normalize(detector.offset_, self.mean_, self.std_))
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
        """Penalty of each sample (0 or more; larger = further out of distribution).

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
        """Penalty from already normalised scores ``s`` (numpy or torch)."""
        is_tensor = isinstance(s, torch.Tensor)
        t = s if is_tensor else torch.as_tensor(np.asarray(s, dtype=np.float64))
        if self.kind == "nll":
            out = -t
        else:
            gap = self.scale * (self.thr_ - t)
            if self.kind == "linear":
                out = gap.clamp(min=0)
            elif self.kind == "tanh":
                out = torch.tanh(gap.clamp(min=0))
            else:
                out = torch.nn.functional.softplus(gap)
        return out if is_tensor else out.numpy()

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
            Penalised rewards, shaped like ``rewards``.
        """
        p = self.penalty(X)
        if isinstance(rewards, torch.Tensor):
            p = torch.as_tensor(p, device=rewards.device, dtype=rewards.dtype)
            return rewards - self.coef * p.reshape(rewards.shape)
        rewards = np.asarray(rewards)
        return rewards - self.coef * np.asarray(p).reshape(rewards.shape)
