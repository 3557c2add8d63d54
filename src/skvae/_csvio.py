"""CSV tables of numbers: one reader, one writer.

Reading never guesses silently: one line of numbers is one row, in order. A UTF-8 byte
order mark is stripped; lines that are blank or start with ``#`` are not rows (pandas
skips blank lines too); cells that pandas reads as missing (empty, ``NA``, ``NaN``,
``null``, ...) are NaN. Whether the first line is a header is decided by rule: a line
with a cell that is neither a number nor missing is a header; pandas' default integer
header (``0,1,...,n-1``, or the same after an empty index cell) is a header, with a
warning; a first line of missing cells only is ambiguous and refused unless ``header``
says which. Memory follows the file: a line of more than :data:`MAX_COLUMNS` cells is
refused before it is split.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ._inputs import check_regular_file
from ._network import MAX_NETWORK

MAX_COLUMNS = MAX_NETWORK["n_features"] + 1  # the features, and pandas' index column
CHUNK_ROWS = 8192
# What pandas' read_csv takes for a missing value by default.
MISSING = frozenset(
    "|#N/A|#N/A N/A|#NA|-1.#IND|-1.#QNAN|-NaN|-nan|1.#IND|1.#QNAN|<NA>|N/A|NA|NULL|NaN|None"
    "|n/a|nan|null".split("|")
)


def _kind(cell: str) -> str:
    """``'number'``, ``'missing'`` or ``'text'``."""
    cell = cell.strip()
    if cell in MISSING:
        return "missing"
    try:
        float(cell)
    except ValueError:
        return "text"
    return "number"


def _integer_header(cells: list[str]) -> bool:
    """pandas' header of a frame without column names: ``0,1,...`` after an optional
    empty index cell."""
    names = [c.strip() for c in cells]
    if names and names[0] == "":
        names = names[1:]
    return len(names) >= 2 and names == [str(i) for i in range(len(names))]


class _Lines:
    """The file's lines that are rows, each checked for its number of cells before it
    is split; ``number`` is the line number (1-based) of the last line given out."""

    def __init__(self, fh: io.TextIOBase, file: Path) -> None:
        self.fh, self.file, self.number = fh, file, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.fh:
            self.number += 1
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if line.count(",") >= MAX_COLUMNS:
                raise ValueError(
                    f"{self.file}: line {self.number} has more than {MAX_COLUMNS} cells"
                )
            yield line


def _is_header(first: list[str], file: Path) -> bool:
    """Whether the first row is a header, by the module's rules."""
    kinds = {_kind(c) for c in first}
    if "text" in kinds:
        return True
    if _integer_header(first):
        warnings.warn(
            f"{file}: reading the first row ({','.join(first)[:40]}) as pandas' integer "
            "header; pass header=False (--no-header) if it is data",
            UserWarning,
            stacklevel=4,
        )
        return True
    if kinds == {"missing"}:
        raise ValueError(
            f"{file}: the first row holds no number and no name, so it may be a header or a "
            "row with every value missing: pass header=True or header=False (--header or "
            "--no-header)"
        )
    return False


def _cell(text: str, file: Path, line: int, column: int) -> float:
    text = text.strip()
    if text in MISSING:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{file}: line {line}, column {column + 1}: {text[:40]!r} is not a number"
        ) from None


def read_numbers(
    path: str | os.PathLike, header: bool | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """The rows of numbers of a CSV file and its header's names.

    Parameters
    ----------
    path : path-like
        A regular file (a FIFO or device is refused), comma-separated, UTF-8.
    header : bool or None, default=None
        Whether the first row is a header; None decides by the module's rules.

    Returns
    -------
    X : ndarray of shape (n_rows, n_columns)
        float64; missing cells are NaN. pandas' unnamed index column (an empty first
        header cell) is left out.
    names : list of str or None
        The header's names.
    """
    file = Path(path)
    check_regular_file(file)
    with open(file, encoding="utf-8-sig", newline="") as fh:
        lines = _Lines(fh, file)
        rows = csv.reader(iter(lines), strict=True)
        try:
            first = next(rows, None)
            if first is None:
                raise ValueError(f"{file}: no rows of numbers.")
            first_line = lines.number
            if header is None:
                header = _is_header(first, file)
            names = [c.strip() for c in first] if header else None
            n_columns = len(first)
            chunks, pending = [], [] if header else [(first_line, first)]
            for row in rows:
                pending.append((lines.number, row))
                if len(pending) == CHUNK_ROWS:
                    chunks.append(_to_array(pending, n_columns, file))
                    pending = []
            if pending:
                chunks.append(_to_array(pending, n_columns, file))
        except csv.Error as exc:
            raise ValueError(f"{file}: line {lines.number}: {exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{file}: not a UTF-8 text file (line {lines.number + 1})") from None
    if not chunks:
        raise ValueError(f"{file}: no rows of numbers.")
    X = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    if names is not None and names[0] == "":  # pandas' index column, written unnamed
        X, names = X[:, 1:], names[1:]
    if X.shape[1] == 0:
        raise ValueError(f"{file}: no columns of numbers.")
    return X, names


def _to_array(rows: list[tuple[int, list[str]]], n_columns: int, file: Path) -> np.ndarray:
    for line, row in rows:
        if len(row) != n_columns:
            raise ValueError(
                f"{file}: line {line} has {len(row)} cells; the first row has {n_columns}"
            )
    cells = [row for _, row in rows]
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:  # missing-value markers, or text: cell by cell, naming the first
        return np.array(
            [[_cell(c, file, line, j) for j, c in enumerate(row)] for line, row in rows],
            dtype=np.float64,
        )


def write_table(fh, columns: Sequence[str], values: np.ndarray) -> None:
    """Write a header of ``columns`` and the rows of ``values`` (floats written so
    they read back exactly) as CSV, quoting names that need it, to the binary ``fh``."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(list(columns))
    for row in np.asarray(values).tolist():
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    fh.write(text.getvalue().encode())
