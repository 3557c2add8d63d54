"""Candidate changes to the detector, measured against the defaults in one run.

Candidates that need more than a hyperparameter (one hyperparameter on ADBench or
ODDS alone is one run of ``adbench_benchmark.py --detectors skvae --skvae-params
'{...}'``; ``params`` below runs it on every benchmark here):

- ``mixture``: a robust Gaussian on the detector's own scaled inputs (Ledoit-Wolf
  covariance refitted three times on the 90 % of rows it explains best), mixed with
  the VAE's ELBO as one density, ``log(w p_vae + (1 - w) p_gauss)``, the weight ``w``
  fitted by EM on held-out rows: a tenth of the training rows, drawn by distinct
  value so that no held-out row is a copy of a training row. Also reported: the
  Gaussian alone, and the model with the higher held-out mean log-likelihood
  (``pick``), and the product of the two experts (the mean of their log-densities,
  ``product``). The VAE here trains on the other nine tenths.
- ``distinct``: each distinct row counts once in training (exact copies dropped
  before ``fit``), against the defaults on the rows as they are.
- ``scores``: other scores of one default fit: its reconstruction term alone, its
  latent term (-KL) alone, the two each standardised by their median and IQR on the
  training rows and summed, the importance-weighted bound (16 draws, IWAE) instead of
  the ELBO at the posterior mean, the latent term replaced by the log-density of the
  posterior mean under a Gaussian of the training rows' codes (the aggregate
  posterior) or under a five-component Gaussian mixture of them (``latent_mixture``),
  or under the aggregate posterior itself, the mixture of the posteriors of (up to)
  1,000 training rows (``aggregate_posterior_kde``), the robust Gaussian of
  ``mixture`` as a sixth member of the ensemble (the mean of the five ELBOs and its
  log-density: ``gaussian_member``), the members' ELBOs combined otherwise than by
  their mean: their minimum, their median and their mixture (log-mean-exp), and the
  reconstruction judged with lighter tails than the Student-t decoder's: a Gaussian
  of the same scale (``gaussian_tails``), or only the feature furthest from its
  reconstruction (``max_feature``: minus the largest squared residual in units of
  the decoder's scale). (The ELBO with IsolationForest's score is
  ``peer_ensembles``' ``with_iforest``.)
- ``capacity``: ensembles whose members differ in capacity, hedging against a
  capacity nobody can choose without labels: five one-member fits with latent sizes
  from 1 to the default (``latent_range``), with hidden widths from a quarter of the
  default to all of it (``width_range``), with both (``width_and_latent_range``),
  and the width range inside the batched network (hidden units beyond a member's
  width start at zero weights and, as ReLUs at 0, stay there: ``width_range_batched``).
  Controls: five one-member fits of the defaults (``five_single_fits``) and the
  defaults with another random stream (``other_stream``), which shows how far the
  means move by chance.
- ``selection``: the five one-member fits of ``width_and_latent_range`` trained on
  four fifths of the training rows, chosen or weighted by their ELBO on the other
  fifth (drawn by distinct value): their mean (``average``), the fit with the
  highest held-out mean ELBO (``pick``), the members' mixture with weights fitted
  by EM on the held-out rows (``stack``), and the members' mean with those weights
  (``weighted``).
- ``concentration``: a robust refit, as the reweighting step of MCD: a short first
  fit (20 optimisation steps) scores the training rows, the ``contamination``
  fraction (0.1) with the lowest scores is dropped, and the defaults are fitted on
  the rest; with three random streams each (``refit_0``..``refit_2``), beside the
  defaults with the same three streams (``defaults_0``..``defaults_2``), and once
  with a whole default fit as the first stage (``refit_after_full_fit``).
- ``linear_path``: a linear path beside each member's MLPs, so that a member
  contains probabilistic PCA (a linear-Gaussian latent model) as a special case: the
  encoder's mean adds a linear map of the (clipped) input and the decoder's mean a
  linear map of the code, both starting at zero. Trained with autograd's gradient
  (the hand-written one does not know the path), beside a control that trains the
  defaults with autograd's gradient too (``autograd_control``: it scores as the
  defaults do).
- ``exclusion``: MCD's concentration step inside the fit, at no extra cost, as first
  measured (before the defaults adopted one): at the 20th optimisation step each
  member drops for good the rows of its batch whose loss is highest, 10 %
  (``exclude_10``) or 30 % (``exclude_30``) of them, and goes on trimming the rest
  anew each step; or it keeps the 20th step's trimmed rows out for the rest of the
  fit (``freeze``, close to the defaults' step, which chooses at the first check
  by the loss at the posterior mean).
- ``trim_anew``: the ablation of the concentration step (``skvae._training.concentrate``):
  the defaults against the same fit with the trimmed rows chosen anew every step to
  the end (``anew_0``..``anew_2``, as before the step was adopted), with three random
  streams each (``defaults_0``..``defaults_2``).
- ``peer_ensembles``: the default fit's ELBO summed with each classical peer's score
  (``with_<peer>``) and with all of them (``with_all``), each standardised by its
  median and IQR on the training rows, beside the peers alone: how far any
  combination of these detectors gets. The summary adds the mean over sets of the
  best peer's ROC AUC on each set, chosen with the test labels
  (``best_peer_per_set_roc_auc``): a bound no unsupervised choice among the peers
  reaches. The peers are those of ``odds_benchmark.py`` whose package is installed.
- ``streams``: the defaults with five random streams (``random_state`` plus 0, 1000,
  ..., 4000) on the same splits: how far one set's result moves by chance.
- ``params``: the defaults against the estimator with ``--params`` (JSON) in one run.

Example::

    python benchmarks/candidates_benchmark.py mixture --benchmark odds --seeds 0 1 \
        --out benchmarks/results/candidates_mixture_odds.json
    python benchmarks/candidates_benchmark.py params --params '{"beta": 2}' \
        --benchmark adbench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from torch import nn

from skvae import VAEOutlierDetector
from skvae._estimator import default_hidden_dims, default_latent_dim
from skvae._network import CLIP, VAEEnsemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adbench_benchmark import DEFAULT_DATA_DIR as ADBENCH_DIR  # noqa: E402
from adbench_benchmark import adbench_protocol, adbench_split  # noqa: E402
from holdout_benchmark import holdout_sets  # noqa: E402
from odds_benchmark import DEFAULT_DATA_DIR as ODDS_DIR  # noqa: E402
from odds_benchmark import (  # noqa: E402
    PEERS,
    anomaly_scores,
    available,
    make_detectors,
    odds_split,
    one_thread,
)


def _scores(X_tr, X_te, random_state, **params):
    """Test scores of the estimator with ``params`` fitted on ``X_tr``."""
    return VAEOutlierDetector(random_state=random_state, **params).fit(X_tr).score_samples(X_te)


def distinct_holdout(X: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Masks of training and held-out rows; every copy of a row on one side."""
    _, groups = np.unique(X, axis=0, return_inverse=True)
    groups = groups.ravel()
    order = rng.permutation(groups.max() + 1)
    held = np.isin(groups, order[: int(fraction * len(order))])
    return ~held, held


