"""The training loop: optimisation steps, checks of the losses, early stopping,
divergence and progress, for a :class:`~skvae._network.VAEEnsemble` whose members are
trained together.

The estimator prepares the data (scaled float32 rows, each member's subsample, the
validation rows) and calls :func:`train`; everything that happens between the first
step and the restored best weights is here.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import torch
from tqdm.auto import tqdm

from ._network import VAEEnsemble, Workspace, chunk_rows, flat_parameters

# Optimisation steps each member takes when ``epochs='auto'``.
AUTO_STEPS = 100
# Optimisation steps between checks of the losses (validation, early stopping, the
# history), at least: a check runs at the end of the first epoch that completes them.
CHECK_STEPS = 20
# Seconds between progress lines when standard error is not a terminal (a log file).
PROGRESS_LINE_SECONDS = 10.0


class Progress:
    """Progress of a fit in optimisation steps, with their rate.

    ``verbose`` 0 shows nothing; 1 shows tqdm's bar on a terminal (redrawn at most
    twice a second) and, when ``stream`` is not a terminal (a log file), a plain line
    every :data:`PROGRESS_LINE_SECONDS` and at the end; 2 also writes the losses of
    every check on a line of their own.
    """

    def __init__(
        self,
        total_steps: int,
        verbose: int,
        stream: TextIO | None = None,
        ncols: int | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.verbose, self.done = total_steps, int(verbose), 0
        self.start = self.last_line = time.perf_counter()
        self.losses: dict[str, float] = {}
        terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = (
            tqdm(  # a short description and one loss: the bar keeps its width at 80
                total=total_steps,
                desc="fit",
                unit="step",
                mininterval=0.5,
                file=self.stream,
                ncols=ncols,
            )
            if self.verbose and terminal
            else None
        )

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.verbose and time.perf_counter() - self.last_line >= PROGRESS_LINE_SECONDS:
            self._line()

    def check(self, epoch: int, losses: dict[str, float]) -> None:
        self.losses = losses
        if self.bar is not None and losses:
            key = "val_loss" if "val_loss" in losses else next(iter(losses))
            self.bar.set_postfix_str(f"{key.removesuffix('_loss')} {losses[key]:.4g}")
        if self.verbose >= 2:  # in steps, as the bar and the progress lines count
            text = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
            self._write(f"VAEOutlierDetector.fit: check at step {self.done}/{self.total}: {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.verbose:
            self._line()

    def _line(self) -> None:
        self.last_line = time.perf_counter()
        rate = self.done / max(self.last_line - self.start, 1e-9)
        losses = "".join(f", {k} {v:.4g}" for k, v in self.losses.items())
        self._write(
            f"VAEOutlierDetector.fit: step {self.done}/{self.total} ({rate:.1f} steps/s{losses})"
        )

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


@dataclass(frozen=True)
class Schedule:
    """The hyperparameters of one training run (the estimator's, as given)."""

    epochs: int | str
    batch_size: int
    lr: float
    weight_decay: float
    beta: float
    trim_fraction: float
    patience: int | None
    verbose: int

    def n_epochs(self, n_rows: int) -> int:
        """Epochs to run over ``n_rows`` rows per member: ``epochs``, or for ``'auto'``
        enough for :data:`AUTO_STEPS` optimisation steps."""
        if self.epochs != "auto":
            return int(self.epochs)
        steps_per_epoch = -(-n_rows // min(self.batch_size, n_rows))
        return max(1, -(-AUTO_STEPS // steps_per_epoch))


def train(
    module: VAEEnsemble,
    Z: torch.Tensor,
    subsets: torch.Tensor,
    Z_val: torch.Tensor,
    schedule: Schedule,
    *,
    seed: int,
) -> tuple[dict[str, list[float]], int, int]:
    """Train ``module`` in place and restore the weights of its best check.

    Each step every member takes a batch of its own rows (``subsets[m]`` index ``Z``),
    the loss and its gradient come from :meth:`VAEEnsemble.loss_gradient` (the trimmed
    ELBO, gradient written by hand; with missing values (NaN in ``Z``), the ELBO of
    the observed values, the encoder seeing them and their mask), and one fused Adam
    update moves all parameters, viewed as one flat tensor. Until the first check each
    step trims the rows of its batch with the highest loss; from the first check on,
    each member's trimmed rows are fixed (:func:`concentrate`). A check runs at the end of
    the first epoch that completes :data:`CHECK_STEPS` steps since the previous one,
    and after the last epoch: it records the mean training losses and, with
    validation rows, the validation loss, which early stopping (``patience`` checks
    without improvement) and the restored weights follow; without them, the last
    check's weights are kept.
    A check with a non-finite loss stops training: the best earlier weights are
    restored with a warning, or, with none, it is a ValueError.

    Parameters
    ----------
    module : VAEEnsemble
        The network, in float32 on the training device.
    Z : torch.Tensor of shape (n_rows, n_features)
        Scaled training rows.
    subsets : torch.Tensor of shape (n_members, n_member_rows)
        Each member's rows of ``Z``.
    Z_val : torch.Tensor of shape (n_val, n_features)
        Scaled validation rows (may be empty).
    schedule : Schedule
        Epochs, batch size, optimiser and loss settings, early stopping, verbosity.
    seed : int
        Seeds the batches' order and the reparameterisation noise.

    Returns
    -------
    history : dict of list of float
        ``epoch`` and the losses of each check.
    n_epochs : int
        Epochs run.
    best_epoch : int
        The epoch whose weights were restored.
    """
    device = Z.device
    n_members, n_rows = subsets.shape
    batch_size = min(schedule.batch_size, n_rows)
    epochs = schedule.n_epochs(n_rows)
    use_val = len(Z_val) > 0
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    keys = ["train_loss", "train_recon", "train_kl"]
    if use_val:
        keys += ["val_loss", "val_recon", "val_kl"]
    history: dict[str, list[float]] = {k: [] for k in ["epoch", *keys]}

    best_state = None
    best_value, best_epoch, since_best, epoch = np.inf, 0, 0, 0
    # Each step's rows and members' loss, nll and KL (means over the rows) since
    # the last check.
    recorded: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    # When one batch covers each member's rows (the defaults), the order of the rows
    # in it does not matter: the batch is gathered once.
    whole = Z[subsets] if batch_size >= n_rows else None
    missing = bool(torch.isnan(Z).any())
    whole_mask = None
    if missing and whole is not None:  # split once, not every step (a sync on a GPU)
        whole, whole_mask = module.observed(whole)
    kept = None  # (members, rows): each member's rows that count, from the first check
    workspace = Workspace()  # the step's large intermediates, allocated once
    progress = Progress(epochs * -(-n_rows // batch_size), schedule.verbose)
    module.train()  # (the validation loss puts it back after each check)
    # One Adam update for all the parameters and gradients written by hand
    # (VAEEnsemble.loss_gradient): on small data a step is mostly operator overhead,
    # which autograd's graph and per-parameter updates add to (benchmarks/RESULTS.md,
    # "What made the step cheaper").
    with flat_parameters(module) as flat, contextlib.closing(progress):
        optimizer = torch.optim.Adam(
            [flat], lr=schedule.lr, weight_decay=schedule.weight_decay, **_fused_adam(device)
        )
        for epoch in range(1, epochs + 1):
            if whole is None:
                order = torch.argsort(
                    torch.rand(n_members, n_rows, generator=gen, device=device), dim=1
                )
                rows = torch.gather(subsets, 1, order)
            for start in range(0, n_rows, batch_size):
                xb = whole if whole is not None else Z[rows[:, start : start + batch_size]]
                kept_b = kept
                if kept is not None and whole is None:
                    kept_b = torch.gather(kept, 1, order[:, start : start + batch_size])
                noise = torch.randn(
                    (*xb.shape[:2], module.latent_dim), generator=gen, device=device
                )
                mask = whole_mask
                if missing and whole is None:
                    xb, mask = module.observed(xb)
                loss, nll, kl = module.loss_gradient(
                    xb, noise, schedule.beta, schedule.trim_fraction, mask, workspace, kept_b
                )
                recorded.append((xb.shape[1], loss, nll.mean(1), kl.mean(1)))
                optimizer.step()
                progress.step()
            # Checks run once at least CHECK_STEPS steps have passed, at epoch ends,
            # and after the last epoch: on small data an epoch is a single step.
            if len(recorded) < CHECK_STEPS and epoch < epochs:
                continue
            values = mean_training_losses(recorded)
            recorded.clear()
            if use_val:
                values += validation_loss(module, Z_val, schedule.beta)
            history["epoch"].append(epoch)
            for key, value in zip(keys, values):
                history[key].append(value)
            progress.check(epoch, dict(zip(keys, values)))
            if not np.isfinite(values).all():
                _diverged(epoch, dict(zip(keys, values)), best_epoch, best_state is None)
                break
            if len(history["epoch"]) == 1 and epoch < epochs:  # the first check
                kept = concentrate(module, Z, subsets, schedule.beta, schedule.trim_fraction)
            monitored = values[3] if use_val else values[0]
            if monitored < best_value or not use_val:
                best_value, best_epoch, since_best = monitored, epoch, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                since_best += 1
                if schedule.patience is not None and since_best >= schedule.patience:
                    break
    module.load_state_dict(best_state)
    return history, epoch, best_epoch


def concentrate(
    module: VAEEnsemble, Z: torch.Tensor, subsets: torch.Tensor, beta: float, trim_fraction: float
) -> torch.Tensor | None:
    """Each member's rows that count in its training loss from now on, as a mask
    (members, rows) over ``subsets``: the ``1 - trim_fraction`` of its rows (at least
    one) with the lowest ``nll + beta * kl`` at the posterior mean; None when
    ``trim_fraction`` trims no row.

    A concentration step, as in MCD: once chosen, the trimmed rows stay out. Chosen
    anew each step, they are the rows the network explains worst at that step, and a
    group of copies of one outlier, once learned, is explained well and comes back in:
    the network memorises it. Chosen early, before the network can fit such groups,
    they stay out.
    """
    n_members, n_rows = subsets.shape
    keep = max(1, int(round((1.0 - trim_fraction) * n_rows)))
    if keep >= n_rows:
        return None
    chunk = chunk_rows(module)
    with torch.no_grad():
        parts = [
            module.loss_terms(Z[subsets[:, a : a + chunk]], None) for a in range(0, n_rows, chunk)
        ]
        losses = torch.cat([nll + beta * kl for nll, kl in parts], 1)
    lowest = torch.topk(losses, keep, dim=1, largest=False).indices
    return torch.zeros((n_members, n_rows), dtype=torch.bool, device=Z.device).scatter_(
        1, lowest, True
    )


def _diverged(epoch: int, losses: dict[str, float], best_epoch: int, no_best: bool) -> None:
    """Report a check with non-finite losses: a ValueError before any finite check,
    else a warning that the best earlier weights are restored."""
    bad = ", ".join(f"{k} {v}" for k, v in losses.items() if not np.isfinite(v))
    if no_best:
        raise ValueError(
            f"Training diverged by epoch {epoch} ({bad}) before any check with a finite "
            "loss; lower lr or check the scale of X."
        )
    warnings.warn(
        f"Training diverged by epoch {epoch} ({bad}); the weights of epoch {best_epoch} "
        "were restored.",
        RuntimeWarning,
        stacklevel=5,
    )


def mean_training_losses(recorded: list[tuple]) -> list[float]:
    """The mean loss, nll and KL per row (and member) of the steps ``recorded`` by
    :func:`train`, each (rows, member losses, member nlls, member KLs)."""
    rows, *parts = zip(*recorded)
    weights = torch.tensor(rows, dtype=torch.float32, device=parts[0][0].device)
    per_step = torch.stack([torch.stack(part).mean(1) for part in parts], 1)  # (steps, 3)
    return ((per_step * weights.unsqueeze(1)).sum(0) / weights.sum()).tolist()


def validation_loss(module: VAEEnsemble, Z_val: torch.Tensor, beta: float) -> list[float]:
    """Mean per-sample (loss, nll, kl) of the members on the validation rows, computed
    in chunks of :func:`~skvae._network.chunk_rows` rows."""
    module.eval()
    chunk = chunk_rows(module)
    with torch.inference_mode():
        val_sums = torch.zeros(2, device=Z_val.device, dtype=torch.float64)
        for start in range(0, len(Z_val), chunk):
            nll, kl = module.loss_terms(Z_val[start : start + chunk], None)
            val_sums += torch.stack([nll.mean(0).sum(), kl.mean(0).sum()])
    module.train()
    val_nll, val_kl = (val_sums / len(Z_val)).tolist()
    return [val_nll + beta * val_kl, val_nll, val_kl]


def _fused_adam(device: torch.device) -> dict[str, bool]:
    return {"fused": True} if device.type in ("cpu", "cuda") else {}
