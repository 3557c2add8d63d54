"""Input checks shared by fitting, scoring and the compat layer, and reading
out-of-core data (numpy memmaps, h5py datasets) in contiguous chunks."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import warnings
import zipfile
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.utils import gen_batches

# Rows read at a time from out-of-core data while gathering training rows.
OUT_OF_CORE_CHUNK = 65536


def is_out_of_core(X) -> bool:
    """Whether ``X`` is a numpy memmap or an h5py dataset, read in chunks, not loaded."""
    if isinstance(X, np.memmap):
        return True
    h5py = sys.modules.get("h5py")
    return h5py is not None and isinstance(X, h5py.Dataset)


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages (a value can be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def check_regular_file(path: str | os.PathLike, info: os.stat_result | None = None) -> int:
    """The size of ``path``, a regular file (links followed); a FIFO, device, socket or
    folder is a ValueError naming it, found before anything opens it (a FIFO would
    hang the reader, a device such as ``/dev/zero`` never ends)."""
    if info is None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"File not found: {path}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{path} is a folder; give the path of a file")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"{path} is not a regular file (a FIFO, device or socket); refusing to read it"
        )
    return info.st_size


def finite_number(value, name: str) -> float:
    """``value`` as a finite float, else a ValueError naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
        out = float("nan")
    if not np.isfinite(out):
        raise ValueError(f"{name} must be a finite number; got {short_repr(value)}")
    return out


def check_values(chunk: np.ndarray | torch.Tensor, first_row: int = 0, empty_ok: bool = False):
    """Raise ValueError when rows ``chunk`` (an array or tensor; its first row is row
    ``first_row`` of X) hold infinity, or (unless ``empty_ok``) a row with no observed
    value: NaN is a missing value. Returns the positions in ``chunk`` of the rows with
    every value missing (an int array, empty when there are none)."""
    if isinstance(chunk, torch.Tensor):
        if not chunk.is_floating_point():
            return np.zeros(0, dtype=int)
        infinite, empty = bool(torch.isinf(chunk).any()), torch.isnan(chunk).all(1)
        empty = empty.nonzero().flatten().cpu().numpy() if bool(empty.any()) else []
    else:
        if chunk.dtype.kind not in "fc":
            return np.zeros(0, dtype=int)
        infinite, empty = bool(np.isinf(chunk).any()), np.flatnonzero(np.isnan(chunk).all(1))
    if infinite:
        raise ValueError("Input X contains infinity.")
    if len(empty) and not empty_ok:
        rows = ", ".join(str(first_row + int(i)) for i in empty[:5])
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise ValueError(
            f"X has rows with every value missing (NaN): row {rows}{more}. A row needs at "
            "least one observed value to be trained on."
        )
    return np.asarray(empty, dtype=int)


def warn_empty_rows(n_empty: int, what: str) -> None:
    """The one warning about rows with every value missing: how many, and ``what``
    they got instead of a computed result."""
    if n_empty:
        warnings.warn(
            f"{n_empty} row(s) of X have every value missing (NaN): {what}.",
            UserWarning,
            stacklevel=4,
        )


def check_out_of_core(X) -> tuple[int, int]:
    """Shape of a memmap or h5py dataset, checked without reading its values."""
    if len(X.shape) != 2:
        raise ValueError(f"Expected a 2D array, got an array of shape {X.shape}.")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"X must be numeric; got dtype {X.dtype}.")
    n_samples, n_features = X.shape
    if n_samples < 1 or n_features < 1:
        raise ValueError(
            f"Found array with {n_samples} sample(s) and {n_features} feature(s); "
            "at least 1 of each is required."
        )
    return n_samples, n_features


def is_dense(X: torch.Tensor) -> bool:
    """Whether ``X`` is a dense tensor holding values (not sparse, quantized or meta)."""
    return X.layout == torch.strided and not X.is_quantized and X.device.type != "meta"


def check_tensor(X: torch.Tensor, n_features: int, owner: str) -> torch.Tensor:
    """A 2D real tensor of ``n_features`` columns, detached from any autograd graph."""
    if not is_dense(X):
        kind = "a meta" if X.device.type == "meta" else f"a {X.layout} or quantized"
        raise TypeError(f"Cannot score {kind} tensor: pass a dense tensor with values.")
    if X.dim() != 2:
        raise ValueError(f"Expected a 2D tensor, got a {X.dim()}D tensor.")
    if X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but {owner} is expecting {n_features} features as input."
        )
    if X.shape[0] == 0:
        raise ValueError("Found a tensor with 0 sample(s); a minimum of 1 is required.")
    if X.is_complex() or X.dtype == torch.bool:
        raise TypeError(f"Cannot score a tensor of dtype {X.dtype}.")
    return X.detach()


