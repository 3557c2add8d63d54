"""The torch network: an ensemble of VAEs evaluated as one batched module.

Every member has the same architecture; the weights of all members are stacked along a
leading "member" axis so that one optimisation step (and one scoring pass) serves the
whole ensemble. With ``n_members=1`` this is an ordinary VAE.

The input scaling learned at fit time is part of the module (``center`` and ``scale``
buffers, applied by :meth:`VAEEnsemble.scale_input`), so every path that feeds rows to the
network scales them the same way. The score types are a registry (:data:`SCORE_TYPES`)
next to the code that computes them, and :func:`forward_rows` is the one chunked
inference loop over arrays, memmaps, h5py datasets and tensors.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.utils import gen_batches
from sklearn.utils._chunking import get_chunk_n_rows
from torch import nn

from ._device import restore_device, scoring_dtype
from ._inputs import check_values, warn_empty_rows

LOG_2PI = math.log(2.0 * math.pi)
# Scaled inputs are clipped to +-CLIP (when the module clips) before the encoder sees
# them: a row can be arbitrarily far out and the network's activations stay bounded;
# beyond CLIP robust standard deviations is far out.
CLIP = 10.0
# With a Student-t decoder the likelihood judges the scaled value itself, clipped only
# to +-T_TARGET_CLIP (finite, and far from float32's limits), so rows 10 and 30 robust
# standard deviations out are not tied: the t's bounded influence keeps such values from
# dominating training. A Gaussian decoder's targets are clipped to +-CLIP.
T_TARGET_CLIP = 1e4
# Rows per forward pass when scoring: small enough that a chunk's activations stay in
# the CPU's cache, large enough that the matrix products run at full speed.
CHUNK_ROWS = 2048
# On the CPU, fewer rows when one of a chunk's intermediates (members, rows, features)
# would be larger than this: glibc hands allocations above 32 MiB straight back to the
# operating system, so each new one is faulted in page by page, which at 1,000 features
# doubled the time of scoring (benchmarks/RESULTS.md, "Training cost").
CPU_CHUNK_BYTES = 2**23
# The same on a GPU, where a 2,048-row pass is mostly kernel launches and transfers
# (the measurement behind the number: benchmarks/RESULTS.md, "A real GPU"). A call with
# fewer rows pays for one whole pass.
CUDA_CHUNK_ROWS = 65536
# Outside training, layer outputs are padded to a multiple of this many columns: the
# CPU's matrix kernels for narrow outputs (e.g. 5 or 10 columns) vectorise over rows,
# so a row's float32 result would depend on its position in the chunk.
OUTPUT_ALIGNMENT = 8

# Bounds of the predicted log-variances. They keep the likelihoods finite when a
# feature is (nearly) constant and keep the encoder's posterior from exploding.
DECODER_LOGVAR_BOUNDS = (-6.0, 6.0)
ENCODER_LOGVAR_BOUNDS = (-12.0, 8.0)

# Initial log-variances of the decoder (per-feature mode) and of the posterior. Starting
# with a small decoder variance and a sharp posterior makes the latent code worth using
# from the first step; starting at unit variances lets the decoder explain the (scaled)
# data as noise and the posterior collapses to the prior.
INIT_DEC_LOGVAR = -2.0
INIT_ENC_LOGVAR = -4.0


class EnsembleLinear(nn.Module):
    """``n_members`` independent affine maps, applied with one batched matrix multiply."""

    def __init__(self, n_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n_members = n_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(n_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_members, 1, out_features))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise like :class:`torch.nn.Linear`, drawing from ``generator``."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for p in (self.weight, self.bias):
                noise = torch.rand(p.shape, generator=generator, dtype=p.dtype)
                p.copy_((noise * 2.0 - 1.0) * bound)

    def _padded(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Weight and bias, with zero output columns up to a multiple of
        :data:`OUTPUT_ALIGNMENT` in eval mode outside autograd (see there), and whether
        they were padded."""
        pad = -self.out_features % OUTPUT_ALIGNMENT
        if pad == 0 or self.training or torch.is_grad_enabled():
            return self.weight, self.bias, False
        pad_last = (0, pad)
        weight = nn.functional.pad(self.weight, pad_last)
        return weight, nn.functional.pad(self.bias, pad_last), True

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``x`` of shape (members, rows, in) to (members, rows, out), written into
        ``out`` if given (outside autograd)."""
        weight, bias, padded = self._padded()
        if out is not None and not padded:
            return torch.baddbmm(bias, x, weight, out=out)
        out = torch.baddbmm(bias, x, weight)
        return out[..., : self.out_features] if padded else out

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Map the same rows ``x`` of shape (rows, in) through every member at once."""
        weight, bias, padded = self._padded()
        out = torch.baddbmm(bias, x.expand(self.n_members, *x.shape), weight)
        return out[..., : self.out_features] if padded else out