def trimmed_gaussian(Z_fit: np.ndarray, trim: float = 0.1, steps: int = 3):
    """A Gaussian log-density fitted on the rows it explains best (C-steps)."""
    keep = np.arange(len(Z_fit))
    for _ in range(steps):
        density = _gaussian(LedoitWolf().fit(Z_fit[keep]))
        keep = np.argsort(-density(Z_fit))[: int((1 - trim) * len(Z_fit))]
    return _gaussian(LedoitWolf().fit(Z_fit[keep]))


def _gaussian(estimate):
    d = len(estimate.location_)
    cov = estimate.covariance_ + 1e-6 * np.eye(d) * np.trace(estimate.covariance_) / d
    precision, logdet = np.linalg.inv(cov), np.linalg.slogdet(cov)[1]

    def density(Z):
        diff = Z - estimate.location_
        return -0.5 * (
            np.einsum("ij,ij->i", diff @ precision, diff) + logdet + d * np.log(2 * np.pi)
        )

    return density


def em_weights(log_densities: np.ndarray, iterations: int = 100, floor: float = 1e-6):
    """Mixture weights of densities (rows of ``log_densities``, over the same samples)
    that maximise the mixture's likelihood of those samples, each at least ``floor``
    (before they are normalised)."""
    k = len(log_densities)
    weights = np.full(k, 1.0 / k)
    for _ in range(iterations):
        joint = np.log(weights)[:, None] + log_densities
        weights = np.exp(joint - logsumexp(joint, axis=0)).mean(1).clip(floor)
        weights /= weights.sum()
    return weights


