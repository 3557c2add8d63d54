"""The API of the old ``vae_module`` (GORMPO) on skvae's engine.

Code written against ``vae_module.vae`` switches by changing one import line::

    # from vae_module.vae import VAE, create_synthetic_data, load_rl_data_for_vae
    from skvae.compat import VAE, create_synthetic_data, load_rl_data_for_vae

:class:`VAE` is a thin layer over :class:`skvae.VAEOutlierDetector` (one VAE trained on
all rows) and :mod:`skvae.datasets`; there is no second training loop. Where the old
module had bugs, this layer behaves correctly:

- scores are deterministic (posterior mean, no fresh latent sample per call);
- early stopping restores the weights of the best validation epoch;
- ``predict`` works on numpy input (the old one called ``.cpu()`` on a numpy array);
- ``load_model`` returns ``thr`` in the same normalised units as
  ``(score_samples(x) - mean) / std``, and ``mean``/``std`` of the training scores, so
  the downstream comparison ``thr - s`` is meaningful (the old ``thr`` was raw).

Scores are the detector's ELBO (a log-likelihood bound, higher = more normal) rather
than the old negative reconstruction error; files saved by the old module load and keep
their reconstruction-error score (made deterministic).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from ._estimator import VAEOutlierDetector, resolve_device, scoring_dtype
from ._network import VAEEnsemble
from ._scaling import scale_tensor
from .evaluation import evaluate_anomaly_detection as _evaluate
from .evaluation import make_synthetic

FORMAT = "skvae-compat-1"
THRESHOLD_PERCENTILES = (0.5, 1, 2, 5, 10, 20)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class VAE(nn.Module):
    """The old ``vae_module.vae.VAE``, backed by :class:`skvae.VAEOutlierDetector`.

    Parameters
    ----------
    input_dim : int
        Number of features.
    latent_dim : int
        Size of the latent space.
    hidden_dims : list of int
        Encoder widths; the decoder mirrors them.
    device : str, default='cpu'
        ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``.

    Attributes
    ----------
    detector : VAEOutlierDetector
        The estimator doing the work (fitted by :meth:`fit`).
    threshold : float or None
        Raw score threshold used by :meth:`predict_anomaly` (set by
        :meth:`set_threshold` or by hand).

    Examples
    --------
    >>> from skvae.compat import VAE, create_synthetic_data
    >>> normal, anomalous = create_synthetic_data(n_samples=600, dim=4, anomaly_type="outlier")
    >>> model = VAE(input_dim=4, latent_dim=2, hidden_dims=[32, 16])
    >>> history = model.fit(normal[:400], normal[400:500], epochs=20, verbose=False)
    >>> sorted(k for k in history if k.startswith("val"))
    ['val_kl', 'val_loss', 'val_recon']
    >>> model.evaluate_anomaly_detection(normal[500:], anomalous)["roc_auc"] > 0.9
    True
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims, device: str = "cpu") -> None:
        super().__init__()
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.device = resolve_device(str(device))
        self.detector = VAEOutlierDetector(
            latent_dim=self.latent_dim,
            hidden_dims=tuple(self.hidden_dims),
            n_estimators=1,
            max_samples=1.0,
            trim_fraction=0.0,  # the old module fitted the plain ELBO to every row
            device=str(self.device),
            contamination=0.01,
        )
        self.net = VAEEnsemble(self.input_dim, self.latent_dim, self.hidden_dims)
        self.net.reset_parameters(torch.Generator().manual_seed(0))
        self.register_buffer("center", torch.zeros(self.input_dim, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(self.input_dim, dtype=torch.float64))
        # Compat scores are the detector's times this factor: 1, or input_dim for
        # old-format files (their score sums the squared error over features, the
        # detector's averages it). The detector itself stays in its own units.
        self._score_factor = 1.0
        self.to(self.device)

    # ------------------------------------------------------------------ torch side
    @property
    def threshold(self) -> float | None:
        offset = getattr(self.detector, "offset_", None)
        return None if offset is None else offset * self._score_factor

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        if value is None:
            for name in ("offset_", "threshold_"):
                self.detector.__dict__.pop(name, None)
            return
        self.detector.offset_ = float(value) / self._score_factor
        self.detector.threshold_ = -self.detector.offset_

    def _scale_in(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.net.parameters()).dtype
        return scale_tensor(
            x.to(self.device, dtype),
            self.center.to(dtype),
            self.scale.to(dtype),
            self.detector.scaling is not None,
        )

    def encoder(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x), as tensors."""
        x = torch.as_tensor(x)
        mu, logvar = self.net.encode(self._scale_in(x))
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return mu[0].to(dtype), logvar[0].to(dtype)

    def forward(self, x: torch.Tensor):
        """Encode, draw z (the posterior mean in eval mode), decode.

        Returns ``(recon, mu, logvar)``; ``recon`` is in the input's units.
        """
        x = torch.as_tensor(x)
        mu, logvar = self.net.encode(self._scale_in(x))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        mean, _ = self.net.decode(z)
        recon = mean[0] * self.scale.to(mean.dtype) + self.center.to(mean.dtype)
        return recon.to(x.dtype), mu[0].to(x.dtype), logvar[0].to(x.dtype)

    @staticmethod
    def loss_function(recon_x, x, mu, logvar, beta: float = 1.0):
        """Old loss: summed squared error plus ``beta`` times KL, per sample.

        Returns ``(total, recon, kl)`` tensors.
        """
        n = x.shape[0]
        recon = (recon_x - x).square().sum() / n
        kl = -0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp()) / n
        return recon + beta * kl, recon, kl

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train_data,
        val_data,
        test_data=None,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        beta: float = 1.0,
        patience: int = 15,
        verbose: bool = True,
    ) -> dict[str, list[float]]:
        """Train on ``train_data`` with early stopping on ``val_data``.

        The weights of the best validation epoch are restored, and the threshold is
        set on ``val_data`` (1 % flagged), as the old ``fit`` did.

        Returns
        -------
        history : dict of list of float
            ``train_*`` and ``val_*`` losses per epoch (``*_loss``, ``*_recon``,
            ``*_kl``; the reconstruction term is the Gaussian negative
            log-likelihood). With ``test_data``, ``test_loss``/``test_recon``/``test_kl``
            hold one value: the restored model on the test set (evaluated once, not
            per epoch, so the test set plays no part in training).
        """
        self.detector.set_params(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            beta=beta,
            patience=patience,
            verbose=int(bool(verbose)),
        )
        self.detector.fit(_as_numpy(train_data), validation_data=_as_numpy(val_data))
        self._adopt_detector()
        history = {k: list(v) for k, v in self.detector.history_.items()}
        if test_data is not None:
            x = torch.as_tensor(_as_numpy(test_data), device=self.device)
            with torch.inference_mode():
                z = self._scale_in(x)
                nll, kl = self.net.loss_terms(z, None)
            history["test_recon"] = [float(nll.mean())]
            history["test_kl"] = [float(kl.mean())]
            history["test_loss"] = [history["test_recon"][0] + beta * history["test_kl"][0]]
        self.set_threshold(val_data, anomaly_fraction=0.01)
        return history

    def _adopt_detector(self) -> None:
        det = self.detector
        self.net = det.module_
        self.center = torch.as_tensor(det.center_, dtype=torch.float64, device=self.device)
        self.scale = torch.as_tensor(det.scale_, dtype=torch.float64, device=self.device)
        self._score_factor = 1.0
        self.eval()

    # ------------------------------------------------------------------ scoring
    def score_samples(self, x, device=None):
        """Normality scores (higher = more normal) of ``x``.

        Numpy input gives a numpy array, a tensor gives a tensor on its device.
        ``device`` is accepted for old call sites (``score_samples(x, device)``)
        and otherwise unused.
        """
        if not hasattr(self.detector, "module_"):
            raise ValueError("The model is not trained: call fit() or load_model() first.")
        scores = self.detector.score_samples(x)
        return scores * self._score_factor if self._score_factor != 1.0 else scores

    def set_threshold(self, val_data, anomaly_fraction: float = 0.01) -> float:
        """Set the threshold at the ``anomaly_fraction`` quantile of ``val_data``'s scores."""
        scores = _as_numpy(self.score_samples(_as_numpy(val_data)))
        self.threshold = float(np.quantile(scores, anomaly_fraction))
        return self.threshold

    def predict_anomaly(self, x):
        """True where a sample scores below the threshold (numpy or torch like ``x``)."""
        if self.threshold is None:
            raise ValueError("Threshold not set. Call set_threshold() first.")
        return self.score_samples(x) < self.threshold

    def predict(self, X) -> np.ndarray:
        """+1 for normal samples, -1 for anomalies."""
        if self.threshold is None:
            raise ValueError("Threshold not set. Call set_threshold() first.")
        scores = _as_numpy(self.score_samples(_as_numpy(X)))
        return np.where(scores >= self.threshold, 1, -1)

    def sample(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` new points in input space, as a float32 tensor."""
        with torch.inference_mode():
            z = torch.randn(num_samples, self.latent_dim, device=self.device)
            z = z.to(next(self.net.parameters()).dtype).unsqueeze(0)
            mean, _ = self.net.decode(z)
            out = mean[0] * self.scale.to(mean.dtype) + self.center.to(mean.dtype)
        return out.float()

    def evaluate_anomaly_detection(self, normal_data, anomaly_data, plot: bool = False) -> dict:
        """ROC AUC, accuracy at the threshold and score statistics per class."""
        if self.threshold is None:
            self.threshold = float(
                np.quantile(_as_numpy(self.score_samples(_as_numpy(normal_data))), 0.01)
            )
        result = _evaluate(
            self.detector, _as_numpy(normal_data), _as_numpy(anomaly_data), plot=plot
        ).to_dict()
        for key in (
            "normal_score_mean",
            "normal_score_std",
            "anomaly_score_mean",
            "anomaly_score_std",
            "threshold",
        ):
            result[key] *= self._score_factor  # in this model's score units
        return result

    # ------------------------------------------------------------------ persistence
    def save_model(self, save_path: str, train_data) -> None:
        """Write ``<save_path>_model.pth`` (state dict) and ``<save_path>_meta_data.pkl``.

        The metadata holds ``thr`` in normalised units, ``mean``/``std`` of the scores
        of ``train_data``, threshold candidates and the architecture.
        """
        directory = os.path.dirname(save_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        torch.save(self.state_dict(), f"{save_path}_model.pth")
        scores = _as_numpy(self.score_samples(_as_numpy(train_data)))
        mean, std = float(scores.mean()), float(scores.std()) or 1.0
        threshold = self.threshold
        meta = {
            "format": FORMAT,
            "skvae_version": __version__,
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "device": str(self.device),
            "network": dict(self.net.config),
            "detector_params": self.detector.get_params(),
            "threshold": threshold,
            "thr": None if threshold is None else (threshold - mean) / std,
            "mean": mean,
            "std": std,
            "threshold_candidates": {
                f"p{p:g}": (float(np.percentile(scores, p)) - mean) / std
                for p in THRESHOLD_PERCENTILES
            },
        }
        with open(f"{save_path}_meta_data.pkl", "wb") as f:
            pickle.dump(meta, f)

    @classmethod
    def load_model(cls, save_path: str, hidden_dims=None, device=None) -> dict[str, Any]:
        """Load a model saved by :meth:`save_model` or by the old module.

        Returns
        -------
        model_dict : dict
            ``model`` (a :class:`VAE`), ``thr`` (threshold in normalised units),
            ``mean`` and ``std`` (of the training scores) and ``threshold_candidates``
            (normalised; empty for old files, which did not store them).
        """
        meta_file = Path(f"{save_path}_meta_data.pkl")
        weights_file = Path(f"{save_path}_model.pth")
        for file in (meta_file, weights_file):
            if not file.is_file():
                raise FileNotFoundError(f"Model file not found: {file}")
        with open(meta_file, "rb") as f:  # the old format is a pickle: trusted files only
            meta = pickle.load(f)
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        hidden = hidden_dims if hidden_dims is not None else meta.get("hidden_dims")
        if hidden is None:
            raise ValueError(
                f"{meta_file} does not store hidden_dims (an old-format file): pass "
                "hidden_dims= as used in training."
            )
        if device is None:
            device = meta.get("device", "cpu")
            if str(device).startswith("cuda") and not torch.cuda.is_available():
                device = "cpu"
        model = cls(meta["input_dim"], meta["latent_dim"], hidden, device=str(device))
        legacy = meta.get("format") != FORMAT
        if legacy:
            net_state, candidates = _convert_legacy_state(state, len(hidden)), {}
            model._score_factor = float(model.input_dim)
        else:
            net_state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
            model.net = VAEEnsemble(**meta["network"])
            model.detector.set_params(**meta["detector_params"])
            candidates = meta.get("threshold_candidates", {})
            model.center = state["center"]
            model.scale = state["scale"]
        try:
            model.net.load_state_dict(net_state)
        except RuntimeError as exc:
            raise ValueError(
                f"{weights_file} does not match input_dim={meta['input_dim']}, "
                f"latent_dim={meta['latent_dim']}, hidden_dims={list(hidden)}: {exc}"
            ) from exc
        if legacy:
            model.detector.set_params(score_type="reconstruction", scaling=None)
        model._install_fitted(model.device)
        model.threshold = meta.get("threshold")
        mean, std = float(meta["mean"]), float(meta["std"]) or 1.0
        model.detector.score_mean_ = mean / model._score_factor
        model.detector.score_std_ = std / model._score_factor
        thr = meta.get("thr")
        if thr is None and meta.get("threshold") is not None:
            thr = (float(meta["threshold"]) - mean) / std  # old files stored it raw
        return {
            "model": model,
            "thr": thr,
            "mean": mean,
            "std": std,
            "threshold_candidates": candidates,
        }

    def _install_fitted(self, device: torch.device) -> None:
        """Make ``detector`` a fitted estimator around ``net`` (after loading)."""
        det = self.detector
        self.net.eval()
        self.net.to(device, scoring_dtype(device, det.precision))
        det.module_ = self.net
        det.device_ = device
        det.center_ = self.center.cpu().numpy().astype(np.float64)
        det.scale_ = self.scale.cpu().numpy().astype(np.float64)
        det.n_features_in_ = self.input_dim
        det.latent_dim_ = self.latent_dim
        det.hidden_dims_ = tuple(self.hidden_dims)
        self.center = self.center.to(device)
        self.scale = self.scale.to(device)
        self.eval()


def _convert_legacy_state(state: dict[str, torch.Tensor], n_hidden: int) -> dict:
    """Map the old module's state dict (``encoder.encoder.0.weight``, ``encoder.fc_mu``,
    ``decoder.decoder.N``) onto a one-member :class:`VAEEnsemble`."""
    out = {}
    try:
        for i in range(n_hidden):
            out[f"encoder_layers.{i}.weight"] = state[f"encoder.encoder.{2 * i}.weight"].T[None]
            out[f"encoder_layers.{i}.bias"] = state[f"encoder.encoder.{2 * i}.bias"][None, None]
            out[f"decoder_layers.{i}.weight"] = state[f"decoder.decoder.{2 * i}.weight"].T[None]
            out[f"decoder_layers.{i}.bias"] = state[f"decoder.decoder.{2 * i}.bias"][None, None]
        w = torch.cat([state["encoder.fc_mu.weight"], state["encoder.fc_logvar.weight"]])
        b = torch.cat([state["encoder.fc_mu.bias"], state["encoder.fc_logvar.bias"]])
        out["encoder_head.weight"], out["encoder_head.bias"] = w.T[None], b[None, None]
        last = 2 * n_hidden
        out["decoder_head.weight"] = state[f"decoder.decoder.{last}.weight"].T[None]
        out["decoder_head.bias"] = state[f"decoder.decoder.{last}.bias"][None, None]
    except KeyError as exc:
        raise ValueError(f"Not a state dict of the old VAE layout: missing {exc}") from exc
    n_features = out["decoder_head.bias"].shape[-1]
    latent = out["encoder_head.bias"].shape[-1] // 2
    # The old decoder had no variance (MSE loss): a unit variance, fixed.
    out["decoder_logvar"] = torch.zeros(1, 1, n_features)
    out["score_noise"] = torch.zeros(1, 1, 1, latent)
    return out


def create_synthetic_data(n_samples: int = 2000, dim: int = 5, anomaly_type: str = "outlier"):
    """Old ``create_synthetic_data``: normal and anomalous samples as tensors.

    Parameters
    ----------
    n_samples : int, default=2000
        Number of normal samples; ``n_samples // 10`` anomalies are added.
    dim : int, default=5
        Number of features.
    anomaly_type : {'outlier', 'cluster', 'local', 'noise'}, default='outlier'
        Kind of anomaly (see :func:`skvae.make_synthetic`).

    Returns
    -------
    normal_data, anomaly_data : torch.Tensor
        float32 tensors of shape (n_samples, dim) and (n_samples // 10, dim).

    Examples
    --------
    >>> normal, anomalous = create_synthetic_data(100, 3, "cluster")
    >>> tuple(normal.shape), tuple(anomalous.shape)
    ((100, 3), (10, 3))
    """
    n_anomaly = max(1, n_samples // 10)
    X, y = make_synthetic(
        n_samples + n_anomaly,
        dim,
        anomaly_type=anomaly_type,
        anomaly_fraction=n_anomaly / (n_samples + n_anomaly),
        random_state=0,
    )
    X = torch.as_tensor(X, dtype=torch.float32)
    return X[y == 0], X[y == 1]


def load_rl_data_for_vae(
    args, env=None, val_split_ratio: float = 0.2, test_split_ratio: float = 0.2
):
    """Old ``load_rl_data_for_vae``: ``[next_observations, actions]`` splits in time order.

    Parameters
    ----------
    args : object
        Carries ``data_path`` and/or ``task`` (e.g. an ``argparse.Namespace``).
    env : object, optional
        A D4RL environment; its ``get_dataset()`` is used when given.
    val_split_ratio, test_split_ratio : float, default=0.2
        Fractions of transitions for validation and test (whole episodes).

    Returns
    -------
    train, val, test : torch.Tensor
        float32 features, whole episodes in time order.
    input_dim : int
        Number of features.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from types import SimpleNamespace
    >>> f = os.path.join(tempfile.mkdtemp(), "t.npz")
    >>> np.savez(f, observations=np.zeros((10, 2)), actions=np.zeros((10, 1)),
    ...          next_observations=np.ones((10, 2)), terminals=np.arange(10) % 5 == 4)
    >>> train, val, test, dim = load_rl_data_for_vae(SimpleNamespace(data_path=f, task=None))
    >>> dim, len(train) + len(val) + len(test)
    (3, 10)
    """
    from .datasets import _check_transitions, load_dataset, make_features, split_indices

    if env is not None and hasattr(env, "get_dataset"):
        data = _check_transitions(dict(env.get_dataset()), "env.get_dataset()")
    else:
        task = getattr(args, "task", None)
        data_path = getattr(args, "data_path", None)
        if data_path is not None and (task in (None, "custom", "abiomed")):
            task = None
        data = load_dataset(task=task, data_path=data_path)
    X = torch.as_tensor(make_features(data, "next_obs_action"))
    train, val, test = split_indices(data, val_split_ratio, test_split_ratio, shuffle=False)
    return X[train], X[val], X[test], int(X.shape[1])