class VAEEnsemble(nn.Module):
    """Gaussian-encoder VAEs with MLP bodies, stacked as an ensemble.

    The encoder maps x to the mean and log-variance of q(z|x); the decoder maps z to the
    mean and log-variance of p(x|z) (a decoder that predicts a variance, as the
    reconstruction probability of An & Cho (2015) needs). p(x|z) is a product over
    features of Gaussians, or with ``decoder_df`` of Student-t densities with that
    location and squared scale.

    Missing values are NaN in the scaled rows: a missing feature is left out of the
    row's likelihood, and the encoder sees 0 in its place; with ``mask_input`` it also
    sees the mask (1 where observed), as its second ``n_features`` inputs.
    """

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        hidden_dims: Sequence[int],
        n_members: int = 1,
        n_score_samples: int = 1,
        decoder_variance: str = "feature",
        clip: bool = True,
        decoder_df: float | None = None,
        mask_input: bool = False,
    ) -> None:
        super().__init__()
        self.config = {
            "n_features": int(n_features),
            "latent_dim": int(latent_dim),
            "hidden_dims": tuple(int(h) for h in hidden_dims),
            "n_members": int(n_members),
            "n_score_samples": int(n_score_samples),
            "decoder_variance": decoder_variance,
            "clip": bool(clip),
            "decoder_df": None if decoder_df is None else float(decoder_df),
            "mask_input": bool(mask_input),
        }
        # Input scaling (set by the estimator at fit time): x -> (x - center) / scale.
        self.register_buffer("center", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_features, dtype=torch.float64))
        enc_sizes = [(2 if mask_input else 1) * n_features, *hidden_dims]
        dec_sizes = [latent_dim, *reversed(tuple(hidden_dims))]
        self.encoder_layers = nn.ModuleList(
            EnsembleLinear(n_members, a, b) for a, b in zip(enc_sizes[:-1], enc_sizes[1:])
        )
        self.encoder_head = EnsembleLinear(n_members, enc_sizes[-1], 2 * latent_dim)
        self.decoder_layers = nn.ModuleList(
            EnsembleLinear(n_members, a, b) for a, b in zip(dec_sizes[:-1], dec_sizes[1:])
        )
        per_sample = decoder_variance == "sample"
        self.decoder_head = EnsembleLinear(
            n_members, dec_sizes[-1], (2 if per_sample else 1) * n_features
        )
        # Decoder log-variance: predicted per sample, or one learned value per feature.
        self.decoder_logvar = (
            None if per_sample else nn.Parameter(torch.zeros(n_members, 1, n_features))
        )
        # Latent noise for Monte-Carlo scores, drawn once per fitted model so that every
        # row (and every call) sees the same draws: scores are deterministic.
        self.register_buffer("score_noise", torch.zeros(n_score_samples, n_members, 1, latent_dim))

    @property
    def n_members(self) -> int:
        return self.config["n_members"]

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    def _apply(self, fn, recurse=True):
        # The input scaling stays float64 whatever the network's precision (a float32
        # cast would overflow a robust scale beyond 3e38); it only follows the device.
        kept = {name: self._buffers[name] for name in ("center", "scale")}
        super()._apply(fn, recurse)
        for name, before in kept.items():
            self._buffers[name] = before.to(self._buffers[name].device, torch.float64)
        return self

    def set_scaling(self, center: np.ndarray, scale: np.ndarray) -> None:
        """Store the per-feature input scaling learned from the training data."""
        with torch.no_grad():
            self.center.copy_(torch.as_tensor(center, dtype=self.center.dtype))
            self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        """Rows in input units -> the network's scaled units, in ``x``'s dtype: the
        likelihood's targets, clipped (when the module clips) to +-CLIP for a Gaussian
        decoder and to +-T_TARGET_CLIP for a Student-t one (the encoder clips its input
        to +-CLIP)."""
        z = (x - self.center.to(x.dtype)) / self.scale.to(x.dtype)
        bound = self.target_clip
        if bound is not None:
            z = z.clamp(-bound, bound)  # (NaN, a missing value, stays NaN)
        return z

    @property
    def target_clip(self) -> float | None:
        """The bound of :meth:`scale_input`'s values: None without clipping, CLIP for a
        Gaussian decoder, T_TARGET_CLIP for a Student-t one."""
        if not self.config["clip"]:
            return None
        return CLIP if self.config["decoder_df"] is None else T_TARGET_CLIP

    def unscale_output(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`scale_input` (without the clipping), in the scaling's
        float64 (a large scale would overflow float32), kept within float64's range."""
        out = z.to(self.scale.dtype) * self.scale + self.center
        limit = torch.finfo(out.dtype).max
        return out.clamp(min=-limit, max=limit)

    def row_macs(self) -> int:
        """Multiply-adds of one row's forward pass through every member."""
        layers = [*self.encoder_layers, self.encoder_head, *self.decoder_layers]
        return sum(layer.weight.numel() for layer in [*layers, self.decoder_head])

    def row_bytes(self) -> int:
        """Approximate working memory one scored row needs (for chunk sizes): every
        layer's output for every member, in float64. The reconstruction probability
        adds its latent draws one at a time, so they do not multiply it."""
        c = self.config
        width = 2 * sum(c["hidden_dims"]) + 2 * c["latent_dim"] + 3 * c["n_features"]
        return 8 * c["n_members"] * width

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise all weights and the scoring noise from ``generator``."""
        for module in self.modules():
            if isinstance(module, EnsembleLinear):
                module.reset_parameters(generator)
        with torch.no_grad():
            self.score_noise.copy_(torch.randn(self.score_noise.shape, generator=generator))
            if self.decoder_logvar is not None:
                self.decoder_logvar.fill_(INIT_DEC_LOGVAR)
            self.encoder_head.bias[..., self.latent_dim :] += INIT_ENC_LOGVAR

    # -- building blocks -------------------------------------------------------------
    @staticmethod
    def observed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled rows with their missing values (NaN) set to 0, and the mask of the
        observed ones (1, else 0; in ``x``'s dtype), or None when all are observed."""
        missing = torch.isnan(x)
        if not bool(missing.any()):
            return x, None
        return x.masked_fill(missing, 0.0), (~missing).to(x.dtype)

    @staticmethod
    def observed_weights(mask: torch.Tensor) -> torch.Tensor:
        """Per-element weights of the feature terms of rows with ``mask``: 0 where a
        value is missing, ``n_features / n_observed`` where observed, so that a row's
        summed feature terms keep the scale of a complete row's (1 when complete)."""
        return mask * (mask.shape[-1] / mask.sum(-1, keepdim=True))

    def encode(
        self,
        x: torch.Tensor,
        inputs: list[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        workspace: Workspace | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (members, rows, latent).

        ``x`` is either (rows, features), shared by all members, or
        (members, rows, features), one batch per member, with no NaN (see
        :meth:`observed`); ``mask`` (same shape, or None: all observed) marks the
        values the encoder sees, the others count as 0. Each layer's input is appended
        to ``inputs`` if given (for :meth:`loss_gradient`); the clipped input is written
        into ``workspace``'s buffer if given.
        """
        layers = list(self.encoder_layers) + [self.encoder_head]
        if (self.target_clip or 0.0) > CLIP:  # the targets reach beyond the encoder's clip
            out = None if workspace is None else workspace("encoder_input", x.shape, x)
            x = torch.clamp(x, -CLIP, CLIP, out=out)
        if mask is not None:
            x = x * mask
        if self.config["mask_input"]:
            seen = torch.ones_like(x) if mask is None else mask.expand_as(x)
            x = torch.cat([x, seen], -1)
        h = layers[0].forward_shared(x) if x.dim() == 2 else layers[0](x)
        if inputs is not None:
            inputs.append(x)
        for layer in layers[1:]:
            h = h.relu_()  # in place: the affine maps do not need their outputs
            if inputs is not None:
                inputs.append(h)
            h = layer(h)
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(*ENCODER_LOGVAR_BOUNDS)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` of scaled rows whose missing values are NaN."""
        x, mask = self.observed(x)
        return self.encode(x, mask=mask)

    def decode(
        self,
        z: torch.Tensor,
        inputs: list[torch.Tensor] | None = None,
        workspace: Workspace | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (members, rows, features) and log-variance of p(x|z); the log-variance
        is (members, 1, features) when it is learned per feature. Each layer's input is
        appended to ``inputs`` if given; the output layer writes into ``workspace``'s
        buffer if given (outside autograd)."""
        h = z
        for layer in self.decoder_layers:
            if inputs is not None:
                inputs.append(h)
            h = layer(h).relu_()
        if inputs is not None:
            inputs.append(h)
        head = self.decoder_head
        shape = (*h.shape[:-1], head.out_features)
        out = head(h, None if workspace is None else workspace("decoder_output", shape, h))
        if self.decoder_logvar is None:
            mean, logvar = out.chunk(2, dim=-1)
        else:  # (members, 1, features): broadcast over rows, never materialised
            mean, logvar = out, self.decoder_logvar
        return mean, logvar.clamp(*DECODER_LOGVAR_BOUNDS)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Encode, draw z with the reparameterisation trick, decode.

        Returns ``(recon_mean, recon_logvar, mu, logvar)``. Without ``noise`` the
        posterior mean is decoded. Missing values (NaN) in ``x`` are masked.
        """
        return self._pass(*self.observed(x), noise)

    def _pass(self, x: torch.Tensor, mask: torch.Tensor | None, noise: torch.Tensor | None):
        """:meth:`forward` of rows already split by :meth:`observed`."""
        mu, logvar = self.encode(x, mask=mask)
        z = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise
        recon_mean, recon_logvar = self.decode(z)
        return recon_mean, recon_logvar, mu, logvar

    # -- losses and scores -------------------------------------------------------------
    def log_density(
        self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor
    ) -> torch.Tensor:
        """log p(x_j | z) of each feature (``logvar`` may broadcast): Gaussian with
        variance ``exp(logvar)``, or with ``decoder_df`` set Student-t with that many
        degrees of freedom and squared scale ``exp(logvar)``."""
        df = self.config["decoder_df"]
        if torch.is_grad_enabled():
            quadratic = (x - mean).square() * torch.exp(-logvar)
            if df is None:
                return -0.5 * (quadratic + logvar + LOG_2PI)
            return -0.5 * ((df + 1.0) * torch.log1p(quadratic / df) + logvar) + _t_constant(df)
        # the same, in place on one buffer (inference: no graph to keep), with the
        # per-feature factors and constants combined first (``logvar`` is usually one
        # value per member and feature, broadcast over the rows)
        out = torch.sub(x, mean).square_()
        if df is None:
            return out.mul_(torch.exp(-logvar).mul_(-0.5)).add_((logvar + LOG_2PI).mul_(-0.5))
        out = out.mul_(torch.exp(-logvar).div_(df)).log1p_().mul_(-0.5 * (df + 1.0))
        return out.add_(logvar.mul(-0.5).add_(_t_constant(df)))

    def log_likelihood(
        self,
        x: torch.Tensor,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`log_density` summed over features; with a ``mask`` of observed values,
        over those, weighted by :meth:`observed_weights`."""
        density = self.log_density(x, mean, logvar)
        if mask is not None:
            density = density * self.observed_weights(mask)
        return density.sum(-1)

    @staticmethod
    def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) summed over latent dimensions."""
        if torch.is_grad_enabled():
            return 0.5 * (mu.square() + torch.exp(logvar) - 1.0 - logvar).sum(-1)
        # the same with fewer passes over the elements (inference: no graph to keep)
        terms = torch.exp(logvar).sub_(logvar).addcmul_(mu, mu)
        return terms.sum(-1).sub_(mu.shape[-1]).mul_(0.5)

    def loss_terms(
        self, x: torch.Tensor, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample negative log-likelihood (of the observed values, weighted by
        :meth:`observed_weights`) and KL, each (members, rows)."""
        x, mask = self.observed(x)
        target = x if x.dim() == 3 else x.unsqueeze(0)
        recon_mean, recon_logvar, mu, logvar = self._pass(x, mask, noise)
        nll = -self.log_likelihood(target, recon_mean, recon_logvar, mask)
        return nll, self.kl_divergence(mu, logvar)

    @staticmethod
    def trim_weights(values: torch.Tensor, trim_fraction: float) -> torch.Tensor:
        """Weights (members, rows) that average each member's ``1 - trim_fraction``
        smallest ``values`` (at least one row): ``(weights * values).sum(1)`` is the
        trimmed mean."""
        n_rows = values.shape[1]
        keep = max(1, int(round((1.0 - trim_fraction) * n_rows)))
        if keep >= n_rows:
            return torch.full_like(values, 1.0 / n_rows)
        kept = torch.topk(values, keep, dim=1, largest=False, sorted=False).indices
        return torch.zeros_like(values).scatter_(1, kept, 1.0 / keep)

    @staticmethod
    def kept_weights(kept: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Weights (members, rows) that average each member's rows where ``kept`` is
        True (all 0 for a member with none): ``(weights * values).sum(1)`` is their
        mean."""
        weights = kept.to(dtype)
        return weights.div_(weights.sum(1, keepdim=True).clamp_min_(1.0))

    @torch.inference_mode()
    def loss_gradient(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        beta: float,
        trim_fraction: float,
        mask: torch.Tensor | None = None,
        workspace: Workspace | None = None,
        kept: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each member's training loss on its batch, and its gradient.

        ``x`` (members, rows, features) holds one batch per member and ``noise``
        (members, rows, latent) the draws of the reparameterisation trick. A member's
        loss is the mean of ``nll + beta * kl`` over the ``1 - trim_fraction`` of its
        rows where it is smallest (:meth:`trim_weights`), or, with ``kept`` (members,
        rows; True for a row that counts), over the kept rows (none: a loss of 0). The
        gradient of the members' summed loss is written into each parameter's
        ``.grad``; it is what autograd gives (tested against it), except that a
        log-variance exactly at its bound gets none. Written out by hand because on the
        small batches of a fit autograd's bookkeeping costs more than the arithmetic.
        Returns the members' losses (members,) and the ``nll`` and ``kl`` of each row
        (members, rows).

        With missing values, ``x`` holds 0 in their place and ``mask`` (like ``x``) is
        1 where a value is observed: the encoder sees the observed values (and, with
        ``mask_input``, the mask), and the likelihood covers them, weighted by
        :meth:`observed_weights`.

        ``workspace`` holds the step's largest intermediates (each as large as ``x``)
        from one call to the next: a training loop that passes the same one allocates
        them once.
        """
        if x.dim() != 3:
            raise ValueError("loss_gradient takes one batch per member (members, rows, features)")
        encoder_inputs: list[torch.Tensor] = []
        decoder_inputs: list[torch.Tensor] = []
        if workspace is None:
            workspace = Workspace()
        mu, logvar = self.encode(x, encoder_inputs, mask, workspace)
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mu, std, noise)
        mean, dec_logvar = self.decode(z, decoder_inputs, workspace)
        residual = torch.sub(x, mean, out=workspace("residual", x.shape, x))
        # (x - mean) / scale**2
        scaled_residual = torch.mul(
            residual, torch.exp(-dec_logvar), out=workspace("scaled_residual", x.shape, x)
        )
        quadratic = residual.mul_(scaled_residual)  # ((x - mean) / scale)**2
        df = self.config["decoder_df"]
        # missing values: out of the likelihood and the gradient
        observed = None if mask is None else self.observed_weights(mask)
        per_feature = self.decoder_logvar is not None and observed is None
        if df is None:
            if observed is None:
                nll = 0.5 * (quadratic.sum(-1) + (dec_logvar + LOG_2PI).sum(-1))
            else:
                nll = (0.5 * (quadratic + (dec_logvar + LOG_2PI))).mul_(observed).sum(-1)
        else:  # log1p(q / df) as log(df + q) - log(df): df + q is also the gradient's
            denominator = quadratic.add_(df)
            reciprocal = torch.reciprocal(denominator, out=workspace("reciprocal", x.shape, x))
            fit = denominator.log_()
            half_df1 = 0.5 * (df + 1.0)
            constant = 0.5 * dec_logvar - (_t_constant(df) + half_df1 * math.log(df))
            if observed is None:
                nll = fit.sum(-1).mul_(half_df1) + constant.sum(-1)
            else:
                nll = fit.mul_(half_df1).add_(constant).mul_(observed).sum(-1)
        kl = self.kl_divergence(mu, logvar)
        loss = nll + beta * kl
        if kept is None:
            weights = self.trim_weights(loss, trim_fraction)
        else:
            weights = self.kept_weights(kept, loss.dtype)
        member_loss = loss.mul_(weights).sum(1)

        # d/d mean and d/d logvar of the weighted nll, element by element: the Gaussian's
        # -w r and -w (q - 1) / 2 (r the scaled residual); the Student-t's g r and
        # -df (w + g) / 2 with g = -w (df + 1) / (df + q).
        w = weights.unsqueeze(-1)
        if df is None:
            grad_mean = scaled_residual.mul_(-w)
            if per_feature:
                row_sum = quadratic.mul_(w).sum(1, keepdim=True)
                grad_dec_logvar = row_sum.sub_(w.sum(1, keepdim=True)).mul_(-0.5)
            else:
                grad_dec_logvar = quadratic.sub_(1.0).mul_(-0.5 * w)
        else:
            g = reciprocal.mul_(w * -(df + 1.0))
            grad_mean = scaled_residual.mul_(g)
            if per_feature:
                row_sum = g.sum(1, keepdim=True)
                grad_dec_logvar = row_sum.add_(w.sum(1, keepdim=True)).mul_(-0.5 * df)
            else:
                grad_dec_logvar = (g + w).mul_(-0.5 * df)
        if observed is not None:
            grad_mean.mul_(observed)
            grad_dec_logvar.mul_(observed)
        if self.decoder_logvar is not None:  # one per feature (summed over the rows)
            if not per_feature:
                grad_dec_logvar = grad_dec_logvar.sum(1, keepdim=True)
            grad = _clamp_backward(grad_dec_logvar, dec_logvar, DECODER_LOGVAR_BOUNDS)
            _grad(self.decoder_logvar).copy_(grad)
            grad_out = grad_mean
        else:
            grad_dec_logvar = _clamp_backward(grad_dec_logvar, dec_logvar, DECODER_LOGVAR_BOUNDS)
            grad_out = torch.cat([grad_mean, grad_dec_logvar], -1)
        decoder = [*self.decoder_layers, self.decoder_head]
        grad_z = _affine_backward(decoder, decoder_inputs, grad_out, input_grad=True)
        beta_w = beta * w
        grad_mu = torch.addcmul(grad_z, beta_w, mu)
        kl_grad_logvar = torch.exp(logvar).sub_(1.0).mul_(beta_w)
        grad_logvar = (grad_z * noise).mul_(std).add_(kl_grad_logvar).mul_(0.5)
        grad_logvar = _clamp_backward(grad_logvar, logvar, ENCODER_LOGVAR_BOUNDS)
        encoder = [*self.encoder_layers, self.encoder_head]
        _affine_backward(encoder, encoder_inputs, torch.cat([grad_mu, grad_logvar], -1))
        return member_loss, nll, kl

    @torch.no_grad()
    def calibrate_decoder_variance(self, x: torch.Tensor, trim_fraction: float) -> None:
        """Raise each member's per-feature decoder variance (a Student-t decoder's
        squared scale) to its mean squared residual on held-out rows ``x`` (rows,
        features) where it is smaller.

        A member trained on few rows reconstructs them better than new data and its
        learned noise level is overconfident; held-out residuals measure the noise
        level on new data. The ``trim_fraction`` of rows with the lowest ELBO under
        each member are left out, as in training. Only for per-feature variances.
        Missing values (NaN) are left out of the residuals.
        """
        if self.decoder_logvar is None or x.shape[0] < 2:
            return
        x, mask = self.observed(x)
        mu, logvar = self.encode(x, mask=mask)
        mean, dec_logvar = self.decode(mu)
        residual = (x.unsqueeze(0) - mean).square()  # (members, rows, features)
        loss = self.kl_divergence(mu, logvar) - self.log_likelihood(x, mean, dec_logvar, mask)
        weights = self.trim_weights(loss, trim_fraction).unsqueeze(-1)
        if mask is None:
            held_out = torch.log(residual.mul_(weights).sum(1, keepdim=True))
        else:  # each feature's mean over the rows where it is observed
            weights = weights * mask
            total = residual.mul_(weights).sum(1, keepdim=True)
            held_out = torch.log(total / weights.sum(1, keepdim=True).clamp_min(1e-12))
            held_out = torch.where(weights.sum(1, keepdim=True) > 0, held_out, -math.inf)
        held_out = held_out.clamp(*DECODER_LOGVAR_BOUNDS)
        self.decoder_logvar.copy_(torch.maximum(self.decoder_logvar, held_out))

    def score_terms(self, x: torch.Tensor, score_type: str) -> ScoreTerms:
        """Per-member feature terms (members, rows, features) and latent term (members,
        rows) or None of scaled rows ``x`` for ``score_type`` (see :data:`SCORE_TYPES`).

        A missing value (NaN) has the term 0, and the observed values' terms of its row
        are weighted by :meth:`observed_weights` (``n_features / n_observed``), so that
        rows with different numbers of missing values keep one scale; a complete row's
        terms are unchanged."""
        try:
            terms = SCORE_TYPES[score_type]
        except KeyError:
            raise ValueError(f"unknown score_type {score_type!r}") from None
        x, mask = self.observed(x)
        features, latent = terms(self, x, mask)
        if mask is not None:
            features = features * self.observed_weights(mask)
        return features, latent

    def member_scores(self, x: torch.Tensor, score_type: str) -> torch.Tensor:
        """Per-member normality scores (higher = more normal) of scaled rows ``x``: the
        sum of the feature terms plus the latent term."""
        features, latent = self.score_terms(x, score_type)
        scores = features.sum(-1)
        return scores if latent is None else scores + latent

    def contributions(self, x: torch.Tensor, score_type: str) -> torch.Tensor:
        """Each feature's part of the ensemble score of scaled rows ``x``, then the latent
        term, as (rows, features + 1): the members' means of the terms, which add up to
        :meth:`scores`."""
        features, latent = self.score_terms(x, score_type)
        if latent is None:
            latent = torch.zeros(features.shape[:2], dtype=features.dtype, device=x.device)
        return torch.cat([features.mean(0), latent.mean(0).unsqueeze(-1)], -1)

    def scores(self, x: torch.Tensor, score_type: str) -> torch.Tensor:
        """Ensemble normality scores of scaled rows ``x`` (rows, features): the members'
        mean."""
        return self.member_scores(x, score_type).mean(0)


# ---------------------------------------------------------------------------- score types
# Each maps (network, scaled rows) to per-member terms: one per feature (members, rows,
# features) and a latent term (members, rows) or None, given the rows (missing values set
# to 0) and the mask of the observed values (or None); the terms of missing values are
# then zeroed by :meth:`VAEEnsemble.score_terms`. A member's score (higher = more
# normal) is the sum of its feature terms plus its latent term; the ensemble's score is
# the members' mean, and a feature's contribution the members' mean of its term. Adding
# a score type is adding a function here.
ScoreTerms = tuple[torch.Tensor, torch.Tensor | None]
SCORE_TYPES: dict[str, Callable[[VAEEnsemble, torch.Tensor, torch.Tensor | None], ScoreTerms]] = {}


def _score_type(name: str):
    def register(fn):
        SCORE_TYPES[name] = fn
        return fn

    return register


@_score_type("elbo")
def _elbo(net: VAEEnsemble, x: torch.Tensor, mask: torch.Tensor | None) -> ScoreTerms:
    """log p(x_j|z) per feature; the latent term is -KL(q(z|x) || p(z)); z at the
    posterior mean."""
    mu, logvar = net.encode(x, mask=mask)
    mean, dec_logvar = net.decode(mu)
    return net.log_density(x, mean, dec_logvar), -net.kl_divergence(mu, logvar)


@_score_type("reconstruction")
def _reconstruction(net: VAEEnsemble, x: torch.Tensor, mask: torch.Tensor | None) -> ScoreTerms:
    """Minus the squared error of each feature over the number of features (the score is
    minus the mean squared reconstruction error of the posterior mean)."""
    mean, _ = net.decode(net.encode(x, mask=mask)[0])
    return -(x - mean).square() / x.shape[-1], None


@_score_type("squared_error")
def _squared_error(net: VAEEnsemble, x: torch.Tensor, mask: torch.Tensor | None) -> ScoreTerms:
    """Minus the squared error of each feature (the score, their sum, is the old
    ``vae_module``'s, made deterministic)."""
    mean, _ = net.decode(net.encode(x, mask=mask)[0])
    return -(x - mean).square(), None


@_score_type("reconstruction_probability")
def _reconstruction_probability(
    net: VAEEnsemble, x: torch.Tensor, mask: torch.Tensor | None
) -> ScoreTerms:
    """Monte-Carlo expected log p(x_j|z) per feature over the latent draws fixed at fit
    time."""
    mu, logvar = net.encode(x, mask=mask)
    std = torch.exp(0.5 * logvar)
    total = torch.zeros((*mu.shape[:2], x.shape[-1]), dtype=mu.dtype, device=mu.device)
    for noise in net.score_noise:
        mean, dec_logvar = net.decode(mu + std * noise)
        total += net.log_density(x, mean, dec_logvar)
    return total / net.score_noise.shape[0], None


def _t_constant(df: float) -> float:
    """The log normaliser of a unit-scale Student-t density with ``df`` degrees of
    freedom."""
    return math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)


# ---------------------------------------------------------------------------- training
class Workspace:
    """Buffers kept from one training step to the next, by name.

    A step's largest intermediates have the same shapes every step; allocated afresh
    each time, memory of that size comes back from the operating system page by page
    (a page fault each), which costs as much as the arithmetic on it.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """The buffer ``name`` of ``shape`` with ``like``'s dtype and device (its
        contents undefined), made or remade when it has another shape."""
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or buffer.shape != tuple(shape)
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = self._buffers[name] = torch.empty(
                tuple(shape), dtype=like.dtype, device=like.device
            )
        return buffer


def _grad(param: nn.Parameter) -> torch.Tensor:
    """``param``'s gradient buffer (made if it has none), to write into."""
    if param.grad is None:
        param.grad = torch.empty_like(param)
    return param.grad


def _clamp_backward(
    grad: torch.Tensor, values: torch.Tensor, bounds: tuple[float, float]
) -> torch.Tensor:
    """``grad`` where the clamped ``values`` lie strictly inside ``bounds``, else 0: the
    gradient through the clamp."""
    low, high = bounds
    return torch.ops.aten.hardtanh_backward(grad, values, low, high)


def _affine_backward(
    layers: Sequence[EnsembleLinear],
    inputs: Sequence[torch.Tensor],
    grad: torch.Tensor,
    input_grad: bool = False,
) -> torch.Tensor | None:
    """Backpropagate ``grad`` at the output of a chain of layers with ReLUs between
    them, given each layer's input: writes the weights' and biases' gradients and
    returns the gradient at the chain's input when ``input_grad``."""
    for i in reversed(range(len(layers))):
        layer, inp = layers[i], inputs[i]
        torch.bmm(inp.transpose(1, 2), grad, out=_grad(layer.weight))
        torch.sum(grad, 1, keepdim=True, out=_grad(layer.bias))
        if i == 0 and not input_grad:
            return None
        grad = torch.bmm(grad, layer.weight.transpose(1, 2))
        if i > 0:  # through the ReLU whose output ``inp`` is (zero where it cut)
            grad = torch.ops.aten.threshold_backward(grad, inp, 0.0)
    return grad


@contextmanager
def flat_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """One parameter holding all of ``module``'s, for the duration.

    Inside, each parameter of ``module`` is a view of the flat parameter and its
    gradient a view of the flat gradient, so an optimiser of the flat parameter updates
    them all with one call (element-wise optimisers such as Adam compute exactly what
    they would per parameter); what is written into a parameter's gradient is in the
    flat gradient. Afterwards each parameter owns its storage again, without a
    gradient.
    """
    params = list(module.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    try:
        yield flat
    finally:
        for p in params:
            p.data = p.data.clone()
            p.grad = None


# ---------------------------------------------------------------------------- rebuilding
# The largest architecture skvae builds or reads: a fit asking for more, or a model file
# claiming more, is refused before anything is allocated.
MAX_NETWORK = {
    "n_features": 2**20,
    "latent_dim": 2**16,
    "n_members": 4096,
    "n_score_samples": 2**16,
    "width": 2**16,
    "n_hidden": 64,
}
# Numbers in a network's state dict, at most (1 GiB in float32).
MAX_PARAMETERS = 2**28
# Beyond this many degrees of freedom a Student-t is a Gaussian to float64 precision,
# and larger values overflow the likelihood's constants.
MAX_DECODER_DF = 1e6


def n_parameters(config: dict) -> int:
    """Numbers in the state dict of a :class:`VAEEnsemble` with architecture ``config``."""
    return sum(math.prod(shape) for shape in state_shapes(config).values())


def state_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of a :class:`VAEEnsemble` with architecture ``config``,
    computed without building it (so a file's claims are checked before allocating)."""
    m, d, k = config["n_members"], config["n_features"], config["latent_dim"]
    hidden = list(config["hidden_dims"])
    shapes: dict[str, tuple[int, ...]] = {"center": (d,), "scale": (d,)}

    def affine(name: str, a: int, b: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (m, a, b), (m, 1, b)

    enc, dec = [(2 if config.get("mask_input") else 1) * d, *hidden], [k, *reversed(hidden)]
    for prefix, sizes in (("encoder_layers", enc), ("decoder_layers", dec)):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            affine(f"{prefix}.{i}", a, b)
    affine("encoder_head", enc[-1], 2 * k)
    affine("decoder_head", dec[-1], (2 if config["decoder_variance"] == "sample" else 1) * d)
    if config["decoder_variance"] != "sample":
        shapes["decoder_logvar"] = (m, 1, d)
    shapes["score_noise"] = (config["n_score_samples"], m, 1, k)
    return shapes


def rebuild(
    config: dict,
    state_dict: dict[str, torch.Tensor],
    saved_device: str = "cpu",
    device: str | None = None,
    precision: str = "auto",
) -> tuple[VAEEnsemble, torch.device]:
    """A fitted network from its architecture and state dict, in eval mode, on
    ``device`` (default: where it was saved; the CPU with a warning when that was CUDA
    and CUDA is missing here), in the scoring precision. Raises ValueError when the
    state dict does not fit the architecture."""
    try:
        net = VAEEnsemble(**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"invalid network architecture {config!r}: {exc}") from exc
    try:
        net.load_state_dict(state_dict)
    except (RuntimeError, KeyError) as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        shape = {k: config.get(k) for k in ("n_features", "latent_dim", "hidden_dims")}
        raise ValueError(
            f"the weights do not fit the architecture {shape}: {details[0] if details else exc}"
        ) from exc
    target = restore_device(saved_device, device)
    net.eval()
    return net.to(target, scoring_dtype(target, precision)), target


# ---------------------------------------------------------------------------- inference
def forward_rows(
    net: VAEEnsemble,
    X,
    fn: Callable[[VAEEnsemble, torch.Tensor], torch.Tensor],
    width: int | None = None,
    empty: tuple[Any, str] | None = None,
):
    """Apply ``fn`` (network, scaled rows -> one value, or ``width`` values, per row) to
    the rows of ``X`` in chunks of one fixed shape.

    Every chunk has exactly :func:`chunk_rows` rows (the last one is padded), so each
    row goes through the same kernels whatever rows it is scored with: its result does
    not depend on the batch, also in float32. Rows are scaled in float64 (on the CPU)
    before the cast to the network's precision. A row whose float32 result overflows
    is computed again in float64, so float32 fails on no row that float64 can score.
    ``X`` is a 2D array, a memmap, an h5py dataset or a tensor, checked chunk by chunk
    as it is read (:func:`~skvae._inputs.check_values`: NaN is a missing value;
    infinity is an error). A row with every value missing is an error too, unless
    ``empty = (value, what)`` gives its result (a scalar, or ``width`` values), which it
    then gets without being computed, with one warning (saying ``what``) for all such
    rows. Returns a float64 array, or for a tensor a tensor on its device.
    """
    device = net.center.device
    dtype = next(net.parameters()).dtype
    n_rows, n_features = X.shape[0], net.config["n_features"]
    chunk = chunk_rows(net)
    shape = (n_rows,) if width is None else (n_rows, width)
    tensor_input = isinstance(X, torch.Tensor)
    out = (
        torch.empty(shape, dtype=dtype, device=device)
        if tensor_input
        else np.empty(shape, dtype=np.float64)
    )
    buffer = torch.zeros((chunk, n_features), dtype=dtype, device=device)
    wide = None  # the float64 network and buffer, made when a row first overflows
    empty_ok, n_empty = empty is not None, 0
    with torch.inference_mode():
        for rows in gen_batches(n_rows, chunk):
            n = rows.stop - rows.start
            if tensor_input:
                x = X[rows].to(device)
                blank = check_values(x, rows.start, empty_ok)
                if device.type == "cpu" or x.dtype == torch.float64:
                    x = x.to(torch.float64)
                else:
                    x = x.to(dtype)
            else:
                part = np.asarray(X[rows])  # a view for in-memory arrays
                blank = check_values(part, rows.start, empty_ok)
                part = np.ascontiguousarray(part, dtype=np.float64)  # one chunk, not all X
                with warnings.catch_warnings():  # read-only input (a memmap): torch reads it
                    warnings.filterwarnings(
                        "ignore", message="The given NumPy array is not writable"
                    )
                    x = torch.from_numpy(part).to(device)
            if len(blank):  # computed from the centre, then replaced by empty's value
                x = x.clone()
                x[torch.as_tensor(blank, device=x.device)] = net.center.to(x.device, x.dtype)
            buffer[:n] = net.scale_input(x)
            result = fn(net, buffer)[:n]
            if dtype != torch.float64:
                result, wide = _overflowed_in_float64(net, fn, x, result, buffer, wide)
            if tensor_input:
                out[rows] = result
            else:
                out[rows] = result.to("cpu", torch.float64).numpy()
            if len(blank):  # the given value, in the output's precision
                at = rows.start + blank
                if tensor_input:
                    at = torch.as_tensor(at, device=out.device)
                    out[at] = torch.as_tensor(empty[0], dtype=out.dtype, device=out.device)
                else:
                    out[at] = np.asarray(empty[0], dtype=np.float64)
                n_empty += len(blank)
    if empty is not None:
        warn_empty_rows(n_empty, empty[1])
    return out.to(X.device) if tensor_input else out


def _overflowed_in_float64(net, fn, x, result, buffer, wide):
    """``result``, in float64 with its rows that are not finite computed again in
    float64 if it has any (``wide``: the float64 copy of ``net`` and a float64 buffer
    shaped like ``buffer``, made if None)."""
    bad = ~torch.isfinite(result).reshape(len(result), -1).all(1)
    if not bool(bad.any()):
        return result, wide
    if wide is None:
        wide = copy.deepcopy(net).to(torch.float64), torch.zeros_like(buffer, dtype=torch.float64)
    net64, buffer64 = wide
    buffer64[: len(x)] = net64.scale_input(x.to(torch.float64))
    result = result.to(torch.float64)  # a copy; float64 holds what float32 cannot
    result[bad] = fn(net64, buffer64)[: len(x)][bad]
    return result, wide


def chunk_rows(net: VAEEnsemble) -> int:
    """Rows per forward pass of :func:`forward_rows`: :data:`CUDA_CHUNK_ROWS` on a GPU;
    on the CPU :data:`CHUNK_ROWS`, or for wide networks the largest power of two whose
    widest intermediate fits :data:`CPU_CHUNK_BYTES`; fewer when scikit-learn's
    ``working_memory`` does not allow as many."""
    if net.center.device.type == "cuda":
        most = CUDA_CHUNK_ROWS
    else:
        c = net.config
        outputs = 2 if c["decoder_variance"] != "feature" or c["mask_input"] else 1
        widest = max(*c["hidden_dims"], 2 * c["latent_dim"], outputs * c["n_features"])
        row = c["n_members"] * widest * next(net.parameters()).element_size()
        most = min(CHUNK_ROWS, 1 << max(0, (CPU_CHUNK_BYTES // row).bit_length() - 1))
    return max(1, get_chunk_n_rows(net.row_bytes(), max_n_rows=most))
