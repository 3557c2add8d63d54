"""The API of the old ``vae_module`` (GORMPO) on skvae's engine.

Code written against ``vae_module.vae`` switches by changing one import line::

    # from vae_module.vae import VAE, create_synthetic_data, load_rl_data_for_vae
    from skvae.compat import VAE, create_synthetic_data, load_rl_data_for_vae

:class:`VAE` is a thin layer over :class:`skvae.VAEOutlierDetector` (one VAE trained on
all rows) and :mod:`skvae.datasets`; there is no second training loop, no second model
file format and no second threshold convention. Where the old module had bugs, this
layer behaves correctly:

- scores are deterministic (posterior mean, no fresh latent sample per call);
- early stopping restores the weights of the best validation epoch;
- ``predict`` works on numpy input (the old one called ``.cpu()`` on a numpy array);
- ``load_model`` returns ``thr`` in the same normalised units as
  ``(score_samples(x) - mean) / std``, and ``mean``/``std`` of the training scores, so
  the downstream comparison ``thr - s`` is meaningful (the old ``thr`` was raw).

The score keeps its old meaning, so tuned penalty coefficients keep theirs: minus the
summed squared reconstruction error in the input's units, now deterministic (the
posterior mean is decoded), ``score_type='squared_error'``. The ELBO separates
in-distribution from out-of-distribution transitions better; it is one argument away:
``VAE(input_dim, latent_dim, hidden_dims, score_type="elbo")`` (the migration guide
shows the measured difference).

``save_model`` writes the model to ``<save_path>.skvae`` and, beside it, the old
module's metadata as plain data in ``<save_path>_meta_data.pkl`` (scripts such as
GORMPO's ``--compute_thresholds_only`` edit it); ``load_model`` reads the model file,
every other file :func:`skvae.load` reads, and the old module's
``<save_path>_model.pth`` + ``<save_path>_meta_data.pkl`` pair. Threshold and candidates
come from the validation rows, ``mean`` and ``std`` from the training rows, as in
``skvae train``. A retrained model keeps an old model's penalty scale with
:meth:`VAE.match_penalty_scale`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._device import resolve_device
from ._estimator import VAEOutlierDetector, load
from ._inputs import finite_number
from ._network import VAEEnsemble
from ._persistence import (
    MAX_OFFSET_STDS,
    atomic_write,
    check_candidates,
    model_path,
    write_vae_module_metadata,
)
from ._scaling import scaling_for
from ._thresholds import heldout_statistics, normalize, offset_from_scores, safe_std
from .datasets import _check_transitions, episode_ids, load_dataset, make_features, split_indices
from .evaluation import evaluate_anomaly_detection as _evaluate
from .evaluation import make_synthetic
from .plotting import plot_training_history


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class _class_or_instance_method:
    """A method bound to the instance when called on one, else to the class (the old
    ``load_model`` was called both ways)."""

    def __init__(self, func) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __get__(self, obj, cls):
        return functools.partial(self.func, cls if obj is None else obj)


class VAE(nn.Module):
    """The old ``vae_module.vae.VAE``, backed by :class:`skvae.VAEOutlierDetector`.

    Parameters
    ----------
    input_dim : int, default=2
        Number of features.
    latent_dim : int, default=16
        Size of the latent space.
    hidden_dims : list of int, default=[256, 256]
        Encoder widths; the decoder mirrors them.
    device : str, default='cpu'
        ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``.
    score_type : str, default='squared_error'
        The detector's score: the old module's (minus the summed squared reconstruction
        error, in input units) or ``'elbo'`` (a log-likelihood bound on the robustly
        scaled inputs, which separates out-of-distribution rows better).

    Attributes
    ----------
    detector : VAEOutlierDetector
        The estimator doing the work (fitted by :meth:`fit` or :meth:`load_model`).
    net : torch.nn.Module
        Its network (:class:`skvae._network.VAEEnsemble`, one member).
    threshold : float or None
        The detector's ``offset_`` (score units) used by :meth:`predict_anomaly`; set by
        :meth:`set_threshold` or by hand.

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

    def __init__(
        self,
        input_dim: int = 2,
        latent_dim: int = 16,
        hidden_dims=(256, 256),
        device="cpu",
        score_type: str = "squared_error",
    ) -> None:
        super().__init__()
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = [int(h) for h in hidden_dims]
        if self.input_dim < 1 or self.latent_dim < 1 or not self.hidden_dims:
            raise ValueError(
                "input_dim and latent_dim must be positive and hidden_dims non-empty; got "
                f"{input_dim}, {latent_dim}, {list(hidden_dims)}."
            )
        self.device = resolve_device(str(device))
        self.detector = VAEOutlierDetector(
            latent_dim=self.latent_dim,
            hidden_dims=tuple(self.hidden_dims),
            n_estimators=1,
            max_samples=1.0,
            trim_fraction=0.0,  # the old module fitted the plain ELBO to every row
            decoder_df=None,  # with a Gaussian decoder
            device=str(self.device),
            contamination=0.01,
            score_type=score_type,
            # the old score is in the input's units; the ELBO gets skvae's robust scaling
            scaling=scaling_for(score_type),
        )
        self.detector._validate_params()
        self.net = VAEEnsemble(
            self.input_dim,
            self.latent_dim,
            self.hidden_dims,
            clip=self.detector.scaling is not None,
        )
        self.net.reset_parameters(torch.Generator().manual_seed(0))
        self.to(self.device)
        self._heldout_scores: np.ndarray | None = None  # scored by set_threshold
        self._penalty_scale_from: str | None = None  # set by match_penalty_scale

    # ------------------------------------------------------------------ torch side
    @property
    def threshold(self) -> float | None:
        return getattr(self.detector, "offset_", None)

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        if value is not None:
            self._require_fitted()
        self.detector._set_offset(None if value is None else float(value))

    def _require_fitted(self) -> None:
        if not hasattr(self.detector, "module_"):
            raise ValueError("The model is not trained: call fit() or load_model() first.")

    def _scale_in(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        return self.net.scale_input(x.to(self.device, next(self.net.parameters()).dtype))

    def encoder(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x), as tensors."""
        x = torch.as_tensor(x)
        mu, logvar = self.net.posterior(self._scale_in(x))
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return mu[0].to(dtype), logvar[0].to(dtype)

    def decoder(self, z) -> torch.Tensor:
        """Decoder mean of latent codes ``z``, in the input's units."""
        z = torch.as_tensor(z)
        dtype = z.dtype if z.is_floating_point() else torch.float32
        mean, _ = self.net.decode(z.to(self.device, next(self.net.parameters()).dtype)[None])
        return self.net.unscale_output(mean[0]).to(dtype)

    def forward(self, x: torch.Tensor):
        """Encode, draw z (the posterior mean in eval mode), decode.

        Returns ``(recon, mu, logvar)``; ``recon`` is in the input's units.
        """
        x = torch.as_tensor(x)
        mu, logvar = self.net.posterior(self._scale_in(x))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        mean, _ = self.net.decode(z)
        recon = self.net.unscale_output(mean[0])
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
            ``train_*`` and ``val_*`` losses (``*_loss``, ``*_recon``, ``*_kl``; the
            reconstruction term is the Gaussian negative log-likelihood) at each check,
            and ``epoch``, the epoch each check ran after: every epoch when an epoch
            has at least 20 batches, as on offline-RL datasets, else every few
            epochs. With ``test_data``, ``test_loss``/``test_recon``/``test_kl`` hold
            one value: the restored model on the test set (evaluated once, not per
            epoch, so the test set plays no part in training).

        Raises
        ------
        ValueError
            If ``train_data`` or ``val_data`` has another number of features than
            ``input_dim`` (the old module refused such data too), or is otherwise
            invalid.
        """
        train_data, val_data = _as_numpy(train_data), _as_numpy(val_data)
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if len(data) == 0:
                raise ValueError(
                    f"{name} has no rows (load_rl_data_for_vae splits whole episodes, so a "
                    "dataset of few episodes, such as one without terminals or timeouts, "
                    "can leave a split empty)"
                )
            if data.ndim == 2 and data.shape[1] != self.input_dim:
                # the old module's first layer refused such data; training on it anyway
                # would hide a wrong feature layout (states without actions, ...)
                raise ValueError(
                    f"{name} has {data.shape[1]} features, but this VAE was built with "
                    f"input_dim={self.input_dim}"
                )
        self.detector.set_params(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            beta=beta,
            patience=patience,
            verbose=int(bool(verbose)),
        )
        self.detector.fit(train_data, validation_data=val_data)
        self._adopt(self.detector)
        self._penalty_scale_from = None
        history = {k: list(v) for k, v in self.detector.history_.items()}
        if test_data is not None:
            with torch.inference_mode():
                nll, kl = self.net.loss_terms(self._scale_in(_as_numpy(test_data)), None)
            history["test_recon"] = [float(nll.mean())]
            history["test_kl"] = [float(kl.mean())]
            history["test_loss"] = [history["test_recon"][0] + beta * history["test_kl"][0]]
        self.set_threshold(val_data, anomaly_fraction=0.01)
        return history

    def _adopt(self, detector: VAEOutlierDetector) -> None:
        """Use a fitted detector (after fit or load): its network becomes ``net``."""
        self.detector = detector
        self.net = detector.module_
        self.device = detector.device_
        self.input_dim = int(detector.n_features_in_)
        self.latent_dim = int(detector.latent_dim_)
        self.hidden_dims = list(detector.hidden_dims_)
        self.eval()

    # ------------------------------------------------------------------ scoring
    def score_samples(self, x, device=None):
        """Normality scores (higher = more normal) of ``x``.

        Numpy input gives a numpy array, a tensor gives a tensor on its device.
        ``device`` is accepted for old call sites (``score_samples(x, device)``)
        and otherwise unused.
        """
        self._require_fitted()
        return self.detector.score_samples(x)

    def set_threshold(self, val_data, anomaly_fraction: float = 0.01) -> float:
        """Set the threshold at the ``anomaly_fraction`` quantile of ``val_data``'s scores.

        :meth:`save_model` takes the threshold candidates from the same rows (the one
        rule of :func:`skvae._thresholds.heldout_statistics`, which ``skvae train``
        follows too).
        """
        scores = _as_numpy(self.score_samples(_as_numpy(val_data))).astype(np.float64)
        self.threshold = offset_from_scores(scores, anomaly_fraction)
        self._heldout_scores = scores
        return self.threshold

    def refresh_thresholds(self, val_data, anomaly_fraction: float = 0.01) -> dict[str, Any]:
        """Recompute ``thr``, ``mean``, ``std`` and the threshold candidates together
        from the (deterministic) scores of ``val_data``, and return them as
        :meth:`load_model` does.

        For files of the old module, whose stored values came from stochastic scores:
        ``d = d["model"].refresh_thresholds(val_data)``.
        """
        scores = _as_numpy(self.score_samples(_as_numpy(val_data))).astype(np.float64)
        offset, mean, std, self.threshold_candidates = heldout_statistics(
            scores, scores, anomaly_fraction
        )
        self.detector._set_offset(offset, score_mean=mean, score_std=std)
        self._heldout_scores = scores
        self._penalty_scale_from = None
        return self._model_dict()

    def _model_dict(self) -> dict[str, Any]:
        det = self.detector
        mean, std = det.score_mean_, det.score_std_
        return {
            "model": self,
            "thr": float(normalize(det.offset_, mean, std)),
            "mean": mean,
            "std": std,
            "threshold_candidates": dict(getattr(self, "threshold_candidates", {})),
        }

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
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}.")
        with torch.inference_mode():
            z = torch.randn(num_samples, self.latent_dim, device=self.device)
            z = z.to(next(self.net.parameters()).dtype).unsqueeze(0)
            mean, _ = self.net.decode(z)
            out = self.net.unscale_output(mean[0])
        return out.float()

    def evaluate_anomaly_detection(self, normal_data, anomaly_data, plot: bool = False) -> dict:
        """ROC AUC, accuracy at the threshold and score statistics per class."""
        if self.threshold is None:
            self.set_threshold(normal_data, anomaly_fraction=0.01)
        return _evaluate(
            self.detector, _as_numpy(normal_data), _as_numpy(anomaly_data), plot=plot
        ).to_dict()

    # ------------------------------------------------------------------ persistence
    def save_model(self, save_path: str, train_data) -> Path:
        """Write ``<save_path>.skvae``: the model, its threshold, the mean and standard
        deviation of the scores of ``train_data``, and threshold candidates.

        The threshold and the candidates come from the rows :meth:`set_threshold` (which
        :meth:`fit` calls on ``val_data``) scored, else from ``train_data``: the rule
        ``skvae train`` follows too. After :meth:`match_penalty_scale` the matched
        statistics are written instead. Beside the model file,
        ``<save_path>_meta_data.pkl`` holds the old module's metadata as plain data
        (threshold, mean, std, dimensions, candidates in score units) for scripts that
        read or edit it, as GORMPO's ``--compute_thresholds_only`` does; candidates
        edited there are read back by :meth:`load_model` and :func:`skvae.load`. Both
        file names are printed, as the old ``save_model`` printed its two.

        :meth:`load_model`, :func:`skvae.load` and ``skvae score`` read the file.

        Returns
        -------
        path : pathlib.Path
            The ``.skvae`` file written.
        """
        self._require_fitted()
        det = self.detector
        scores = _as_numpy(self.score_samples(_as_numpy(train_data))).astype(np.float64)
        if self._penalty_scale_from is None:
            _, mean, std, candidates = heldout_statistics(scores, self._heldout_scores, 0.01)
        else:
            mean, std = det.score_mean_, det.score_std_
            candidates = dict(self.threshold_candidates)
        det._set_fitted(
            det.module_,
            det.device_,
            train_scores=scores,
            history=det.history_,
            n_epochs=det.n_epochs_,
            best_epoch=det.best_epoch_,
            offset=det.offset_,
            score_mean=mean,
            score_std=std,
            calibration_scores=det.calibration_scores_,
            calibration_source=det.calibration_source_,
        )
        self.threshold_candidates = candidates
        info = {"threshold_candidates": candidates, "written_by": "skvae.compat.VAE.save_model"}
        if self._penalty_scale_from is not None:
            info["penalty_scale_from"] = self._penalty_scale_from
        file = det.save(model_path(save_path), info=info)
        meta = write_vae_module_metadata(
            file,
            {
                "threshold": det.offset_,
                "mean": det.score_mean_,
                "std": det.score_std_,
                "input_dim": self.input_dim,
                "latent_dim": self.latent_dim,
                "hidden_dims": list(self.hidden_dims),
                "device": str(self.device),
            },
            candidates,
        )
        print(f"Model saved to: {file}")
        print(f"Metadata saved to: {meta}")
        return file

    def match_penalty_scale(self, reference) -> dict[str, Any]:
        """Normalise this model's scores with another model's ``thr``, ``mean``,
        ``std`` and threshold candidates, so that its penalties keep that model's scale.

        For a model retrained through ``skvae.compat`` where reward-penalty
        coefficients were tuned against an old ``vae_module`` model: both score in the
        same units (minus the summed squared reconstruction error of the input), so a
        transition explained as well as before gets the penalty it got before; what the
        retrained model explains better or worse moves its penalty accordingly. In the
        RL trainer, one line after ``load_model``::

            classifier_dict = classifier_dict["model"].match_penalty_scale("models/old_vae")

        (``docs/migration.md`` has the measured effect). :meth:`save_model` then writes
        the matched statistics; :meth:`refresh_thresholds` undoes the match.

        Parameters
        ----------
        reference : str, path-like or dict
            Any model file :func:`skvae.load` reads (the old pair's stem included), or
            the dict :meth:`load_model` returned for it. Its score must be this
            model's score type and its number of features this model's.

        Returns
        -------
        model_dict : dict
            As :meth:`load_model` returns it: ``model`` (this model), ``thr``,
            ``mean``, ``std`` and ``threshold_candidates``, the reference's.
        """
        self._require_fitted()
        if isinstance(reference, dict):
            ref = getattr(reference.get("model"), "detector", None)
            if ref is None:
                raise TypeError("reference must be a model file or a load_model() dict.")
            name = "the dict"
            missing = [k for k in ("thr", "mean", "std") if k not in reference]
            if missing:
                raise ValueError(f"reference dict lacks {missing}: pass what load_model returned")
            thr, mean, std = (
                finite_number(reference[k], f"reference[{k!r}]") for k in ("thr", "mean", "std")
            )
            if std < 0:
                raise ValueError(f"reference['std'] must be >= 0; got {std}")
            if abs(thr) > MAX_OFFSET_STDS:
                raise ValueError(
                    f"reference['thr'] lies more than {MAX_OFFSET_STDS:g} standard deviations "
                    "from the mean score"
                )
            candidates = check_candidates(
                reference.get("threshold_candidates") or {}, "reference dict"
            )
            offset = thr * safe_std(std) + mean
            if not math.isfinite(offset):
                raise ValueError("reference thr, mean and std give no finite threshold")
        else:
            with warnings.catch_warnings():  # an old file's stochastic statistics are the point
                warnings.simplefilter("ignore", UserWarning)
                ref, info = load(reference, device="cpu", return_info=True)
            candidates, name = dict(info.get("threshold_candidates", {})), str(reference)
            offset, mean, std = ref.offset_, ref.score_mean_, ref.score_std_
        if ref.score_type != self.detector.score_type:
            raise ValueError(
                f"{name} scores with score_type={ref.score_type!r} and this model with "
                f"{self.detector.score_type!r}: their units differ, so its statistics "
                "cannot keep this model's penalty scale"
            )
        if ref.n_features_in_ != self.detector.n_features_in_:
            raise ValueError(
                f"{name} has {ref.n_features_in_} features and this model "
                f"{self.detector.n_features_in_}"
            )
        self.detector._set_offset(float(offset), score_mean=float(mean), score_std=float(std))
        self.threshold_candidates = candidates
        self._penalty_scale_from = name
        return self._model_dict()

    @_class_or_instance_method
    def load_model(self_or_cls, save_path: str, hidden_dims=None, device=None) -> dict[str, Any]:
        """Load any model file skvae reads (called on the class or on an instance).

        Reads ``<save_path>.skvae`` (from :meth:`save_model`, :func:`skvae.save` or
        ``skvae train``), a ``.skvae`` path, or the old pair ``<save_path>_model.pth`` +
        ``<save_path>_meta_data.pkl``; ``hidden_dims`` is needed only for the old
        module's files, which did not store them. Called on an instance, the
        instance's device is the default.

        Returns
        -------
        model_dict : dict
            ``model`` (a :class:`VAE`), ``thr`` (threshold in normalised units),
            ``mean`` and ``std`` (of the training scores) and ``threshold_candidates``
            (``{percentile: thr}`` with integer keys, in the same units as ``thr``).
        """
        cls = self_or_cls if isinstance(self_or_cls, type) else type(self_or_cls)
        if device is None and not isinstance(self_or_cls, type):
            device = str(self_or_cls.device)
        detector, info = load(save_path, device=device, hidden_dims=hidden_dims, return_info=True)
        if info.get("stochastic_statistics"):
            warnings.warn(
                f"{save_path}: thr, mean and std of this old vae_module file were computed "
                "from stochastic scores; call refresh_thresholds(val_data) on the loaded "
                "model to recompute them with deterministic ones.",
                UserWarning,
                stacklevel=3,
            )
        model = cls(
            detector.n_features_in_,
            detector.latent_dim_,
            list(detector.hidden_dims_),
            device=str(detector.device_),
        )
        model._adopt(detector)
        model.threshold_candidates = dict(info.get("threshold_candidates", {}))
        return model._model_dict()


def create_synthetic_data(
    n_samples: int = 2000, dim: int = 5, anomaly_type: str = "outlier", magn: float = 3.0
):
    """Old ``create_synthetic_data``: normal and anomalous samples as tensors.

    Parameters
    ----------
    n_samples : int, default=2000
        Number of normal samples; ``n_samples // 10`` anomalies are added.
    dim : int, default=5
        Number of features.
    anomaly_type : {'outlier', 'cluster', 'local', 'noise'}, default='outlier'
        Kind of anomaly (see :func:`skvae.make_synthetic`).
    magn : float, default=3.0
        How far out the anomalies lie (``magnitude`` of :func:`skvae.make_synthetic`).

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
        magnitude=magn,
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
    ...          next_observations=np.ones((10, 2)), terminals=np.arange(10) % 2 == 1)
    >>> train, val, test, dim = load_rl_data_for_vae(SimpleNamespace(data_path=f, task=None))
    >>> dim, len(train), len(val), len(test)
    (3, 6, 2, 2)
    """
    if env is not None and hasattr(env, "get_dataset"):
        data = _check_transitions(dict(env.get_dataset()), "env.get_dataset()")
    else:  # a data_path is the data; a task alone names a D4RL or Minari dataset
        data = load_dataset(
            task=getattr(args, "task", None), data_path=getattr(args, "data_path", None)
        )
    X = torch.as_tensor(make_features(data, "next_obs_action"))
    train, val, test = split_indices(data, val_split_ratio, test_split_ratio, shuffle=False)
    empty = [
        name
        for name, rows, ratio in (("val", val, val_split_ratio), ("test", test, test_split_ratio))
        if ratio > 0 and len(rows) == 0
    ]
    if empty:
        warnings.warn(
            f"the {' and '.join(empty)} split(s) are empty: the data has "
            f"{len(np.unique(episode_ids(data)))} episode(s), and splits take whole "
            "episodes (terminals and timeouts mark where an episode ends)",
            UserWarning,
            stacklevel=2,
        )
    return X[train], X[val], X[test], int(X.shape[1])


def plot_training_curves(history: dict, save_path: str | os.PathLike | None = None):
    """Old ``plot_training_curves``: training and validation losses over the epochs.

    Parameters
    ----------
    history : dict
        What :meth:`VAE.fit` returned (or a detector's ``history_``).
    save_path : path-like, optional
        Write the figure there (PNG); the folder is created.

    Returns
    -------
    fig : matplotlib Figure
        The figure (needs matplotlib: ``pip install 'skvae[plot]'``).

    Examples
    --------
    >>> fig = plot_training_curves({"train_loss": [3.0, 2.0], "val_loss": [3.1, 2.5]})
    >>> fig.axes[0].get_xlabel()
    'epoch'
    """
    history = {k: v for k, v in history.items() if not k.startswith("test_")}
    ax = plot_training_history(history)
    fig = ax.figure
    if save_path is not None:  # written atomically, as every skvae writer does
        atomic_write(save_path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    return fig
