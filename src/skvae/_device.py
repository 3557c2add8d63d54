"""Where a network lives: device resolution, scoring precision and the one fallback used
when a saved CUDA model is loaded on a machine without CUDA."""

from __future__ import annotations

import re
import warnings

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