def mixture(X_tr, X_te, seed):
    rng = np.random.RandomState(seed)
    fit_rows, held = distinct_holdout(X_tr, 0.1, rng)
    det = VAEOutlierDetector(random_state=seed).fit(X_tr[fit_rows])

    def scale(X):
        return np.clip((X - det.center_) / det.scale_, -10, 10)

    gauss = trimmed_gaussian(scale(X_tr[fit_rows]))
    vae_test, vae_held = det.score_samples(X_te), det.score_samples(X_tr[held])
    g_test, g_held = gauss(scale(X_te)), gauss(scale(X_tr[held]))
    w = float(em_weights(np.array([vae_held, g_held]), iterations=50, floor=1e-3)[0])
    return {
        "defaults": _scores(X_tr, X_te, seed),
        "vae_on_nine_tenths": vae_test,
        "gaussian": g_test,
        "mixture": logsumexp([np.log(w) + vae_test, np.log(1 - w) + g_test], axis=0),
        "pick": vae_test if vae_held.mean() >= g_held.mean() else g_test,
        # a product of the two experts: the mean of the log-densities
        "product": 0.5 * (vae_test + g_test),
    }, {"weight": w}


def distinct(X_tr, X_te, seed):
    unique = np.unique(X_tr, axis=0)
    scores = {"defaults": _scores(X_tr, X_te, seed)}
    if len(unique) == len(X_tr):
        scores["distinct"] = scores["defaults"]
    else:
        scores["distinct"] = _scores(unique, X_te, seed)
    return scores, {"distinct_rows": len(unique), "rows": len(X_tr)}