def gather_rows(X, rows: np.ndarray) -> np.ndarray:
    """``X[rows]`` (sorted row indices) for an out-of-core ``X``, read in contiguous
    chunks (fast for h5py, unlike fancy indexing); checks every value read (rows with
    every value missing are found by :func:`blank_rows` beforehand)."""
    parts = []
    for block in gen_batches(X.shape[0], OUT_OF_CORE_CHUNK):
        chunk = np.asarray(X[block])
        check_values(chunk, block.start, empty_ok=True)
        lo, hi = np.searchsorted(rows, [block.start, block.stop])
        parts.append(chunk[rows[lo:hi] - block.start].astype(np.float64))
    return np.concatenate(parts)


def blank_rows(X) -> np.ndarray:
    """The rows of ``X`` (in memory or out of core, read in chunks) with every value
    missing; infinity is a ValueError."""
    if not is_out_of_core(X):
        return check_values(X, empty_ok=True)
    found = [
        block.start + check_values(np.asarray(X[block]), block.start, empty_ok=True)
        for block in gen_batches(X.shape[0], OUT_OF_CORE_CHUNK)
    ]
    return np.concatenate(found)


# A member of an .npz archive may inflate to this many times its compressed size, plus
# the allowance: generous for datasets (constant columns and flags compress well), and
# still proportional to the file, where a zip bomb inflates a million times.
NPZ_MAX_INFLATION = 100
NPZ_INFLATION_ALLOWANCE = 64 * 2**20


def check_numpy_claims(fh, file) -> None:
    """Refuse a ``.npy`` or ``.npz`` file (open as ``fh``, at its start) whose headers
    claim more data than the file holds, before NumPy allocates for the claim."""
    start = fh.tell()
    if zipfile.is_zipfile(fh):
        fh.seek(start)
        with zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                if (
                    info.file_size
                    > NPZ_MAX_INFLATION * info.compress_size + NPZ_INFLATION_ALLOWANCE
                ):
                    raise ValueError(
                        f"{info.filename} inflates to {info.file_size} bytes (a zip bomb?)"
                    )
                if info.filename.endswith(".npy"):
                    with zf.open(info) as member:
                        _check_npy_header(member, info.file_size, info.filename)
    else:
        fh.seek(0, os.SEEK_END)
        size = fh.tell() - start
        fh.seek(start)
        _check_npy_header(fh, size, "the array")
    fh.seek(start)


def _check_npy_header(fh, size: int, what: str) -> None:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read(fh)  # the header only, checked by NumPy; no data read
    if dtype.kind not in "fiub" or dtype.itemsize == 0 or dtype.fields or dtype.subdtype:
        raise ValueError(f"{what} has dtype {dtype}, not numbers")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > size:
        raise ValueError(f"{what} claims {claimed} bytes of data; the file holds {size}")
    if max(shape, default=0) > max(size, 1):  # (10**9, 0) holds nothing but claims rows
        raise ValueError(f"{what} claims a shape of {shape}; the file holds {size} bytes")


def check_labels(
    y, n_samples: int, both_classes: bool = True, against: str = "X has {} rows"
) -> np.ndarray:
    """``y`` as an int array of 0 (normal) and 1 (anomaly), with both present when
    ``both_classes``, else a ValueError saying what is wrong (``against`` names what
    its length must match)."""
    y = np.asarray(y).ravel()
    if len(y) != n_samples:
        raise ValueError(f"y has {len(y)} labels but {against.format(n_samples)}.")
    try:
        values = np.unique(y).tolist()  # NaNs collapse to one
    except TypeError:  # mixed types
        values = sorted(set(y.tolist()), key=str)
    if not set(values) <= {0, 1}:
        hint = (
            " (for predict's convention, +1 normal and -1 anomaly, pass y == -1)"
            if set(values) == {-1, 1}
            else ""
        )
        shown = ", ".join(map(repr, values[:5])) + (", ..." if len(values) > 5 else "")
        raise ValueError(f"y must be 1 (anomaly) or 0 (normal); got values {shown}{hint}.")
    if both_classes and len(values) < 2:
        raise ValueError("y must contain both classes, 0 (normal) and 1 (anomaly).")
    return y.astype(int)


@contextlib.contextmanager
def numpy_file_errors(file: str | os.PathLike) -> Iterator[None]:
    """Report a NumPy data file (``.npy``, ``.npz``, ``.csv``) that cannot be read as a
    ValueError naming it, instead of NumPy's message (which, for a file that is not
    NumPy's at all, suggests unpickling it)."""
    try:
        yield
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
        text = str(exc)
        if "pickle" in text or "Object arrays" in text:
            text = (
                "not a NumPy file of numbers (damaged, another format, or object "
                "arrays, which skvae does not unpickle)"
            )
        raise ValueError(f"{file}: {' '.join(text.split())}") from None
