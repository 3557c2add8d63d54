"""Where a network lives: device resolution, scoring precision, the one fallback used
when a saved CUDA model is loaded on a machine without CUDA, and the CPU threads a fit
or a scoring call uses."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator

import torch


def resolve_device(device: str) -> torch.device:
    """Turn a device string into a :class:`torch.device`, or raise ValueError.

    ``'auto'`` is CUDA when available, else the CPU; ``'cuda'``/``'cuda:N'`` must exist.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if match is None:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available; use device='cpu' "
            "(--device cpu on the command line)."
        )
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} was requested but only {torch.cuda.device_count()} "
            "CUDA device(s) exist."
        )
    return torch.device(device)


def restore_device(saved: str, requested: str | None = None) -> torch.device:
    """The device a saved network is loaded onto: ``requested`` when given, else the
    device it was saved from; a CUDA model on a machine without CUDA goes to the CPU,
    with a warning (as skorch's ``get_map_location`` does)."""
    if requested is not None:
        return resolve_device(str(requested))
    saved = str(saved)
    if saved.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"The model was saved on {saved!r} but CUDA is not available here; it is "
            "loaded on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    if saved.startswith("cuda"):
        try:
            return resolve_device(saved)
        except ValueError:  # fewer GPUs than where it was saved
            return torch.device("cuda")
    return torch.device("cpu")


def scoring_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """Precision of a fitted network: ``'auto'`` and ``'float32'`` are float32 (the
    precision it is trained in; scoring runs in fixed-shape chunks, so a row's score
    does not depend on the rows scored with it), ``'float64'`` is float64."""
    return torch.float64 if precision == "float64" else torch.float32


# Multiply-adds of one pass (a training step's forward pass, or one scoring chunk) per
# thread, at least: below this a second thread costs more in synchronisation than it
# saves (benchmarks/RESULTS.md, "Busy machine: threads": on 2 idle cores a default
# step of 4.6 M ran 0.90x as fast on two threads, steps of 19-20 M 1.23-1.32x).
WORK_PER_THREAD = 8_000_000


def n_threads(n_jobs: int | None, work: float | None = None) -> int:
    """PyTorch intra-op threads for ``n_jobs``, with scikit-learn's meaning: ``None`` is
    1 unless a ``joblib.parallel_config`` (or ``parallel_backend``) context says
    otherwise, ``-1`` all cores, ``-2`` all but one. Never more than PyTorch's current
    setting (which ``OMP_NUM_THREADS``, ``torch.set_num_threads`` and threadpoolctl's
    ``threadpool_limits`` set; joblib's workers get their share of the cores) nor
    ``OMP_NUM_THREADS`` where set, and, given the ``work`` of one pass in multiply-adds,
    no more than one thread per :data:`WORK_PER_THREAD`."""
    from joblib import effective_n_jobs

    n = max(1, int(effective_n_jobs(n_jobs)))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        n = min(n, int(limit))
    n = min(n, torch.get_num_threads(), os.cpu_count() or 1)
    if work is not None:
        n = min(n, max(1, int(work // WORK_PER_THREAD)))
    return n


@contextlib.contextmanager
def torch_threads(n_jobs: int | None, work: float | None = None) -> Iterator[int]:
    """Run the block with :func:`n_threads` intra-op threads, then restore the process's
    setting (nothing process-wide is left changed)."""
    n, before = n_threads(n_jobs, work), torch.get_num_threads()
    if n == before:
        yield n
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