def _standardised(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` centred on ``reference``'s median, in units of its IQR."""
    q1, median, q3 = np.percentile(reference, [25, 50, 75])
    return (values - median) / max(q3 - q1, 1e-12)


@torch.inference_mode()
def _terms(det: VAEOutlierDetector, X: np.ndarray, draws: int = 16):
    """Per-member reconstruction and latent terms of the ELBO, the importance-weighted
    bound with ``draws`` draws (None without draws), the posterior means and
    log-variances, and the squared residuals in units of the decoder's scale (members,
    rows, features), of rows ``X``."""
    net = det.module_
    x = net.scale_input(torch.as_tensor(X, dtype=torch.float64))
    x = x.to(next(net.parameters()).dtype)  # the network's precision
    mu, logvar = net.encode(x)
    mean, dec_logvar = net.decode(mu)
    reconstruction = net.log_density(x, mean, dec_logvar).sum(-1)
    quadratic = (x - mean).square() * torch.exp(-dec_logvar)
    latent = -net.kl_divergence(mu, logvar)
    generator, std, weights = torch.Generator().manual_seed(0), torch.exp(0.5 * logvar), []
    for _ in range(draws):
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        z = mu + std * eps
        mean, dec_logvar = net.decode(z)
        log_joint = net.log_density(x, mean, dec_logvar).sum(-1) - 0.5 * z.square().sum(-1)
        log_q = -0.5 * eps.square().sum(-1) - 0.5 * logvar.sum(-1)
        weights.append(log_joint - log_q)
    iwae = torch.logsumexp(torch.stack(weights), 0) - np.log(draws) if draws else None
    return tuple(
        None if t is None else t.double().numpy()
        for t in (reconstruction, latent, iwae, mu, logvar, quadratic)
    )


def aggregate_posterior(mu: np.ndarray, mu_ref: np.ndarray, logvar_ref: np.ndarray):
    """Each member's log-density of codes ``mu`` (members, rows, latent) under the
    mixture of the diagonal Gaussian posteriors ``mu_ref``, ``exp(logvar_ref)``
    (members, reference rows, latent), of equal weights."""
    out = np.empty(mu.shape[:2])
    for m in range(len(mu)):
        var = np.exp(logvar_ref[m])
        for start in range(0, mu.shape[1], 256):
            diff = mu[m, start : start + 256, None, :] - mu_ref[m][None]
            log_p = -0.5 * (diff**2 / var + np.log(2 * np.pi * var)).sum(-1)
            out[m, start : start + 256] = logsumexp(log_p, axis=1) - np.log(len(var))
    return out


def score_variants(X_tr, X_te, seed):
    det = VAEOutlierDetector(random_state=seed).fit(X_tr)
    rec, lat, iwae, mu, _, quadratic = _terms(det, X_te)
    rec_tr, lat_tr, _, mu_tr, _, _ = _terms(det, X_tr, draws=0)
    reference = np.random.RandomState(seed).permutation(len(X_tr))[:1000]
    _, _, _, mu_ref, logvar_ref, _ = _terms(det, X_tr[reference], draws=0)
    code_density, code_mixture = [], []
    for m in range(mu.shape[0]):  # each member's codes of the training rows
        code_density.append(_gaussian(LedoitWolf().fit(mu_tr[m]))(mu[m]))
        codes = GaussianMixture(5, reg_covar=1e-3, random_state=seed).fit(mu_tr[m])
        code_mixture.append(codes.score_samples(mu[m]))
    elbo = (rec + lat).mean(0)

    def scale(X):
        return np.clip((X - det.center_) / det.scale_, -10, 10)

    gaussian = trimmed_gaussian(scale(X_tr))(scale(X_te))
    return {
        "defaults": elbo,
        "reconstruction_term": rec.mean(0),
        "latent_term": lat.mean(0),
        "standardised_terms": _standardised(rec.mean(0), rec_tr.mean(0))
        + _standardised(lat.mean(0), lat_tr.mean(0)),
        "iwae": iwae.mean(0),
        "aggregate_posterior": (rec + np.asarray(code_density)).mean(0),
        "latent_mixture": (rec + np.asarray(code_mixture)).mean(0),
        "aggregate_posterior_kde": (rec + aggregate_posterior(mu, mu_ref, logvar_ref)).mean(0),
        "gaussian_member": (len(rec) * elbo + gaussian) / (len(rec) + 1),
        "members_min": (rec + lat).min(0),
        "members_median": np.median(rec + lat, axis=0),
        "members_mixture": logsumexp(rec + lat, axis=0),
        "gaussian_tails": (lat - 0.5 * quadratic.sum(-1)).mean(0),
        "max_feature": -quadratic.max(-1).mean(0),
    }, {}


def _single_members(X_fit, seed, configs):
    """One-member fits of ``X_fit``, one per configuration."""
    return [
        VAEOutlierDetector(random_state=100 * seed + i, n_estimators=1, **config).fit(X_fit)
        for i, config in enumerate(configs)
    ]


def _single_fits(X_tr, X_te, seed, configs):
    """The mean test score of one-member fits, one per configuration."""
    return np.mean([det.score_samples(X_te) for det in _single_members(X_tr, seed, configs)], 0)


# Five members' hidden widths, as fractions of the default widths.
WIDTH_FRACTIONS = (0.25, 0.375, 0.5, 0.75, 1.0)


def _zero_beyond_widths(module) -> None:
    """Start member ``i``'s hidden units beyond ``WIDTH_FRACTIONS`` (spread over the
    members) of each hidden layer at zero weights: as ReLUs at 0 they pass no gradient,
    so they stay at zero and the member keeps the smaller width."""
    fractions = np.interp(
        np.linspace(0, 1, module.n_members),
        np.linspace(0, 1, len(WIDTH_FRACTIONS)),
        WIDTH_FRACTIONS,
    )
    with torch.no_grad():
        for layer in [*module.encoder_layers, *module.decoder_layers]:
            for i, fraction in enumerate(fractions):
                keep = max(1, round(fraction * layer.out_features))
                layer.weight[i, :, keep:] = 0
                layer.bias[i, :, keep:] = 0


@contextlib.contextmanager
def width_range():
    """Inside, every new network starts with :func:`_zero_beyond_widths` applied."""
    from skvae import _network

    original = _network.VAEEnsemble.reset_parameters

    def reset(module, generator):
        original(module, generator)
        _zero_beyond_widths(module)

    _network.VAEEnsemble.reset_parameters = reset
    try:
        yield
    finally:
        _network.VAEEnsemble.reset_parameters = original


def _capacity_range(d: int) -> list[dict]:
    """Five members' hidden widths and latent sizes, from small to the defaults."""
    latent = default_latent_dim(d)
    latents = [1, max(1, latent // 2), max(1, (3 * latent) // 4), latent, latent]
    widths = [tuple(round(f * h) for h in default_hidden_dims(d)) for f in WIDTH_FRACTIONS]
    return [{"hidden_dims": w, "latent_dim": k} for w, k in zip(widths, latents)]


def _width_range_scores(X_tr, X_te, seed):
    with width_range():
        return _scores(X_tr, X_te, seed)


def capacity(X_tr, X_te, seed):
    ranges = _capacity_range(X_tr.shape[1])
    return {
        "defaults": _scores(X_tr, X_te, seed),
        "other_stream": _scores(X_tr, X_te, seed + 1000),
        "five_single_fits": _single_fits(X_tr, X_te, seed, [{}] * 5),
        "latent_range": _single_fits(
            X_tr, X_te, seed, [{"latent_dim": c["latent_dim"]} for c in ranges]
        ),
        "width_range": _single_fits(
            X_tr, X_te, seed, [{"hidden_dims": c["hidden_dims"]} for c in ranges]
        ),
        "width_and_latent_range": _single_fits(X_tr, X_te, seed, ranges),
        "width_range_batched": _width_range_scores(X_tr, X_te, seed),
    }, {}


def selection(X_tr, X_te, seed):
    fit_rows, held = distinct_holdout(X_tr, 0.2, np.random.RandomState(seed))
    members = _single_members(X_tr[fit_rows], seed, _capacity_range(X_tr.shape[1]))
    test = np.asarray([det.score_samples(X_te) for det in members])
    held_out = np.asarray([det.score_samples(X_tr[held]) for det in members])
    weights = em_weights(held_out)
    return {
        "average": test.mean(0),
        "pick": test[np.argmax(held_out.mean(1))],
        "stack": logsumexp(np.log(weights)[:, None] + test, axis=0),
        "weighted": weights @ test,
    }, {"weights": weights.tolist()}


def _refit(X_tr, X_te, random_state, first_epochs="auto", fraction=0.1):
    first = VAEOutlierDetector(random_state=random_state, epochs=first_epochs).fit(X_tr)
    train_scores = first.score_samples(X_tr)
    kept = train_scores >= np.quantile(train_scores, fraction)
    return _scores(X_tr[kept], X_te, random_state + 500)


def concentration(X_tr, X_te, seed):
    out = {}
    for k in range(3):
        stream = seed + 1000 * k
        out[f"defaults_{k}"] = _scores(X_tr, X_te, stream)
        out[f"refit_{k}"] = _refit(X_tr, X_te, stream, first_epochs=20)
    out["refit_after_full_fit"] = _refit(X_tr, X_te, seed)
    return out, {}


class AutogradVAE(VAEEnsemble):
    """The network, its gradient taken by autograd instead of by hand; with
    ``linear = True`` each member also has a linear path (see ``linear_path``)."""

    linear = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.linear:
            members, features, latent = (
                self.config[k] for k in ("n_members", "n_features", "latent_dim")
            )
            self.encoder_linear = nn.Parameter(torch.zeros(members, features, latent))
            self.decoder_linear = nn.Parameter(torch.zeros(members, latent, features))

    def reset_parameters(self, generator: torch.Generator) -> None:
        super().reset_parameters(generator)
        if self.linear:
            with torch.no_grad():
                self.encoder_linear.zero_()
                self.decoder_linear.zero_()

    def encode(self, x, inputs=None, mask=None, workspace=None):
        mu, logvar = super().encode(x, None, mask, None)
        if self.linear:
            seen = x.clamp(-CLIP, CLIP) if mask is None else x.clamp(-CLIP, CLIP) * mask
            mu = mu + torch.matmul(seen, self.encoder_linear.to(x.dtype))
        return mu, logvar

    def decode(self, z, inputs=None, workspace=None):
        mean, logvar = super().decode(z, None, None)
        if self.linear:
            mean = mean + torch.matmul(z, self.decoder_linear.to(z.dtype))
        return mean, logvar

    def loss_gradient(self, x, noise, beta, trim_fraction, mask=None, workspace=None, kept=None):
        params = list(self.parameters())
        with torch.enable_grad():
            mu, logvar = self.encode(x, mask=mask)
            mean, dec_logvar = self.decode(mu + torch.exp(0.5 * logvar) * noise)
            nll = -self.log_likelihood(x, mean, dec_logvar, mask)
            kl = self.kl_divergence(mu, logvar)
            loss = nll + beta * kl
            if kept is None:
                weights = self.trim_weights(loss.detach(), trim_fraction)
            else:
                weights = self.kept_weights(kept, loss.dtype)
            member_loss = (loss * weights).sum(1)
            grads = torch.autograd.grad(member_loss.sum(), params)
        for param, grad in zip(params, grads):
            param.grad.copy_(grad)
        return member_loss.detach(), nll.detach(), kl.detach()


class LinearPathVAE(AutogradVAE):
    linear = True


@contextlib.contextmanager
def network_class(cls):
    """Inside, the estimator builds its network as ``cls``."""
    from skvae import _estimator

    original = _estimator.VAEEnsemble
    _estimator.VAEEnsemble = cls
    try:
        yield
    finally:
        _estimator.VAEEnsemble = original


def linear_path(X_tr, X_te, seed):
    out = {"defaults": _scores(X_tr, X_te, seed)}
    for name, cls in (("autograd_control", AutogradVAE), ("linear_path", LinearPathVAE)):
        with network_class(cls):
            out[name] = _scores(X_tr, X_te, seed)
    return out, {}


@contextlib.contextmanager
def concentration_off():
    """Inside, a fit trims anew every step to the end: the training loop's
    concentration step (``skvae._training.concentrate``) keeps no rows."""
    from skvae import _training

    original = _training.concentrate
    _training.concentrate = lambda *args: None
    try:
        yield
    finally:
        _training.concentrate = original


@contextlib.contextmanager
def training_exclusion(step: int, fraction: float, freeze: bool = False):
    """Inside, each member of a new fit drops for good, at optimisation step ``step``,
    the ``fraction`` of its batch's rows with the highest loss, and trims the rest as
    before; with ``freeze``, it keeps that step's trimming weights from then on
    instead. (Each member's batch is its whole subsample, the same rows in the same
    order every step, as with the defaults.) The fit's own concentration step
    (``skvae._training.concentrate``) is off inside: these variants replace it."""
    original_weights = VAEEnsemble.trim_weights
    original_gradient = VAEEnsemble.loss_gradient

    def loss_gradient(module, *args, **kwargs):
        module._in_step = True
        try:
            return original_gradient(module, *args, **kwargs)
        finally:
            module._in_step = False

    def trim_weights(module, values, trim_fraction):
        if not getattr(module, "_in_step", False):  # not a training step
            return original_weights(values, trim_fraction)
        module._steps = getattr(module, "_steps", 0) + 1
        if module._steps == step:
            n_dropped = int(round(fraction * values.shape[1]))
            worst = torch.topk(values, n_dropped, dim=1).indices
            module._dropped = torch.zeros_like(values, dtype=torch.bool).scatter_(1, worst, True)
            module._frozen = original_weights(values, trim_fraction)
        dropped = getattr(module, "_dropped", None)
        if dropped is None:
            return original_weights(values, trim_fraction)
        if freeze:
            return module._frozen
        keep = max(1, int(round((1.0 - trim_fraction) * int((~dropped[0]).sum()))))
        kept = torch.topk(values.masked_fill(dropped, np.inf), keep, dim=1, largest=False)
        return torch.zeros_like(values).scatter_(1, kept.indices, 1.0 / keep)

    VAEEnsemble.trim_weights, VAEEnsemble.loss_gradient = trim_weights, loss_gradient
    try:
        with concentration_off():
            yield
    finally:
        VAEEnsemble.trim_weights = staticmethod(original_weights)
        VAEEnsemble.loss_gradient = original_gradient


def exclusion(X_tr, X_te, seed):
    out = {"defaults": _scores(X_tr, X_te, seed)}
    for name, settings in (
        ("exclude_10", (20, 0.1)),
        ("exclude_30", (20, 0.3)),
        ("freeze", (20, 0.0, True)),
    ):
        with training_exclusion(*settings):
            out[name] = _scores(X_tr, X_te, seed)
    return out, {}


def trim_anew(X_tr, X_te, seed):
    out = {}
    for k in range(3):
        stream = seed + 1000 * k
        out[f"defaults_{k}"] = _scores(X_tr, X_te, stream)
        with concentration_off():
            out[f"anew_{k}"] = _scores(X_tr, X_te, stream)
    return out, {}


def peer_ensembles(X_tr, X_te, seed):
    det = VAEOutlierDetector(random_state=seed).fit(X_tr)
    train = {"skvae": det.score_samples(X_tr)}
    test = {"skvae": det.score_samples(X_te)}
    for name, peer in make_detectors(available(PEERS), seed, "cpu", {}).items():
        peer.fit(X_tr)  # normality scores (higher = more normal), as skvae's
        train[name], test[name] = -anomaly_scores(peer, X_tr), -anomaly_scores(peer, X_te)
    standard = {n: _standardised(test[n], train[n]) for n in test}
    out = {"defaults": test["skvae"]}
    out.update({n: s for n, s in test.items() if n != "skvae"})
    out.update({f"with_{n}": standard["skvae"] + standard[n] for n in test if n != "skvae"})
    out["with_all"] = sum(standard.values())
    return out, {}


def best_peer_per_set(summary: dict) -> float:
    """The mean over sets of the best peer's ROC AUC on each (chosen with labels)."""
    peers = [n for n in PEERS if n in summary]
    sets = summary[peers[0]]["per_set_roc_auc"]
    return float(np.mean([max(summary[n]["per_set_roc_auc"][ds] for n in peers) for ds in sets]))


def streams(X_tr, X_te, seed):
    return {f"stream_{k}": _scores(X_tr, X_te, seed + 1000 * k) for k in range(5)}, {}


def params_candidate(params: dict):
    def run(X_tr, X_te, seed):
        return {
            "defaults": _scores(X_tr, X_te, seed),
            "params": _scores(X_tr, X_te, seed, **params),
        }, {}

    return run


def _holdout_adbench_split(_, dataset: str, seed: int):
    """A set of ``holdout_benchmark.py`` under ADBench's protocol."""
    X, y = next((X, y) for name, X, y in holdout_sets(seed) if name == dataset)
    return adbench_protocol(X, y.astype(int), seed)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "candidate",
        choices=[
            *("mixture", "distinct", "scores", "capacity", "selection"),
            *("concentration", "linear_path", "exclusion", "trim_anew", "peer_ensembles"),
            *("streams", "params"),
        ],
    )
    parser.add_argument("--params", type=json.loads, default={}, help="for 'params'")
    parser.add_argument(
        "--benchmark", choices=["adbench", "odds", "holdout-adbench"], default="adbench"
    )
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    one_thread()
    if args.benchmark == "holdout-adbench":  # holdout_benchmark.py --protocol adbench's sets
        folder, split = None, _holdout_adbench_split
        datasets = args.datasets or [name for name, _, _ in holdout_sets(0)]
        seeds = args.seeds or [0, 1, 2, 3]
    else:
        adbench = args.benchmark == "adbench"
        folder, split = (ADBENCH_DIR, adbench_split) if adbench else (ODDS_DIR, odds_split)
        pattern = "*.npz" if adbench else "*.mat"
        datasets = args.datasets or sorted(p.stem for p in folder.glob(pattern))
        seeds = args.seeds or ([1, 2, 3] if adbench else [0, 1, 2])
    run = {
        "mixture": mixture,
        "distinct": distinct,
        "scores": score_variants,
        "capacity": capacity,
        "selection": selection,
        "concentration": concentration,
        "linear_path": linear_path,
        "exclusion": exclusion,
        "trim_anew": trim_anew,
        "peer_ensembles": peer_ensembles,
        "streams": streams,
    }.get(args.candidate) or params_candidate(args.params)
    rows = []
    for ds in datasets:
        for seed in seeds:
            X_tr, X_te, y_te = split(folder, ds, seed)
            scores, extra = run(X_tr, X_te, seed)
            row = {"dataset": ds, "seed": seed, **extra}
            for name, s in scores.items():
                row[name] = float(roc_auc_score(y_te, -s))
                row[f"{name}_ap"] = float(average_precision_score(y_te, -s))
            rows.append(row)
            shown = " ".join(f"{n}={row[n]:.3f}" for n in scores)
            print(f"{ds:18s} seed={seed} {shown}", flush=True)
    names = list(scores)
    summary = {
        n: {
            "roc_auc": float(np.mean([r[n] for r in rows])),
            "average_precision": float(np.mean([r[f"{n}_ap"] for r in rows])),
            "per_set_roc_auc": {
                ds: float(np.mean([r[n] for r in rows if r["dataset"] == ds])) for ds in datasets
            },
        }
        for n in names
    }
    for n, s in summary.items():
        print(f"{n:20s} mean ROC AUC {s['roc_auc']:.4f}  mean AP {s['average_precision']:.4f}")
    if args.candidate == "peer_ensembles":
        best = best_peer_per_set(summary)
        print(f"the best peer on each set, chosen with labels: {best:.4f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"candidate": args.candidate, "benchmark": args.benchmark, "seeds": seeds}
        if args.candidate == "params":
            record["params"] = args.params
        if args.candidate == "peer_ensembles":
            record["best_peer_per_set_roc_auc"] = best
        args.out.write_text(json.dumps({**record, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
