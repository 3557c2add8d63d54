"""The scikit-learn estimator: :class:`VAEOutlierDetector`."""

from __future__ import annotations

import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import resolve_device, scoring_dtype, torch_threads
from ._inputs import (
    blank_rows,
    check_out_of_core,
    check_tensor,
    check_values,
    gather_rows,
    is_dense,
    is_out_of_core,
    short_repr,
)
from ._network import (
    MAX_DECODER_DF,
    MAX_NETWORK,
    MAX_PARAMETERS,
    SCORE_TYPES,
    VAEEnsemble,
    chunk_rows,
    forward_rows,
    n_parameters,
    rebuild,
)
from ._persistence import FORMAT_VERSION, Fitted, ModelRecord, locate, read_model, write_model
from ._scaling import fit_scaling, to_float32
from ._thresholds import (
    conformal_offset,
    conformal_pvalues,
    offset_from_scores,
    threshold_candidates,
)
from ._training import Schedule, train

# NaN is a missing value (scored on the observed values); infinity is an error.
ALLOW_NAN = "allow-nan"
# Rows each member trains on when ``max_samples='auto'``.
AUTO_MAX_SAMPLES = 128
# Attributes that input validation sets at the start of fit.
_INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_")
# Held-out rows the validation loss is computed on, at most (a fixed random subset).
MAX_VALIDATION_ROWS = 1024
# Out-of-bag rows (trained on by no member) preferred for calibrating p-values, at least.
MIN_OUT_OF_BAG = 50
# Memory one call of ``sample`` may ask for (every member decodes every draw).
MAX_SAMPLE_BYTES = 2**31
# Calibration scores kept, at most (a random subset keeps them exchangeable; p-values
# then resolve 1e-5, and the model file stays small for large data).
MAX_CALIBRATION_ROWS = 100_000


