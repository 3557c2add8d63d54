"""The torch network: an ensemble of Gaussian VAEs evaluated as one batched module.

Every member has the same architecture; the weights of all members are stacked along a
leading "member" axis so that one optimisation step (and one scoring pass) serves the
whole ensemble. With ``n_members=1`` this is an ordinary VAE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)

# Bounds of the predicted log-variances. They keep the Gaussian likelihoods finite when a
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (members, rows, in) to (members, rows, out)."""
        return torch.baddbmm(self.bias, x, self.weight)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Map the same rows ``x`` of shape (rows, in) through every member at once."""
        m, i, o = self.weight.shape
        w = self.weight.permute(1, 0, 2).reshape(i, m * o)
        out = torch.addmm(self.bias.reshape(1, m * o), x, w)
        return out.reshape(x.shape[0], m, o).transpose(0, 1)


class VAEEnsemble(nn.Module):
    """Gaussian-encoder, Gaussian-decoder VAEs with MLP bodies, stacked as an ensemble.

    The encoder maps x to the mean and log-variance of q(z|x); the decoder maps z to the
    mean and log-variance of p(x|z) (a decoder that predicts a variance, as the
    reconstruction probability of An & Cho (2015) needs).
    """

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        hidden_dims: Sequence[int],
        n_members: int = 1,
        n_score_samples: int = 1,
        decoder_variance: str = "feature",
    ) -> None:
        super().__init__()
        self.config = {
            "n_features": int(n_features),
            "latent_dim": int(latent_dim),
            "hidden_dims": tuple(int(h) for h in hidden_dims),
            "n_members": int(n_members),
            "n_score_samples": int(n_score_samples),
            "decoder_variance": decoder_variance,
        }
        enc_sizes = [n_features, *hidden_dims]
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
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (members, rows, latent).

        ``x`` is either (rows, features), shared by all members, or
        (members, rows, features), one batch per member.
        """
        layers = list(self.encoder_layers) + [self.encoder_head]
        h = layers[0].forward_shared(x) if x.dim() == 2 else layers[0](x)
        for layer in layers[1:]:
            h = layer(torch.relu(h))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(*ENCODER_LOGVAR_BOUNDS)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (members, rows, features) and log-variance of p(x|z); the log-variance
        is (members, 1, features) when it is learned per feature."""
        h = z
        for layer in self.decoder_layers:
            h = torch.relu(layer(h))
        out = self.decoder_head(h)
        if self.decoder_logvar is None:
            mean, logvar = out.chunk(2, dim=-1)
        else:  # (members, 1, features): broadcast over rows, never materialised
            mean, logvar = out, self.decoder_logvar
        return mean, logvar.clamp(*DECODER_LOGVAR_BOUNDS)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Encode, draw z with the reparameterisation trick, decode.

        Returns ``(recon_mean, recon_logvar, mu, logvar)``. Without ``noise`` the
        posterior mean is decoded.
        """
        mu, logvar = self.encode(x)
        z = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise
        recon_mean, recon_logvar = self.decode(z)
        return recon_mean, recon_logvar, mu, logvar

    # -- losses and scores -------------------------------------------------------------
    @staticmethod
    def gaussian_log_likelihood(
        x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor
    ) -> torch.Tensor:
        """log N(x; mean, exp(logvar)) summed over features (``logvar`` may broadcast)."""
        quadratic = ((x - mean).square() * torch.exp(-logvar)).sum(-1)
        return -0.5 * (quadratic + (logvar + LOG_2PI).sum(-1))

    @staticmethod
    def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) summed over latent dimensions."""
        return 0.5 * (mu.square() + torch.exp(logvar) - 1.0 - logvar).sum(-1)

    def loss_terms(
        self, x: torch.Tensor, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample negative log-likelihood and KL, each (members, rows)."""
        target = x if x.dim() == 3 else x.unsqueeze(0)
        recon_mean, recon_logvar, mu, logvar = self(x, noise)
        nll = -self.gaussian_log_likelihood(target, recon_mean, recon_logvar)
        return nll, self.kl_divergence(mu, logvar)

    @staticmethod
    def trimmed_mean(values: torch.Tensor, trim_fraction: float) -> torch.Tensor:
        """Per-member mean of ``values`` (members, rows) over each member's
        ``1 - trim_fraction`` smallest values (at least one row)."""
        n_rows = values.shape[1]
        keep = max(1, int(round((1.0 - trim_fraction) * n_rows)))
        if keep >= n_rows:
            return values.mean(1)
        return torch.topk(values, keep, dim=1, largest=False, sorted=False).values.mean(1)

    @torch.no_grad()
    def calibrate_decoder_variance(self, x: torch.Tensor, trim_fraction: float) -> None:
        """Raise each member's per-feature decoder variance to its mean squared
        residual on held-out rows ``x`` (rows, features) where it is smaller.

        A member trained on few rows reconstructs them better than new data and its
        learned noise level is overconfident; held-out residuals measure the noise
        level on new data. The ``trim_fraction`` of rows with the lowest ELBO under
        each member are left out, as in training. Only for per-feature variances.
        """
        if self.decoder_logvar is None or x.shape[0] < 2:
            return
        mu, logvar = self.encode(x)
        mean, dec_logvar = self.decode(mu)
        residual = (x.unsqueeze(0) - mean).square()  # (members, rows, features)
        loss = self.kl_divergence(mu, logvar) - self.gaussian_log_likelihood(x, mean, dec_logvar)
        keep = max(1, int(round((1.0 - trim_fraction) * x.shape[0])))
        rows = torch.topk(loss, keep, dim=1, largest=False, sorted=False).indices
        residual = torch.gather(residual, 1, rows.unsqueeze(-1).expand(-1, -1, x.shape[1]))
        held_out = torch.log(residual.mean(1, keepdim=True)).clamp(*DECODER_LOGVAR_BOUNDS)
        self.decoder_logvar.copy_(torch.maximum(self.decoder_logvar, held_out))

    def member_scores(self, x: torch.Tensor, score_type: str) -> torch.Tensor:
        """Per-member normality scores (higher = more normal) of rows ``x``."""
        mu, logvar = self.encode(x)
        if score_type == "reconstruction":
            mean, _ = self.decode(mu)
            return -(x - mean).square().mean(-1)
        if score_type == "elbo":
            mean, dec_logvar = self.decode(mu)
            return self.gaussian_log_likelihood(x, mean, dec_logvar) - self.kl_divergence(
                mu, logvar
            )
        if score_type == "reconstruction_probability":
            std = torch.exp(0.5 * logvar)
            total = torch.zeros(mu.shape[:2], dtype=mu.dtype, device=mu.device)
            for noise in self.score_noise:
                mean, dec_logvar = self.decode(mu + std * noise)
                total += self.gaussian_log_likelihood(x, mean, dec_logvar)
            return total / self.score_noise.shape[0]
        raise ValueError(f"unknown score_type {score_type!r}")

    def scores(self, x: torch.Tensor, score_type: str) -> torch.Tensor:
        """Ensemble normality scores of rows ``x`` (rows, features): the members' mean."""
        return self.member_scores(x, score_type).mean(0)