def default_latent_dim(n_features: int) -> int:
    """Latent size used when ``latent_dim=None``: a quarter of the features, in [2, 16]."""
    if n_features < 2:
        return 1
    return int(np.clip(n_features // 4, 2, 16))


def default_hidden_dims(n_features: int) -> tuple[int, int]:
    """Hidden sizes used when ``hidden_dims=None``: ``(64, 32)`` whatever the number of
    features.

    The latent size (at most 16) bounds what the network can represent, and each member
    trains on 128 rows by default, so a first layer wider than 64 adds parameters (and
    cost that grows with the features) rather than capacity the data can fill: on the
    two wide benchmark sets, widths up to 256 (the rule before 0.3) ranked the same
    and fitted 2.6x slower (benchmarks/RESULTS.md, "The default fit against
    IsolationForest over shapes").
    """
    return 64, 32


class VAEOutlierDetector(OutlierMixin, BaseEstimator):
    """Outlier detector scoring samples with a variational autoencoder (VAE).

    A VAE (or a small ensemble of VAEs trained on subsamples, like the trees of an
    isolation forest) is fitted to the training data; samples the model explains badly
    get low scores. The network is a PyTorch module trained on the CPU or a CUDA device.

    Parameters
    ----------
    latent_dim : int or None, default=None
        Size of the latent space. ``None`` uses a quarter of the number of features,
        clipped to [2, 16] (1 for a single feature).
    hidden_dims : tuple of int or None, default=None
        Widths of the encoder's hidden layers; the decoder mirrors them. ``None`` uses
        ``(64, 32)`` for any number of features.
    beta : float, default=1.0
        Weight of the KL term in the training loss (1 is a VAE, > 1 a beta-VAE).
    trim_fraction : float in [0, 0.5), default=0.1
        Fraction of each member's training rows left out of the training loss (a
        trimmed ELBO, as in least trimmed squares): until the first check of the
        losses (after 20 steps), the rows of each batch with the highest loss in that
        step; from then on, for good, the rows with the highest loss at that check (a
        concentration step, as in MCD), so that copies of an outlier, once learned,
        do not come back in. Keeps outliers in contaminated training data from being
        learned as normal. ``0`` trains on the plain ELBO.
    epochs : int or 'auto', default='auto'
        Passes over each member's training rows. ``'auto'`` runs enough epochs for
        about 100 optimisation steps (one step an epoch with the default 128-row
        subsamples).
    batch_size : int, default=128
        Rows per optimisation step and member.
    lr : float, default=1e-2
        Learning rate of the Adam optimiser.
    weight_decay : float, default=0.0
        L2 penalty of the Adam optimiser.
    validation_fraction : float in [0, 1), default=0.1
        Fraction of the rows held out to monitor the validation loss for early stopping
        (computed on at most 1024 of them); the weights of the epoch with the lowest
        validation loss are restored. With ``decoder_variance='feature'`` the held-out
        rows also calibrate the decoder: its per-feature variance is raised to the
        mean squared residual on them (leaving out the ``trim_fraction`` worst
        explained rows) where training left it smaller. ``0``
        trains on all rows for ``epochs`` epochs. Ignored when fewer than two rows
        would be held out or fewer than one would be left for training.
    patience : int or None, default=10
        Checks without improvement of the validation loss after which training stops.
        A check runs at the end of the first epoch that completes at least 20
        optimisation steps since the previous one (every epoch when epochs are that
        long), and after the last epoch. ``None`` never stops early (the weights of the
        best check are still restored).
    n_estimators : int, default=5
        Number of VAEs in the ensemble. They are trained together as one batched
        network; scores are averaged over them.
    max_samples : 'auto', int or float, default='auto'
        Rows each member is trained on, drawn without replacement. ``'auto'`` uses
        ``min(128, n_train // 2)`` (half the training rows of small data, so members
        see different rows); an int (at least 2) is a number of rows, a float in
        (0, 1] a fraction of the training rows (``1.0``: all of them). Small
        subsamples dilute the outliers in contaminated training data and make the
        members diverse; use ``1.0`` to fit every member on all rows (e.g. to model the
        density of a large offline-RL dataset).
    contamination : 'auto' or float in (0, 0.5], default=0.1
        Expected fraction of outliers in the training data; sets ``offset_`` at that
        quantile of the training scores. ``'auto'`` uses Tukey's lower fence of the
        training scores instead, ``Q1 - 1.5 * IQR``.
    alpha : float in (0, 1) or None, default=None
        Target false-alarm rate: when set, ``offset_`` is the conformal threshold at
        which ``predict`` flags exactly the rows with ``pvalues(X) <= alpha``, instead
        of the ``contamination`` quantile. For inliers exchangeable with clean training
        inliers, at most a fraction ``alpha`` of them is flagged on average.
    score_type : {'elbo', 'reconstruction', 'squared_error', \
            'reconstruction_probability'}, default='elbo'
        How samples are scored (higher is more normal):

        - ``'elbo'``: the evidence lower bound log p(x|z) - KL(q(z|x) || p(z)), with
          z at the posterior mean; a lower bound of the log-likelihood.
        - ``'reconstruction'``: minus the mean squared reconstruction error of the
          posterior mean (in the detector's scaled units).
        - ``'squared_error'``: minus the summed squared reconstruction error of the
          posterior mean, the score of the old ``vae_module`` (deterministic here).
        - ``'reconstruction_probability'``: the Monte-Carlo expected log-likelihood of
          x under the decoder over ``n_score_samples`` latent draws
          (An & Cho, 2015).
    n_score_samples : int, default=10
        Latent draws for ``score_type='reconstruction_probability'``. The draws are
        made once at fit time, so scores are deterministic.
    decoder_variance : {'feature', 'sample'}, default='feature'
        Variance of the decoder's p(x|z): one learned value per feature, or
        predicted for each sample by the decoder (as in An & Cho, 2015). A per-sample
        variance lets the decoder explain outliers away as noisy and ranks them worse on
        tabular benchmarks; it is offered for likelihood modelling.
    decoder_df : float or None, default=5.0
        Degrees of freedom of the decoder's per-feature Student-t likelihood (its
        location and squared scale are the decoder's mean and variance); ``None`` makes
        it Gaussian, the t's limit. A t density's cost grows with the logarithm of a
        feature's squared residual instead of the squared residual, so no single
        feature (such as one the decoder learned as nearly constant) decides a row's
        score alone, and contaminating rows pull less on training.
    scaling : {'robust', 'standard'} or None, default='robust'
        Per-feature scaling learned from the training data: ``'robust'`` centres on the
        median and divides by the IQR-based standard deviation, ``'standard'`` by mean
        and standard deviation; with either, the encoder sees scaled values clipped
        to +-10, and the likelihood judges them clipped to +-10 with a Gaussian decoder
        and to +-1e4 with a Student-t one (so values far beyond 10 stay distinguishable).
        ``None`` uses the data as given.
    precision : {'auto', 'float32', 'float64'}, default='auto'
        Floating-point precision of the fitted network when scoring (training is
        float32). ``'auto'`` is ``'float32'``. Rows are scored in chunks of one fixed
        shape, so a row's score does not depend on the rows scored with it in either
        precision; ``'float64'`` is about half as fast on the CPU. A row whose float32
        score overflows is scored again in float64.
    device : str, default='auto'
        ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    n_jobs : int or None, default=None
        CPU threads PyTorch uses while this detector fits or scores, at most. ``None``
        means 1 unless in a :func:`joblib.parallel_config` context; ``-1`` means all
        cores (as for :class:`~sklearn.ensemble.IsolationForest`). Never more than
        PyTorch's current setting (which ``OMP_NUM_THREADS``, as in joblib's workers,
        ``torch.set_num_threads`` and :func:`threadpoolctl.threadpool_limits` set), and
        never more than one thread per 8 million multiply-adds of a training step or
        scoring pass: below that a second thread costs more in synchronisation than
        it saves. The process's own setting is restored afterwards. One thread is the
        default because the default training steps are small, and on a busy machine
        threads wait for each other (``benchmarks/training_benchmark.py``).
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, subsamples, batches and noise. With an int, fits on the CPU
        are reproducible.
    verbose : int, default=0
        ``1``: progress in optimisation steps with their rate and the losses of the last
        check (a bar on a terminal, a plain line every 10 s in a log file); ``2``: also
        the losses of every check, one line each.

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted network (:class:`skvae._network.VAEEnsemble`).
    device_ : torch.device
        Device the network lives on.
    offset_ : float
        Threshold on ``score_samples``: ``decision_function = score_samples - offset_``.
    threshold_ : float
        ``-offset_``: threshold on anomaly scores (PyOD convention; higher is more
        abnormal).
    decision_scores_ : ndarray of shape (n_samples,)
        Anomaly scores (``-score_samples``) of the training data.
    labels_ : ndarray of shape (n_samples,)
        1 for training rows whose anomaly score exceeds ``threshold_``, else 0.
    score_mean_, score_std_ : float
        Mean and standard deviation of ``score_samples`` on the training data.
    calibration_scores_ : ndarray of shape (n_calibration,)
        Sorted scores of the rows that calibrate :meth:`pvalues`: the training rows no
        member was trained on (out-of-bag), when there are at least 50 of them, else the
        validation rows (used for early stopping and variance calibration too); a random
        100,000 of them at most.
    calibration_source_ : {'out-of-bag', 'validation', 'none'}
        Which rows those are.
    history_ : dict of list of float
        The losses at each check (see ``patience``): ``epoch`` (the epoch it ran
        after), ``train_loss`` (the trimmed loss that is optimised), ``train_recon``
        and ``train_kl`` (mean per-sample values over the batches since the previous
        check) and, with a validation split, ``val_loss``, ``val_recon``, ``val_kl``
        (all validation rows, untrimmed).
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int
        Epoch (1-based) after which the kept weights were checked.
    latent_dim_, hidden_dims_ : int, tuple of int
        The architecture used.
    center_, scale_ : ndarray of shape (n_features_in_,)
        The learned input scaling.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during fit, when X has string column names.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Tree-based outlier detector.

    Notes
    -----
    Missing values (``NaN``) are accepted by ``fit`` and every scoring method: a missing
    feature is left out of its row's likelihood (its term is 0) and the observed terms
    are weighted by ``n_features / n_observed``, so that rows with different numbers of
    missing values share one scale; a complete row's score is unchanged. A model
    fitted on missing values also feeds the encoder the mask of observed values.
    ``inf`` and rows with
    every value missing are errors. See the "Missing values" page of the docs.

    If ``fit`` is interrupted (e.g. ``KeyboardInterrupt``), the estimator is left as it
    was before the call: fitted attributes are only set once training has finished.
    If the loss becomes NaN or infinite during training, the weights of the best
    finite epoch are restored with a warning naming the epoch; when no finite epoch
    exists, ``fit`` raises a ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(size=(200, 4)), [[8.0, 8.0, 8.0, 8.0]]])
    >>> det = VAEOutlierDetector(epochs=20, random_state=0).fit(X)
    >>> int(det.predict(X[-1:])[0])
    -1
    >>> bool(det.score_samples(X[-1:])[0] < det.score_samples(X[:1])[0])
    True
    """

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, MAX_NETWORK["latent_dim"], closed="both"), None],
        "hidden_dims": ["array-like", None],
        "beta": [Interval(Real, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "trim_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "n_estimators": [Interval(Integral, 1, MAX_NETWORK["n_members"], closed="both")],
        "max_samples": [
            StrOptions({"auto"}),
            Interval(Integral, 2, None, closed="left"),  # rows (one row is no data to model)
            Interval(RealNotInt, 0, 1, closed="right"),  # a fraction, as IsolationForest's
        ],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "alpha": [Interval(Real, 0, 1, closed="neither"), None],
        "score_type": [StrOptions(set(SCORE_TYPES))],
        "n_score_samples": [Interval(Integral, 1, MAX_NETWORK["n_score_samples"], closed="both")],
        "decoder_variance": [StrOptions({"feature", "sample"})],
        "decoder_df": [Interval(Real, 0, MAX_DECODER_DF, closed="right"), None],
        "scaling": [StrOptions({"robust", "standard"}), None],
        "precision": [StrOptions({"auto", "float32", "float64"})],
        "device": [str],
        # scikit-learn's meaning: 0 means nothing (joblib refuses it)
        "n_jobs": [
            Interval(Integral, None, -1, closed="right"),
            Interval(Integral, 1, None, closed="left"),
            None,
        ],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        latent_dim: int | None = None,
        hidden_dims: tuple[int, ...] | None = None,
        beta: float = 1.0,
        trim_fraction: float = 0.1,
        epochs: int | str = "auto",
        batch_size: int = 128,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        n_estimators: int = 5,
        max_samples: int | float | str = "auto",
        contamination: float | str = 0.1,
        alpha: float | None = None,
        score_type: str = "elbo",
        n_score_samples: int = 10,
        decoder_variance: str = "feature",
        decoder_df: float | None = 5.0,
        scaling: str | None = "robust",
        precision: str = "auto",
        device: str = "auto",
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.beta = beta
        self.trim_fraction = trim_fraction
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.alpha = alpha
        self.score_type = score_type
        self.n_score_samples = n_score_samples
        self.decoder_variance = decoder_variance
        self.decoder_df = decoder_df
        self.scaling = scaling
        self.precision = precision
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, validation_data=None) -> VAEOutlierDetector:
        """Fit the VAE(s) to ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (may contain some outliers). ``NaN`` marks a missing value
            (see the class notes); a row or a feature with every value missing is an
            error.
        y : Ignored
            Not used, present for API consistency.
        validation_data : array-like of shape (n_val, n_features), optional
            Held-out rows to monitor for early stopping and to calibrate the decoder
            variance (on at most 1024 evenly spaced rows) instead of a random
            ``validation_fraction`` of ``X`` (e.g. the later episodes of an offline-RL
            dataset); all of ``X`` is then used for training.

        Returns
        -------
        self : VAEOutlierDetector
            The fitted detector.
        """
        X, validation_data = _from_tensor(X), _from_tensor(validation_data)
        # fit's input validation sets these before training; put them back if fit fails
        # or is interrupted, so the estimator is left exactly as it was
        previous = {k: v for k, v in vars(self).items() if k in _INPUT_ATTRIBUTES}
        try:
            with torch_threads(self.n_jobs):
                return self._fit(X, validation_data)
        except BaseException:
            for key in _INPUT_ATTRIBUTES:
                self.__dict__.pop(key, None)
            self.__dict__.update(previous)
            raise

    def _fit(self, X, validation_data) -> VAEOutlierDetector:
        out_of_core = is_out_of_core(X)
        if out_of_core:
            X = self._validate_out_of_core(X, reset=True)
        else:
            X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite=ALLOW_NAN)
        # rows with every value missing teach nothing: left out of training, they score
        # as the median training row
        blank = blank_rows(X)
        if len(blank) == len(X):
            raise ValueError("X has no row with an observed value (every value is NaN).")
        hidden_dims = self._check_hidden_dims()
        device = resolve_device(self.device)
        n_samples, n_features = X.shape
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))

        kept = np.setdiff1d(np.arange(n_samples), blank)
        if validation_data is not None:
            train_idx, val_idx = kept, np.arange(0)
        else:
            train_idx, val_idx = (kept[i] for i in self._split(len(kept), rng))
        n_rows = self._member_rows(len(train_idx))
        # Each member's subsample of training rows, drawn without replacement.
        subsets = np.stack(
            [rng.choice(train_idx, size=n_rows, replace=False) for _ in range(self.n_estimators)]
        )
        out_of_bag = np.setdiff1d(train_idx, subsets.ravel())
        calibration_idx = val_idx  # rows of X (not of the gathered rows)
        # Only the rows training needs are scaled into its tensor (and, out of core, read;
        # the scaling is then learned from them, in memory from every row).
        rows = np.unique(np.concatenate([subsets.ravel(), val_idx]))
        subsets, val_idx = np.searchsorted(rows, subsets), np.searchsorted(rows, val_idx)
        if out_of_core:
            X_fit = X_train = gather_rows(X, rows)
        else:
            X_fit, X_train = X, (X if len(rows) == n_samples else X[rows])
        missing = np.isnan(X_fit)
        empty = np.flatnonzero(missing.all(0))[:5]
        if len(empty):
            names = getattr(self, "feature_names_in_", None)
            shown = [str(names[j]) if names is not None else str(j) for j in empty]
            raise ValueError(
                f"X has features with every value missing (NaN) in the training rows: "
                f"{', '.join(shown)}; drop them or fill them."
            )
        # with missing values the encoder also sees the mask of the observed ones
        mask_input = bool(missing.any())
        del missing

        latent_dim = self.latent_dim or default_latent_dim(n_features)
        hidden = hidden_dims if hidden_dims is not None else default_hidden_dims(n_features)
        architecture = {
            "n_features": n_features,
            "latent_dim": latent_dim,
            "hidden_dims": hidden,
            "n_members": self.n_estimators,
            "n_score_samples": self.n_score_samples,
            "decoder_variance": self.decoder_variance,
            "mask_input": mask_input,
        }
        if n_parameters(architecture) > MAX_PARAMETERS:  # before allocating it
            raise ValueError(
                f"This architecture has {n_parameters(architecture)} parameters, over the "
                f"limit of {MAX_PARAMETERS}: lower latent_dim, hidden_dims or n_estimators."
            )
        module = VAEEnsemble(
            n_features,
            latent_dim,
            hidden,
            self.n_estimators,
            self.n_score_samples,
            self.decoder_variance,
            clip=self.scaling is not None,
            decoder_df=self.decoder_df,
            mask_input=mask_input,
        )
        module.set_scaling(*fit_scaling(X_fit, self.scaling, mask_input))
        # Both tensors are scaled while the module (its scaling) is still on the CPU.
        Z = self._training_tensor(module, X_train, device)
        del X_fit, X_train
        if validation_data is not None:
            try:
                X_val = validate_data(
                    self,
                    validation_data,
                    dtype=[np.float64, np.float32],
                    reset=False,
                    ensure_all_finite=ALLOW_NAN,
                )
                blank_val = check_values(X_val, empty_ok=True)
                if len(blank_val) == len(X_val):
                    raise ValueError("it has no row with an observed value")
                X_val = np.delete(X_val, blank_val, axis=0)
            except ValueError as exc:  # scikit-learn's message says X
                raise ValueError(f"validation_data: {exc}") from None
            Z_val = self._training_tensor(module, X_val, device)
        else:
            Z_val = Z[torch.as_tensor(val_idx, dtype=torch.long, device=device)]
        module.reset_parameters(torch.Generator().manual_seed(seed))
        module.to(device, torch.float32)
        subsets = torch.as_tensor(subsets, dtype=torch.long, device=device)
        step_rows = min(self.batch_size, subsets.shape[1])
        with torch_threads(self.n_jobs, work=step_rows * module.row_macs()):
            history, n_epochs, best_epoch = train(
                module,
                Z,
                subsets,
                Z_val,
                Schedule(
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    lr=self.lr,
                    weight_decay=self.weight_decay,
                    beta=float(self.beta),
                    trim_fraction=float(self.trim_fraction),
                    patience=self.patience,
                    verbose=self.verbose,
                ),
                seed=seed,
            )
        module.eval()
        if len(Z_val) > MAX_VALIDATION_ROWS:  # a user's validation set: evenly spaced rows
            picked = torch.linspace(0, len(Z_val) - 1, MAX_VALIDATION_ROWS, device=device)
            Z_val = Z_val[picked.long()]
        module.calibrate_decoder_variance(Z_val, float(self.trim_fraction))
        del Z, Z_val
        module.to(dtype=scoring_dtype(device, self.precision))

        # rows with nothing observed: NaN here, then the median of the others (which the
        # median of all the training scores then is, as later calls give them)
        unseen = "left out of training; each scores as the median training score"
        scores = self._forward(module, X, "score", empty=(np.nan, unseen))
        if len(blank):
            scores[blank] = np.median(scores[kept])
        if not np.isfinite(scores).all():
            raise ValueError(
                "The fitted model produces non-finite scores on the training data; "
                "lower lr or check the scale of X."
            )
        n_val = len(X_val) if validation_data is not None else len(calibration_idx)
        if len(out_of_bag) >= MIN_OUT_OF_BAG or (len(out_of_bag) and not n_val):
            calibration, source = scores[out_of_bag], "out-of-bag"
        elif validation_data is not None:
            calibration, source = self._forward(module, X_val, "score"), "validation"
        elif len(calibration_idx):
            calibration, source = scores[calibration_idx], "validation"
        else:
            calibration, source = np.zeros(0), "none"
        if len(calibration) > MAX_CALIBRATION_ROWS:
            calibration = rng.choice(calibration, MAX_CALIBRATION_ROWS, replace=False)
        # Everything learned is assigned only now, so an interrupted fit leaves the
        # estimator as it was.
        self._set_fitted(
            module,
            device,
            train_scores=scores,
            history=history,
            n_epochs=n_epochs,
            best_epoch=best_epoch,
            calibration_scores=calibration,
            calibration_source=source,
        )
        return self

    @staticmethod
    def _training_tensor(module: VAEEnsemble, X: np.ndarray, device) -> torch.Tensor:
        """Rows scaled by the module's (float64) scaling, as float32 on ``device``."""
        with torch.no_grad():
            Z = module.scale_input(torch.from_numpy(np.array(X, dtype=np.float64)))
        return torch.from_numpy(to_float32(Z.numpy())).to(device)

    def _set_fitted(
        self,
        module: VAEEnsemble,
        device: torch.device,
        *,
        train_scores: np.ndarray | None = None,
        history: dict | None = None,
        n_epochs: int = 0,
        best_epoch: int = 0,
        offset: float | None = None,
        score_mean: float | None = None,
        score_std: float | None = None,
        feature_names_in=None,
        calibration_scores: np.ndarray | None = None,
        calibration_source: str = "none",
    ) -> None:
        """The one writer of fitted state: ``fit``, loading and :mod:`skvae.compat` all
        set the fitted attributes here. ``offset`` defaults to the conformal threshold at
        ``alpha`` on the calibration scores when ``alpha`` is set, else to the
        ``contamination`` threshold of ``train_scores``; the score statistics default to
        those of ``train_scores``. Without training scores (files that did not keep
        them) ``decision_scores_`` is empty."""
        scores = np.zeros(0) if train_scores is None else np.asarray(train_scores, np.float64)
        calibration = np.sort(
            np.zeros(0) if calibration_scores is None else np.asarray(calibration_scores, float)
        )
        if offset is None and self.alpha is not None:
            offset = conformal_offset(calibration, self.alpha)
        elif offset is None:
            offset = offset_from_scores(scores, self.contamination)
        self.calibration_scores_ = calibration
        self.calibration_source_ = calibration_source if len(calibration) else "none"
        self.module_ = module
        self.device_ = device
        self.n_features_in_ = module.config["n_features"]
        if feature_names_in is not None:
            self._name_features(feature_names_in)
        self.center_ = module.center.detach().cpu().double().numpy().copy()
        self.scale_ = module.scale.detach().cpu().double().numpy().copy()
        self.latent_dim_ = module.latent_dim
        self.hidden_dims_ = tuple(module.config["hidden_dims"])
        self.history_ = history if history is not None else {}
        self.n_epochs_ = int(n_epochs)
        self.best_epoch_ = int(best_epoch)
        self.decision_scores_ = -scores
        self._set_offset(
            offset,
            score_mean=float(scores.mean()) if score_mean is None else score_mean,
            score_std=float(scores.std()) if score_std is None else score_std,
        )

    def _name_features(self, names) -> None:
        """Set ``feature_names_in_`` to ``names`` (unique strings, one a feature): for
        a fitted model whose rows came without names, such as those of a CSV file read
        by the command line."""
        names = [str(n) for n in names]
        if len(names) != self.n_features_in_ or len(set(names)) != len(names):
            raise ValueError(
                f"feature names must be {self.n_features_in_} unique strings; got "
                f"{short_repr(names)}"
            )
        self.feature_names_in_ = np.asarray(names, dtype=object)

    def _set_offset(
        self,
        offset: float | None,
        *,
        score_mean: float | None = None,
        score_std: float | None = None,
    ) -> None:
        """Move the threshold: ``offset_``, ``threshold_`` and ``labels_`` together
        (``None`` removes it, as the compat layer's ``threshold = None`` does), and the
        score statistics that normalise it when given."""
        if score_mean is not None:
            self.score_mean_ = float(score_mean)
        if score_std is not None:
            self.score_std_ = float(score_std)
        if offset is None:
            for name in ("offset_", "threshold_", "labels_"):
                self.__dict__.pop(name, None)
            return
        self.offset_ = float(offset)
        self.threshold_ = -self.offset_
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)

    def _check_hidden_dims(self) -> tuple[int, ...] | None:
        if self.hidden_dims is None:
            return None
        dims = tuple(np.asarray(self.hidden_dims).ravel().tolist())
        if not 0 < len(dims) <= MAX_NETWORK["n_hidden"] or not all(
            isinstance(h, Integral) and not isinstance(h, bool) and 1 <= h <= MAX_NETWORK["width"]
            for h in dims
        ):
            raise ValueError(
                f"hidden_dims must be 1 to {MAX_NETWORK['n_hidden']} positive integers of at "
                f"most {MAX_NETWORK['width']}; got {short_repr(self.hidden_dims)}."
            )
        return dims

    def _split(self, n_samples: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        n_val = int(self.validation_fraction * n_samples)
        perm = rng.permutation(n_samples)
        if n_val < 2 or n_samples - n_val < 1:
            return np.sort(perm), perm[:0]
        return np.sort(perm[n_val:]), np.sort(perm[: min(n_val, MAX_VALIDATION_ROWS)])

    def _member_rows(self, n_train: int) -> int:
        if self.max_samples == "auto":
            # at most half the rows, as in subagging, so that members see different data
            return min(AUTO_MAX_SAMPLES, max(1, n_train // 2))
        if isinstance(self.max_samples, Integral):
            return min(int(self.max_samples), n_train)
        return max(1, int(self.max_samples * n_train))

    # ------------------------------------------------------------------ scoring
    def _validate_out_of_core(self, X, reset: bool):
        """Check the shape and dtype of an h5py dataset or memmap without reading it
        (its values are checked chunk by chunk as they are read)."""
        _, n_features = check_out_of_core(X)
        if reset:
            self.n_features_in_ = n_features
            self.__dict__.pop("feature_names_in_", None)
        elif n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def _validate_X(self, X):
        """``X`` checked against the fitted model: a tensor, an out-of-core dataset or
        an array-like (validated like scikit-learn does)."""
        check_is_fitted(self)
        if isinstance(X, torch.Tensor):
            return check_tensor(X, self.n_features_in_, type(self).__name__)
        if is_out_of_core(X):
            return self._validate_out_of_core(X, reset=False)
        return validate_data(self, X, dtype="numeric", reset=False, ensure_all_finite=ALLOW_NAN)

    def _forward(self, module: VAEEnsemble, X, what: str, member: int = 0, empty=None):
        """The one inference path: ``what`` is ``'score'``, ``'contributions'``,
        ``'encode'`` or ``'reconstruct'``; ``X`` already validated. ``empty`` is what a
        row with every value missing gets, and the warning's words for it (default:
        :meth:`_empty_rows`)."""
        if empty is None:
            empty = self._empty_rows(module, what)
        # a pass has the rows of one chunk at most (pickles of 0.1 lack n_jobs)
        work = min(X.shape[0], chunk_rows(module)) * module.row_macs()
        with torch_threads(getattr(self, "n_jobs", None), work=work):
            return self._forward_rows(module, X, what, member, empty)

    def _empty_rows(self, module: VAEEnsemble, what: str) -> tuple[Any, str]:
        """What a row with every value missing gets from ``what``: the result for a row
        that tells nothing beyond the training data (the prior, for the latent code),
        and the warning's words for it. Its score is the median training score (the
        mean, ``score_mean_``, for files that kept no training scores)."""
        train = getattr(self, "decision_scores_", np.zeros(0))
        typical = -float(np.median(train)) if len(train) else getattr(self, "score_mean_", np.nan)
        d, k = module.config["n_features"], module.latent_dim
        return {
            "score": (typical, "each scores as the median training score"),
            "contributions": (
                [0.0] * d + [typical],
                "no feature contributes; the latent term is the median training score",
            ),
            "encode": ([0.0] * (2 * k), "each is encoded as the prior (mean 0, log-variance 0)"),
            "reconstruct": (
                module.center.tolist(),
                "each is reconstructed as the centre of the input scaling",
            ),
        }[what]

    def _forward_rows(self, module: VAEEnsemble, X, what: str, member: int, empty):
        if what == "score":
            score_type = self.score_type
            return forward_rows(module, X, lambda net, z: net.scores(z, score_type), empty=empty)
        if what == "encode":
            return forward_rows(
                module,
                X,
                lambda net, z: torch.cat([t[member] for t in net.posterior(z)], -1),
                width=2 * module.latent_dim,
                empty=empty,
            )
        if what == "contributions":
            score_type = self.score_type
            return forward_rows(
                module,
                X,
                lambda net, z: net.contributions(z, score_type),
                width=module.config["n_features"] + 1,
                empty=empty,
            )
        if what == "reconstruct":
            return forward_rows(
                module,
                X,
                lambda net, z: net.unscale_output(net.decode(net.posterior(z)[0])[0].mean(0)),
                width=module.config["n_features"],
                empty=empty,
            )
        raise ValueError(f"unknown inference {what!r}")  # pragma: no cover

    def score_samples(self, X) -> np.ndarray:
        """Normality score of each sample: higher is more normal.

        Parameters
        ----------
        X : array-like, memmap, h5py dataset or torch.Tensor of shape (n_samples, n_features)
            Samples to score. A tensor is scored without leaving torch (e.g. a batch
            of model rollouts already on the GPU); it is moved to the model's device
            if needed. Out-of-core data is read in chunks.

        Returns
        -------
        scores : ndarray of shape (n_samples,), or torch.Tensor
            The scores as selected by ``score_type``: a float64 array for array-like
            input; for a tensor, a tensor on the input's device in the network's
            precision (float32 unless ``precision='float64'``).
        """
        X = self._validate_X(X)
        out = self._forward(self.module_, X, "score")
        finite = (
            bool(torch.isfinite(out).all())
            if isinstance(out, torch.Tensor)
            else (np.isfinite(out).all())
        )
        if not finite:
            raise ValueError(
                "Non-finite scores: X has values too large for the network; use "
                "scaling='robust' or 'standard', or rescale X."
            )
        return out

    def feature_contributions(self, X, *, return_latent: bool = False):
        """Each feature's part of :meth:`score_samples` (higher = more normal).

        The features that make a row an outlier have the lowest contributions. For every
        ``score_type``, ``contributions.sum(axis=1) + latent == score_samples(X)`` (up to
        floating-point rounding):

        - ``'elbo'``: feature ``j``'s part is log N(x_j; decoder mean_j, variance_j) at
          the posterior mean; ``latent`` is minus the KL divergence of the posterior
          from the prior (the part of the score no single feature owns);
        - ``'reconstruction_probability'``: the Monte-Carlo mean of that log-density
          over the latent draws; ``latent`` is 0;
        - ``'squared_error'``: minus the squared error of feature ``j``; ``latent`` is 0;
        - ``'reconstruction'``: the same over the number of features; ``latent`` is 0.

        All are averaged over the members of the ensemble, in the detector's scaled units.

        Parameters
        ----------
        X : array-like, memmap, h5py dataset or torch.Tensor of shape (n_samples, n_features)
            Samples to explain, read in chunks like :meth:`score_samples`.
        return_latent : bool, default=False
            Also return the latent term.

        Returns
        -------
        contributions : ndarray of shape (n_samples, n_features), or torch.Tensor
            Per-feature parts of the score (a tensor on the input's device for tensor
            input; a DataFrame with ``X``'s columns and index for a DataFrame).
        latent : ndarray of shape (n_samples,), or torch.Tensor
            Only with ``return_latent=True`` (a Series named ``'latent'`` for a
            DataFrame).

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import VAEOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> det = VAEOutlierDetector(epochs=20, random_state=0).fit(rng.normal(size=(300, 3)))
        >>> x = np.array([[0.0, 9.0, 0.0]])  # feature 1 is far out
        >>> int(det.feature_contributions(x).argmin())
        1
        >>> c, latent = det.feature_contributions(x, return_latent=True)
        >>> bool(np.isclose(c.sum() + latent[0], det.score_samples(x)[0]))
        True
        """
        out = self._forward(self.module_, self._validate_X(X), "contributions")
        contributions, latent = out[:, :-1], out[:, -1]
        if hasattr(X, "columns") and hasattr(X, "index"):  # a DataFrame in, a DataFrame out
            contributions = type(X)(contributions, index=X.index, columns=X.columns)
            latent = type(X.iloc[:, 0])(latent, index=X.index, name="latent")
        return (contributions, latent) if return_latent else contributions

    def pvalues(self, X):
        """Conformal p-value of each sample: small for outliers.

        ``(1 + #{c <= s}) / (n_cal + 1)`` with ``s`` the sample's score and ``c`` the
        scores of the calibration rows, rows the members were not trained on
        (``calibration_scores_``; Bates et al., "Testing for outliers with conformal
        p-values", Annals of Statistics, 2023). For a sample exchangeable with clean
        inliers, ``P(p <= alpha) <= alpha``: flagging ``p <= alpha`` (``alpha=`` does
        that in ``predict``) keeps the false-alarm rate on inliers at most ``alpha``.
        This holds when the training data are clean; outliers among the calibration rows
        make p-values of inliers larger (fewer false alarms, less power).

        Parameters
        ----------
        X : array-like, memmap, h5py dataset or torch.Tensor of shape (n_samples, n_features)
            Samples to test.

        Returns
        -------
        pvalues : ndarray of shape (n_samples,), or torch.Tensor
            In ``(0, 1]``; a tensor on the input's device for tensor input.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import VAEOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> det = VAEOutlierDetector(epochs=20, random_state=0).fit(rng.normal(size=(2000, 3)))
        >>> p = det.pvalues(np.array([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]]))
        >>> bool(p[0] > 0.1 and p[1] < 0.01)
        True
        """
        scores = self.score_samples(X)  # checks X first
        if not len(self.calibration_scores_):
            raise ValueError(
                "This model has no calibration rows for p-values: fit it with "
                "max_samples below 1 or a validation split (validation_fraction > 0 or "
                "validation_data)."
            )
        if isinstance(scores, torch.Tensor):
            p = conformal_pvalues(self.calibration_scores_, scores.cpu().double().numpy())
            return torch.as_tensor(p, device=scores.device)
        return conformal_pvalues(self.calibration_scores_, scores)

    def decision_function(self, X) -> np.ndarray:
        """Shifted scores: negative for outliers, positive for inliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to score.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """Label each sample as inlier (+1) or outlier (-1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to label.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 for inliers, -1 for outliers.
        """
        decision = self.decision_function(X)
        if isinstance(decision, torch.Tensor):
            decision = decision.cpu().numpy()
        return np.where(decision < 0, -1, 1)

    def predict_proba(self, X) -> np.ndarray:
        """How unusual each sample is, as PyOD's ``predict_proba`` is shaped:
        ``[[1 - u, u], ...]`` with ``u = 1 - pvalues(X)``.

        ``u`` is the share of calibration rows (held-out training rows) that score as
        more normal than the sample: about 0.5 for a typical inlier, near 1 far out. It
        is a rank against the training data, not a posterior probability of being an
        outlier; flag at a false-alarm rate with ``pvalues`` or ``alpha=``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to rate.

        Returns
        -------
        proba : ndarray of shape (n_samples, 2)
            Column 0 for inliers, column 1 for outliers (PyOD's order); rows sum to 1.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import VAEOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> det = VAEOutlierDetector(epochs=20, random_state=0).fit(rng.normal(size=(1000, 3)))
        >>> det.predict_proba(np.array([[8.0, 8.0, 8.0]]))[:, 1] > 0.99
        array([ True])
        """
        p = self.pvalues(X)
        if isinstance(p, torch.Tensor):
            p = p.cpu().numpy()
        return np.column_stack([p, 1.0 - p])

    def score(self, X, y=None) -> float:
        """Mean score of the samples: with ``score_type='elbo'``, the mean evidence lower
        bound per row, a log-likelihood bound (higher: the model explains the rows better).

        What ``GridSearchCV`` and ``cross_val_score`` maximise when no ``scoring`` is
        given, as for scikit-learn's density estimators (``KernelDensity``,
        ``GaussianMixture``): held-out rows explained best. Scores of different
        ``score_type`` or ``scaling`` are in different units; compare settings of one.
        To select by detection on labelled data, use :func:`skvae.outlier_scorer`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples, assumed mostly normal.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            ``score_samples(X).mean()``.
        """
        s = self.score_samples(X)
        return float(s.mean())

    # ------------------------------------------------------------------ generative side
    def encode(self, X, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and log-variance of q(z|x) for each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to encode.
        member : int, default=0
            Which member of the ensemble encodes (each has its own latent space).

        Returns
        -------
        mu, logvar : ndarray of shape (n_samples, latent_dim_)
            Posterior means and log-variances.
        """
        X = self._validate_X(X)
        member = self._check_member(member)
        out = self._forward(self.module_, X, "encode", member)
        if isinstance(out, torch.Tensor):
            out = out.double().cpu().numpy()
        return out[:, : self.latent_dim_], out[:, self.latent_dim_ :]

    def reconstruct(self, X) -> np.ndarray:
        """Reconstruction of each sample in input space (decoder mean at the posterior
        mean, averaged over the ensemble).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to reconstruct.

        Returns
        -------
        X_rec : ndarray of shape (n_samples, n_features)
            Reconstructions.
        """
        out = self._forward(self.module_, self._validate_X(X), "reconstruct")
        return out.double().cpu().numpy() if isinstance(out, torch.Tensor) else out

    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Draw new points in input space: decoder means at z ~ N(0, I).

        Parameters
        ----------
        n_samples : int, default=1
            Number of points.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws (which member, which z).

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_in_)
            Generated points.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        widest = max(*self.hidden_dims_, self.n_features_in_, self.latent_dim_)
        if n_samples * self.module_.n_members * widest * 8 > MAX_SAMPLE_BYTES:
            raise ValueError(
                f"n_samples={n_samples} would need more than {MAX_SAMPLE_BYTES >> 30} GiB at "
                "once; draw fewer per call (each call draws independent samples)."
            )
        rng = check_random_state(random_state)
        member = rng.randint(self.module_.n_members, size=n_samples)
        z = rng.standard_normal((n_samples, self.latent_dim_))
        module = self.module_
        with torch.inference_mode():
            zt = torch.from_numpy(z).to(self.device_, self._dtype())
            stacked = zt.unsqueeze(0).expand(module.n_members, -1, -1).contiguous()
            mean, _ = module.decode(stacked)  # every member decodes every z once
            which = torch.as_tensor(member, device=mean.device)
            picked = mean[which, torch.arange(n_samples, device=mean.device)]
            out = module.unscale_output(picked)
        return out.double().cpu().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are scored on what is observed
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        # n_features_in_ is set as soon as fit validates X; only a finished fit sets module_
        return hasattr(self, "module_")

    def _dtype(self) -> torch.dtype:
        return next(self.module_.parameters()).dtype

    def _check_member(self, member: int) -> int:
        n = self.module_.n_members
        if not isinstance(member, Integral) or not 0 <= member < n:
            raise ValueError(f"member must be an integer in [0, {n}); got {member!r}.")
        return int(member)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, info: dict | None = None) -> Path:
        """Write the fitted detector to a ``.skvae`` file that executes no code when
        loaded (the "Model files" page of the documentation describes it).

        Parameters
        ----------
        path : path-like
            Destination file, taken literally (``.skvae`` is conventional). The write is
            atomic: a failed save leaves an existing file as it was.
        info : dict, optional
            Plain data to keep with the model (task, data source, feature layout,
            threshold candidates, ...); :func:`skvae.load` returns it with
            ``return_info=True``. Without ``threshold_candidates`` in it, candidates
            on the training scores are stored.

        Returns
        -------
        path : pathlib.Path
            The file written.

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> from skvae import VAEOutlierDetector, load
        >>> det = VAEOutlierDetector(epochs=3, random_state=0).fit(np.random.randn(50, 3))
        >>> f = det.save(os.path.join(tempfile.mkdtemp(), "det.skvae"), info={"task": "demo"})
        >>> load(f, return_info=True)[1]["task"]
        'demo'
        """
        check_is_fitted(self)
        return write_model(path, self._to_record(info))

    def _to_record(self, info: dict | None = None) -> ModelRecord:
        names = getattr(self, "feature_names_in_", None)
        info = dict(info or {})
        if "threshold_candidates" not in info and len(self.decision_scores_):
            info["threshold_candidates"] = threshold_candidates(
                -self.decision_scores_, self.score_mean_, self.score_std_
            )
            info["threshold_candidates_on"] = "training"
        return ModelRecord(
            params=self.get_params(),
            network=dict(self.module_.config),
            state={k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
            fitted=Fitted(
                device=str(self.device_),
                n_features_in=int(self.n_features_in_),
                feature_names_in=None if names is None else [str(n) for n in names],
                offset=float(self.offset_),
                score_mean=float(self.score_mean_),
                score_std=float(self.score_std_),
                history=self.history_,
                n_epochs=int(self.n_epochs_),
                best_epoch=int(self.best_epoch_),
                calibration_source=self.calibration_source_,
            ),
            decision_scores=np.asarray(self.decision_scores_, dtype=np.float64),
            calibration_scores=np.asarray(self.calibration_scores_, dtype=np.float64),
            source=f"skvae-{FORMAT_VERSION}",
            info=info,
        )

    @classmethod
    def _from_record(cls, record: ModelRecord, device: str | None = None):
        """A fitted detector from a model file's record (built, validated, placed)."""
        try:
            detector = cls(**record.params)
            detector._validate_params()
            detector._check_hidden_dims()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid hyperparameters in the model file: {exc}") from exc
        fitted = record.fitted
        module, dev = rebuild(
            record.network, record.state, fitted.device, device, detector.precision
        )
        df = detector.decoder_df
        if (None if df is None else float(df)) != module.config["decoder_df"]:
            raise ValueError(
                f"the model file's decoder_df ({df!r}) does not match its network "
                f"({module.config['decoder_df']!r})"
            )
        if module.config["n_features"] != fitted.n_features_in:
            raise ValueError(
                f"the model file's n_features_in ({fitted.n_features_in}) does not "
                f"match its network ({module.config['n_features']} features)"
            )
        detector._set_fitted(
            module,
            dev,
            train_scores=-np.asarray(record.decision_scores, dtype=np.float64),
            history=fitted.history,
            n_epochs=fitted.n_epochs,
            best_epoch=fitted.best_epoch,
            offset=fitted.offset,
            score_mean=fitted.score_mean,
            score_std=fitted.score_std,
            feature_names_in=fitted.feature_names_in,
            calibration_scores=record.calibration_scores,
            calibration_source=fitted.calibration_source,
        )
        return detector

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        module = state.get("module_")
        if module is not None:
            # Stored as CPU tensors plus the architecture, so that a model fitted on a
            # GPU unpickles on a machine without one.
            state["module_"] = {
                "config": dict(module.config),
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            }
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("decoder_df", None)  # pickles of 0.1.0 had a Gaussian decoder
        module_state = state.get("module_")
        if isinstance(module_state, dict):
            config = dict(module_state["config"])
            weights = dict(module_state["state_dict"])
            if "center" not in weights:  # pickled by skvae 0.1.0: scaling kept outside
                config.setdefault("clip", state.get("scaling") is not None)
                weights["center"] = torch.as_tensor(state["center_"], dtype=torch.float64)
                weights["scale"] = torch.as_tensor(state["scale_"], dtype=torch.float64)
            state["module_"], state["device_"] = rebuild(
                config, weights, state.get("device_", "cpu"), None, state.get("precision", "auto")
            )
        super().__setstate__(state)


def _from_tensor(X):
    """A torch tensor (even one that requires grad) as a numpy array; anything else as is."""
    if not isinstance(X, torch.Tensor):
        return X
    if not is_dense(X):
        raise TypeError(f"Cannot fit on a {X.layout} tensor on {X.device}: pass a dense tensor.")
    return X.detach().cpu().numpy()


def save(
    detector: VAEOutlierDetector, path: str | os.PathLike, *, info: dict | None = None
) -> Path:
    """Write a fitted :class:`~skvae.VAEOutlierDetector` to a ``.skvae`` file.

    The same as ``detector.save(path, info=info)``.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
        The detector to save.
    path : path-like
        Destination file, taken literally (``.skvae`` is conventional); written
        atomically.
    info : dict, optional
        Plain data to keep with the model (see :meth:`VAEOutlierDetector.save`).

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
    if not isinstance(detector, VAEOutlierDetector):
        raise TypeError(
            f"save writes a VAEOutlierDetector; got {type(detector).__name__} (a "
            "skvae.compat.VAE saves with its save_model method)"
        )
    return detector.save(path, info=info)


def load(
    path: str | os.PathLike,
    device: str | None = None,
    *,
    hidden_dims=None,
    return_info: bool = False,
    allow_code_execution: bool = False,
):
    """Load a detector from any model file skvae reads, without running code from it.

    Reads ``.skvae`` files (this version's and skvae 0.1.0's), the pair
    ``<stem>_model.pth`` + ``<stem>_meta_data.pkl`` written by the old ``vae_module``
    or by skvae 0.1.0's compat layer (the pickle is read with an unpickler that only
    rebuilds plain data), and a stem naming either (``runs/hopper`` finds
    ``runs/hopper.skvae``).

    Parameters
    ----------
    path : path-like
        The model file, or its stem.
    device : str, optional
        Where to put the network; default: where it was trained, or the CPU (with a
        warning) when that was a GPU and none is available here.
    hidden_dims : list of int, optional
        Needed only for files of the old ``vae_module``, which did not store them. For
        any other file it must match the widths the file records.
    return_info : bool, default=False
        Also return the file's ``info`` dict (task, data, feature layout, threshold
        candidates keyed by integer percentile in normalised units, ...).
    allow_code_execution : bool, default=False
        Also load pickled estimators (``.joblib``/``.pkl``), e.g. written with
        ``joblib.dump``. Unpickling runs whatever code the file holds: only for files
        from a source you trust.

    Returns
    -------
    detector : VAEOutlierDetector
        The fitted detector.
    info : dict
        Only with ``return_info=True``.

    Raises
    ------
    FileNotFoundError
        If there is no model file at ``path``.
    ValueError
        If the file is truncated, corrupted, tampered with, not a skvae model, written
        by a newer format version, or a pickle without ``allow_code_execution``; or if
        ``hidden_dims`` differs from the widths the file records.

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
    kind, where = locate(path)
    if kind == "pickle" and allow_code_execution:
        import joblib

        detector = joblib.load(where)
        if not isinstance(detector, VAEOutlierDetector):
            raise ValueError(f"{where} holds a {type(detector).__name__}, not a detector")
        if device is not None:  # moved through the same rebuild and writer as files
            detector = VAEOutlierDetector._from_record(detector._to_record(), device)
        info = _sidecar_info(where)
    else:
        record = read_model(path, hidden_dims=hidden_dims)
        detector = VAEOutlierDetector._from_record(record, device)
        info = dict(record.info, source=record.source)
    if hidden_dims is not None:
        # files that store their widths: a different request is a wrong config, which
        # the old module's load_state_dict would have refused as well
        requested = VAEOutlierDetector(hidden_dims=hidden_dims)._check_hidden_dims()
        if requested != tuple(detector.hidden_dims_):
            raise ValueError(
                f"{where} holds a network with hidden_dims={list(detector.hidden_dims_)}, "
                f"but hidden_dims={list(requested)} was requested; leave hidden_dims out "
                "(the file records its widths) or correct it"
            )
    return (detector, info) if return_info else detector


def _sidecar_info(file: Path) -> dict:
    """The ``.json`` skvae 0.1.0's command line wrote beside a ``.joblib`` model."""
    import json

    sidecar = file.with_suffix(".json")
    if not sidecar.is_file():
        return {"source": "pickle"}
    meta = json.loads(sidecar.read_text())
    info = {k: meta[k] for k in ("task", "data_path", "features", "config") if k in meta}
    return dict(info, source="pickle")
