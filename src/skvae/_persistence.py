"""Model files: the one reader and writer of every layout skvae reads.

The format skvae writes is ``.skvae``, a zip archive with three members:

- ``metadata.json``: hyperparameters, the network's architecture, fitted scalars
  (threshold, score statistics, history, feature names), an ``info`` block (task, data
  source, feature layout, splits, config, threshold candidates) and versions;
- ``weights.pt``: the network's state dict (with the input scaling) and the training
  scores, written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
  which only rebuilds tensors;
- ``SHA256SUMS``: the SHA-256 of both.

Files are untrusted input: sizes are checked before members are read, checksums before
they are parsed, the weights' archive (stored members matching their CRCs, a pickle of
the protocol skvae writes) before torch reads it, and every field against the schema
(types, finite values, lengths, the architecture against the shapes of the weights)
before anything is built from them.

It also reads, without running code from them, the pair the old ``vae_module`` wrote
(``<stem>_model.pth`` + ``<stem>_meta_data.pkl``), the pair skvae 0.1.0's
``skvae.compat`` wrote, and ``.skvae`` files of format version 1 (skvae 0.1.0). All are
turned into one :class:`ModelRecord`; the estimator builds itself from that record.
Beside a ``.skvae`` file written by :mod:`skvae.compat`, ``<stem>_meta_data.pkl`` holds
the old module's metadata as plain data (:func:`write_vae_module_metadata`), for scripts
that read or edit it (GORMPO's ``--compute_thresholds_only`` stores its threshold
candidates there); candidates edited in it are read back with the ``.skvae`` file.
This module knows nothing of the estimator.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from . import __version__
from ._inputs import finite_number, short_repr
from ._network import MAX_DECODER_DF, MAX_NETWORK, MAX_PARAMETERS, n_parameters, state_shapes
from ._plainpickle import load_plain_pickle, read_regular_file
from ._thresholds import normalize, safe_std

FORMAT_NAME = "skvae-model"
FORMAT_VERSION = 4
SUFFIX = ".skvae"
PAIR_WEIGHTS = "_model.pth"
PAIR_META = "_meta_data.pkl"
COMPAT_V1 = "skvae-compat-1"  # what skvae 0.1.0's compat layer wrote
DECISION_SCORES_KEY = "__decision_scores__"
CALIBRATION_SCORES_KEY = "__calibration_scores__"
CALIBRATION_SOURCES = ("out-of-bag", "validation", "none")
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
MEMBERS = ("metadata.json", "weights.pt", "SHA256SUMS")
# Largest members read (uncompressed bytes): a zip bomb is refused before it inflates.
MAX_METADATA_BYTES = 16 * 2**20
MAX_WEIGHTS_BYTES = 2 * 2**30
MAX_PAIR_METADATA_BYTES = 16 * 2**20
# A member may inflate to this many times its compressed size, plus the allowance: model
# weights and scores compress little, so only a zip bomb goes beyond.
MAX_INFLATION = 10
INFLATION_ALLOWANCE = 16 * 2**20
# The pickle protocol of the weights' ``torch.save`` archive (torch's default, named so
# that the reader can require it).
WEIGHTS_PICKLE_PROTOCOL = 2


@dataclass
class Fitted:
    """The fitted scalars a model file keeps (``metadata.json``'s ``fitted``): the one
    definition the writer, every reader and :func:`validate_record` use."""

    device: str
    n_features_in: int
    offset: float
    score_mean: float
    score_std: float
    feature_names_in: list[str] | None = None
    history: dict[str, list] = field(default_factory=dict)
    n_epochs: int = 0
    best_epoch: int = 0
    calibration_source: str = "none"

    @classmethod
    def from_json(cls, values: dict[str, Any], path) -> Fitted:
        """The fields of ``values`` (keys this version does not know are ignored); a
        missing required field is a ValueError naming it."""
        names = [f.name for f in fields(cls)]
        for f in fields(cls):
            if f.name not in values and f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{path}: metadata field 'fitted.{f.name}' is missing")
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class ModelRecord:
    """Everything a model file holds, in one shape whatever the file's layout.

    ``params`` are the estimator's hyperparameters, ``network`` the architecture of
    :class:`~skvae._network.VAEEnsemble`, ``state`` its state dict (input scaling
    included), ``fitted`` the fitted scalars, ``decision_scores`` the training anomaly
    scores (empty when the file did not keep them), ``info`` what the file says about
    the model's data and use (threshold candidates keyed by integer percentile, in
    normalised units), ``source`` the layout that was read.
    """

    params: dict[str, Any]
    network: dict[str, Any]
    state: dict[str, torch.Tensor]
    fitted: Fitted
    decision_scores: np.ndarray
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    calibration_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


# ---------------------------------------------------------------------------- writing
def atomic_write(
    path: str | os.PathLike,
    write: Callable[[io.BufferedWriter], None],
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write a file through a temporary file in the same folder, flushed and fsynced,
    then moved into place with ``os.replace``: a failed or interrupted write leaves the
    previous file intact and no partial file.

    ``check(temporary_path)``, when given, runs on the written file before it replaces
    anything (and raises to keep the previous file). The file keeps the mode of the
    file it replaces, or gets the mode a new file gets (``0666`` less the umask); a
    path that names something other than a regular file is refused. Errors name
    ``path``, not the temporary file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of a file in it")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} exists and is not a regular file; refusing to replace it")
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON-able plain data (numpy scalars and arrays, tuples included)."""
    if isinstance(value, np.random.RandomState):
        return None  # the fitted state does not depend on it any more
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # e.g. the loss of a diverged epoch in the history
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}={value!r} cannot be stored in a {SUFFIX} file")


def write_model(path: str | os.PathLike, record: ModelRecord) -> Path:
    """Write ``record`` as a ``.skvae`` file at ``path`` (taken literally), atomically:
    the file is read back with the reader's checks before it replaces anything, so a
    record that ``load`` would refuse is never written."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        # every reader takes such a name for a pickle and refuses it by default
        raise ValueError(
            f"{path}: a {path.suffix} name means a pickle, but this writes a {SUFFIX} "
            f"file; name it {path.with_suffix(SUFFIX).name} (joblib.dump writes pickles)"
        )

    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in record.state.items()}
    for key, values in (
        (DECISION_SCORES_KEY, record.decision_scores),
        (CALIBRATION_SCORES_KEY, record.calibration_scores),
    ):
        state[key] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    torch.save(state, buffer, pickle_protocol=WEIGHTS_PICKLE_PROTOCOL)
    weights = buffer.getvalue()
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": "VAEOutlierDetector",
        "versions": {
            "skvae": __version__,
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "params": _plain(record.params, "params"),
        "network": _plain(record.network, "network"),
        "fitted": _plain(asdict(record.fitted), "fitted"),
        "info": _plain(record.info, "info"),
    }
    text = json.dumps(meta, indent=1, allow_nan=False).encode()
    sums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in (("metadata.json", text), ("weights.pt", weights))
    )

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("metadata.json", text)
            zf.writestr("weights.pt", weights)
            zf.writestr("SHA256SUMS", sums)

    def readable(tmp: Path) -> None:  # one validator: the reader's, before the replace
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                _read_skvae(tmp)
        except ValueError as exc:
            reason = str(exc).replace(str(tmp), str(path))
            raise ValueError(
                f"refusing to write {path}: skvae could not read it back ({reason})"
            ) from None

    return atomic_write(path, write, check=readable)


# ---------------------------------------------------------------------------- locating
def locate(path: str | os.PathLike) -> tuple[str, Path]:
    """Which layout ``path`` names and the file (or pair stem) to read.

    Returns ``('skvae', file)``, ``('pair', stem)`` or ``('pickle', file)``. A path that
    is not a file is tried as a stem: ``<path>.skvae``, then the pair
    ``<path>_model.pth`` + ``<path>_meta_data.pkl``.
    """
    p = Path(path).expanduser()
    if p.is_file():
        name = p.name
        if name.endswith(PAIR_WEIGHTS):
            return "pair", p.with_name(name[: -len(PAIR_WEIGHTS)])
        if name.endswith(PAIR_META):
            return "pair", p.with_name(name[: -len(PAIR_META)])
        if p.suffix.lower() in PICKLE_SUFFIXES:
            return "pickle", p
        return "skvae", p
    candidate = p.with_name(p.name + SUFFIX)
    if candidate.is_file():
        return "skvae", candidate
    weights, meta = p.with_name(p.name + PAIR_WEIGHTS), p.with_name(p.name + PAIR_META)
    if weights.is_file() and meta.is_file():
        return "pair", p
    if p.suffix.lower() == SUFFIX:  # named in full: the stem forms are beside the point
        raise FileNotFoundError(f"Model file not found: {p}")
    raise FileNotFoundError(
        f"Model file not found: {p} (also looked for {candidate.name} and the pair "
        f"{weights.name} + {meta.name})"
    )


# ---------------------------------------------------------------------------- reading
def read_model(path: str | os.PathLike, hidden_dims=None) -> ModelRecord:
    """Read any code-free model layout (see :func:`locate`) into a :class:`ModelRecord`.

    ``hidden_dims`` is needed only for pairs written by the old ``vae_module``, which did
    not store them. Pickled estimators (``.joblib``/``.pkl``) are not read here.
    """
    kind, where = locate(path)
    if kind == "pickle":
        raise ValueError(
            f"{where} is a pickle; loading it can run arbitrary code. Only if you trust "
            "its source, pass allow_code_execution=True (--allow-code-execution)."
        )
    if kind == "pair":
        return _read_pair(where, hidden_dims)
    return _with_edited_candidates(_read_skvae(where), where)


def model_path(save_path: str | os.PathLike) -> Path:
    """The model file written for a save path (``skvae train --model-save-path``,
    ``skvae.compat.VAE.save_model``): the path as given when it ends in ``.skvae``,
    else with ``.skvae`` appended (never cut at a dot); a model name of another
    format (``.pkl``, ``.pth``, ...) is refused.

    Parameters
    ----------
    save_path : path-like
        The path or stem.

    Returns
    -------
    path : pathlib.Path
        The ``.skvae`` file.

    Examples
    --------
    >>> model_path("runs/beta0.5").as_posix()
    'runs/beta0.5.skvae'
    """
    path = Path(save_path).expanduser()
    if path.name.endswith(SUFFIX):
        return path
    if path.suffix.lower() in (*PICKLE_SUFFIXES, ".pth", ".pt", ".json"):
        stem = path.with_suffix("")
        raise ValueError(
            f"{save_path}: skvae writes {SUFFIX} model files, not {path.suffix}; save to "
            f"{stem} (it writes {stem}{SUFFIX}, which load_model({str(stem)!r}), skvae.load "
            f"and skvae score read; code that opens {path.name}_model.pth itself needs "
            "load_model instead)"
        )
    return path.with_name(path.name + SUFFIX)


# ---------------------------------------------------------------------------- the sidecar
def metadata_file(skvae_file: str | os.PathLike) -> Path:
    """The ``<stem>_meta_data.pkl`` beside ``<stem>.skvae``."""
    file = Path(skvae_file)
    return file.with_name(file.name.removesuffix(SUFFIX) + PAIR_META)


def write_vae_module_metadata(
    skvae_file: str | os.PathLike,
    record_values: dict[str, Any],
    candidates: dict[int, float],
) -> Path:
    """Write the old module's metadata for ``skvae_file`` as a pickle of plain data.

    ``record_values`` holds ``threshold`` (score units), ``mean``, ``std``,
    ``input_dim``, ``latent_dim``, ``hidden_dims`` and ``device``; ``candidates`` are in
    ``thr`` units and are written in score units, as the old module kept them. The
    candidates written are kept a second time, so that an edit of
    ``threshold_candidates`` is told from the original, and the SHA-256 of the model
    file's bytes names the model they belong to (copies and ``touch`` keep the pair;
    a model saved again at the same path does not take the old candidates).
    """
    mean, std = float(record_values["mean"]), float(record_values["std"])
    raw = {int(p): float(v) * (std if std > 0 else 1.0) + mean for p, v in candidates.items()}
    meta = {
        **{k: _plain(v, "metadata") for k, v in record_values.items()},
        "threshold_candidates": raw,
        "skvae_written_candidates": dict(raw),
        "skvae_model_file": Path(skvae_file).name,
        "skvae_model_sha256": _file_sha256(Path(skvae_file)),
    }
    target = metadata_file(skvae_file)
    return atomic_write(target, lambda fh: pickle.dump(meta, fh, protocol=4))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_candidates(candidates: Any, where) -> dict[int, float]:
    """Threshold candidates as ``{percentile: thr}``: integer percentiles in (0, 100)
    and values in normalised units within the bounds of a model's own threshold
    (:data:`MAX_OFFSET_STDS` standard deviations); else a ValueError naming ``where``."""
    if not isinstance(candidates, dict):
        raise ValueError(f"{where}: threshold_candidates must be a mapping")
    out = {}
    for key, value in candidates.items():
        digits = key if isinstance(key, int) and not isinstance(key, bool) else None
        if isinstance(key, str) and key.removeprefix("p").isdigit() and len(key) <= 4:
            digits = int(key.removeprefix("p"))
        if digits is None or not 0 < digits < 100:
            raise ValueError(
                f"{where}: threshold_candidates keys are percentiles in (0, 100); "
                f"got {short_repr(key)}"
            )
        thr = finite_number(value, f"{where}: threshold_candidates[{digits}]")
        if abs(thr) > MAX_OFFSET_STDS:
            raise ValueError(
                f"{where}: threshold_candidates[{digits}] lies more than "
                f"{MAX_OFFSET_STDS:g} standard deviations from the mean training score"
            )
        out[digits] = thr
    return out


def _with_edited_candidates(record: ModelRecord, skvae_file: Path) -> ModelRecord:
    """``record`` with the threshold candidates of the sidecar metadata written for it
    (named by its SHA-256), where they were edited after it was written (raw score
    units, converted to ``thr``). A sidecar written for another model is ignored with a
    warning."""
    file = metadata_file(skvae_file)
    if not file.exists():
        return record
    meta = load_plain_pickle(file, MAX_PAIR_METADATA_BYTES)
    if not isinstance(meta, dict) or "skvae_model_file" not in meta:
        return record  # not one skvae wrote (the old module's own pair is read as such)
    if meta.get("skvae_model_sha256") != _file_sha256(skvae_file):
        warnings.warn(
            f"{file} was written for another model than {skvae_file.name} (its "
            "skvae_model_sha256 does not match), so its threshold candidates are ignored",
            UserWarning,
            stacklevel=4,
        )
        return record
    edited = meta.get("threshold_candidates")
    if edited == meta.get("skvae_written_candidates"):
        return record
    mean, std = record.fitted.score_mean, record.fitted.score_std
    if not isinstance(edited, dict):
        raise ValueError(f"{file}: threshold_candidates must be a mapping")
    raw = {
        key: finite_number(value, f"{file}: threshold_candidates[{short_repr(key)}]")
        for key, value in edited.items()
    }
    candidates = check_candidates({k: normalize(v, mean, std) for k, v in raw.items()}, file)
    record.info = {**record.info, "threshold_candidates": candidates}
    record.info["threshold_candidates_on"] = f"edited in {file.name}"
    return record


def _read_member(zf: zipfile.ZipFile, name: str, limit: int, path) -> bytes:
    """One member, refused when it is (or inflates to) more than ``limit`` bytes, or
    more than :data:`MAX_INFLATION` times its compressed size plus
    :data:`INFLATION_ALLOWANCE` (memory follows the file, not its claims)."""
    info = zf.getinfo(name)
    limit = min(limit, MAX_INFLATION * info.compress_size + INFLATION_ALLOWANCE)
    if info.file_size > limit:
        raise ValueError(f"{path}: member {name} is {info.file_size} bytes, over the limit")
    with zf.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: member {name} inflates past the limit of {limit} bytes")
    return data


def _check_weights_archive(weights: bytes, what: str, protocol: int | None) -> None:
    """Refuse weights that are not intact ``torch.save`` output before torch reads them:
    stored members that match their CRCs and one pickle, of ``protocol`` unless None.
    ``what`` names the weights in the error."""
    try:
        with zipfile.ZipFile(io.BytesIO(weights)) as zf:
            members = zf.infolist()
            pickles = [m for m in members if m.filename.endswith("/data.pkl")]
            if len(pickles) != 1 or any(m.compress_type != zipfile.ZIP_STORED for m in members):
                raise ValueError("it is not an archive written by torch.save")
            damaged = zf.testzip()  # stored members: reads no more than the archive
            if damaged is not None:
                raise ValueError(f"its member {damaged!r} does not match its CRC")
            with zf.open(pickles[0]) as fh:
                if protocol is not None and fh.read(2) != bytes([pickle.PROTO[0], protocol]):
                    raise ValueError(f"its pickle is not protocol {protocol}, as skvae writes it")
    except Exception as exc:  # the above, and zipfile's errors on a damaged archive
        raise ValueError(f"corrupted model weights {what}: {exc}") from exc


def _read_skvae(path: Path) -> ModelRecord:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "metadata.json" not in names or "weights.pt" not in names:
                missing = [n for n in MEMBERS[:2] if n not in names]
                raise ValueError(f"not a skvae model file (missing {missing}): {path}")
            unknown = sorted(set(names) - set(MEMBERS))
            if unknown or len(names) != len(set(names)):
                raise ValueError(f"{path}: unexpected or repeated members {unknown or names}")
            text = _read_member(zf, "metadata.json", MAX_METADATA_BYTES, path)
            weights = _read_member(zf, "weights.pt", MAX_WEIGHTS_BYTES, path)
            sums = _read_member(zf, "SHA256SUMS", 4096, path) if "SHA256SUMS" in names else None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a skvae model file (not a zip archive): {path}") from exc
    except ValueError:
        raise
    except Exception as exc:  # damaged members: zlib and CRC errors
        raise ValueError(f"corrupted skvae model file {path}: {exc}") from exc
    if sums is not None:
        _check_sums(sums, {"metadata.json": text, "weights.pt": weights}, path)
    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupted skvae model file {path}: {exc}") from exc
    except RecursionError:
        raise ValueError(f"{path}: the metadata is nested too deeply") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"not a skvae model file: {path}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model format {version}, newer than this skvae "
            f"({__version__}, format {FORMAT_VERSION}) reads: upgrade skvae."
        )
    if version >= 2 and sums is None:
        raise ValueError(f"{path}: the checksums member SHA256SUMS is missing")
    if version == 1 and hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise ValueError(f"{path}: the weights do not match their checksum (tampered?)")
    versions = meta.get("versions")
    written_by = versions.get("skvae") if isinstance(versions, dict) else None
    if written_by != __version__ and version == FORMAT_VERSION:
        by = f"skvae {written_by}" if isinstance(written_by, str) else "an unrecorded skvae"
        warnings.warn(
            f"{path} was written by {by}; this is skvae {__version__}.",
            UserWarning,
            stacklevel=4,
        )
    params = _field(meta, "params", dict, path)
    network = dict(_field(meta, "network", dict, path))
    fitted = dict(_field(meta, "fitted", dict, path))
    info = meta.get("info", {})
    if not isinstance(info, dict):
        raise ValueError(f"{path}: metadata field 'info' must be a mapping")
    moved_to_state: dict[str, torch.Tensor] = {}
    for older in range(version, FORMAT_VERSION):
        moved_to_state.update(MIGRATIONS[older](params, network, fitted, path))
    _check_network(network, path)
    _check_weights_archive(weights, f"{path}: the weights member", WEIGHTS_PICKLE_PROTOCOL)
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"corrupted skvae model file {path}: {exc}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path}: the weights member is not a state dict of tensors")
    _check_tensor_memory(state, len(weights), path)
    decision_scores = state.pop(DECISION_SCORES_KEY, torch.zeros(0))
    calibration_scores = state.pop(CALIBRATION_SCORES_KEY, torch.zeros(0))
    state.update(moved_to_state)
    return validate_record(
        ModelRecord(
            params=dict(params),
            network=network,
            state=state,
            fitted=Fitted.from_json(fitted, path),
            decision_scores=decision_scores,
            info=dict(info),  # check_candidates turns JSON's string keys back into ints
            source=f"skvae-{version}",
            calibration_scores=calibration_scores,
        ),
        path,
    )


def _check_sums(sums: bytes, members: dict[str, bytes], path) -> None:
    try:
        listed = dict(
            reversed(line.split("  ", 1)) for line in sums.decode("ascii").splitlines() if line
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: the checksums member SHA256SUMS is unreadable") from exc
    if sorted(listed) != sorted(members):
        raise ValueError(f"{path}: SHA256SUMS does not list exactly {sorted(members)}")
    for name, data in members.items():
        if hashlib.sha256(data).hexdigest() != listed[name]:
            raise ValueError(f"{path}: {name} does not match its checksum (tampered?)")


def _field(meta: dict, key: str, kind: type, path) -> Any:
    value = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(value, kind):
        raise ValueError(f"{path}: metadata field {key!r} is missing or not a {kind.__name__}")
    return value


def _is_number(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def _is_count(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# A threshold this many standard deviations from the mean training score is refused
# (a tampered file that would flag everything or nothing, and whose penalties would
# overflow); thresholds of fitted models lie a few standard deviations out.
MAX_OFFSET_STDS = 1000
# Longest feature name a model file may hold.
MAX_NAME_LENGTH = 4096


def _gaussian_decoder(params: dict, network: dict) -> None:
    """Complete a record written before the Student-t decoder: it is Gaussian."""
    network.setdefault("decoder_df", None)
    params.setdefault("decoder_df", None)


def _from_format_1(params: dict, network: dict, fitted: dict, path) -> dict:
    """Format 1 (skvae 0.1.0) to 2: the scaling moves from the metadata into the
    weights, and clipping is what the scaling implied."""
    network.setdefault("clip", params.get("scaling") is not None)
    moved = {}
    for key in ("center", "scale"):
        values = fitted.pop(key, None)
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise ValueError(f"{path}: metadata field 'fitted.{key}' is invalid")
        moved[key] = torch.tensor(values, dtype=torch.float64)
    return moved


def _from_format_2(params: dict, network: dict, fitted: dict, path) -> dict:
    """Format 2 to 3: written before the Student-t decoder, so Gaussian."""
    _gaussian_decoder(params, network)
    return {}


def _from_format_3(params: dict, network: dict, fitted: dict, path) -> dict:
    """Format 3 to 4: written before missing values, so the encoder sees no mask."""
    network.setdefault("mask_input", False)
    return {}


# How a ``.skvae`` file of an older format version is brought to the next one:
# ``MIGRATIONS[v](params, network, fitted, path)`` updates the metadata in place and
# returns weights that move into the state dict. Reading applies them in order.
MIGRATIONS = {1: _from_format_1, 2: _from_format_2, 3: _from_format_3}


def _check_network(network: dict, path) -> None:
    expected = {
        "n_features",
        "latent_dim",
        "hidden_dims",
        "n_members",
        "n_score_samples",
        "decoder_variance",
        "clip",
        "decoder_df",
        "mask_input",
    }
    if set(network) != expected:
        raise ValueError(f"{path}: metadata field 'network' must have exactly {sorted(expected)}")
    for key in ("n_features", "latent_dim", "n_members", "n_score_samples"):
        limit = MAX_NETWORK[key]
        if not _is_count(network[key]) or network[key] > limit:
            raise ValueError(f"{path}: metadata field 'network.{key}' is invalid")
    hidden = network["hidden_dims"]
    if (
        not isinstance(hidden, list)
        or not hidden
        or len(hidden) > MAX_NETWORK["n_hidden"]
        or not all(_is_count(h) and h <= MAX_NETWORK["width"] for h in hidden)
    ):
        raise ValueError(f"{path}: metadata field 'network.hidden_dims' is invalid")
    if network["decoder_variance"] not in ("feature", "sample"):
        raise ValueError(f"{path}: metadata field 'network.decoder_variance' is invalid")
    for key in ("clip", "mask_input"):
        if not isinstance(network[key], bool):
            raise ValueError(f"{path}: metadata field 'network.{key}' is invalid")
    df = network["decoder_df"]
    if df is not None and not (_is_number(df) and 0 < df <= MAX_DECODER_DF):
        raise ValueError(f"{path}: metadata field 'network.decoder_df' is invalid")
    if n_parameters(network) > MAX_PARAMETERS:
        raise ValueError(
            f"{path}: metadata field 'network' claims {n_parameters(network)} parameters, "
            f"over the limit of {MAX_PARAMETERS}"
        )


def _check_tensor_memory(tensors: dict[str, torch.Tensor], n_bytes: int, path) -> None:
    """Refuse tensors whose values are not all in the file: sparse, quantized, meta or
    non-contiguous ones (an expanded tensor claims far more values than it stores), and
    tensors that claim more bytes in all than the ``n_bytes`` they were read from."""
    claimed = 0
    for key, tensor in tensors.items():
        if (
            tensor.layout != torch.strided
            or tensor.is_quantized
            or tensor.device.type != "cpu"
            or not tensor.is_contiguous()
        ):
            raise ValueError(f"{path}: weight {key!r} is not a dense, contiguous tensor of values")
        size = tensor.numel() * tensor.element_size()
        if tensor.untyped_storage().nbytes() < size:
            raise ValueError(f"{path}: weight {key!r} claims more values than it stores")
        claimed += size
    if claimed > n_bytes:
        raise ValueError(
            f"{path}: the weights claim {claimed} bytes, more than the {n_bytes} the file holds"
        )


def validate_record(record: ModelRecord, path) -> ModelRecord:
    """Check every field of ``record`` against the schema before a network is built:
    the architecture against the state dict's keys and shapes, finite weights, a
    positive scaling, fitted scalars and their lengths. Returns the record (scores as a
    float64 array); raises ValueError naming the field."""
    _check_network(record.network, path)
    shapes = state_shapes(record.network)
    got = {k: tuple(v.shape) for k, v in record.state.items()}
    if got != shapes:
        wrong = sorted(k for k in set(got) | set(shapes) if got.get(k) != shapes.get(k))
        raise ValueError(
            f"{path}: the weights do not fit the architecture: {wrong[0]} is "
            f"{got.get(wrong[0], 'missing')}, expected {shapes.get(wrong[0], 'absent')}"
        )
    # finite in the dtype each is used in: the scaling in float64, the network in its
    # scoring precision (float32 unless precision='float64')
    used = torch.float64 if record.params.get("precision") == "float64" else torch.float32
    for key, tensor in record.state.items():
        dtype = torch.float64 if key in ("center", "scale") else used
        if not tensor.is_floating_point() or not torch.isfinite(tensor.to(dtype)).all():
            raise ValueError(f"{path}: weight {key!r} is not a finite float tensor (in {dtype})")
    if not bool((record.state["scale"] > 0).all()):
        raise ValueError(f"{path}: weight 'scale' must be positive")
    fitted = record.fitted
    for key in ("offset", "score_mean", "score_std"):
        if not _is_number(getattr(fitted, key)):
            raise ValueError(f"{path}: metadata field 'fitted.{key}' is missing or not finite")
    if fitted.score_std < 0:
        raise ValueError(f"{path}: metadata field 'fitted.score_std' is negative")
    spread = MAX_OFFSET_STDS * safe_std(fitted.score_std)
    if abs(fitted.offset - fitted.score_mean) > spread:
        raise ValueError(
            f"{path}: metadata field 'fitted.offset' lies more than {MAX_OFFSET_STDS:g} "
            "standard deviations from the mean training score"
        )
    if not isinstance(fitted.device, str) or not (
        fitted.device == "cpu" or fitted.device.startswith("cuda")
    ):
        raise ValueError(f"{path}: metadata field 'fitted.device' is invalid")
    if fitted.n_features_in != record.network["n_features"]:
        raise ValueError(
            f"{path}: metadata field 'fitted.n_features_in' does not match the network"
        )
    for key in ("n_epochs", "best_epoch"):
        if not _is_count(getattr(fitted, key), 0):
            raise ValueError(f"{path}: metadata field 'fitted.{key}' is invalid")
    for names, where in (
        (fitted.feature_names_in, "metadata field 'fitted.feature_names_in'"),
        (record.info.get("feature_names"), "info field 'feature_names'"),
    ):
        if names is not None and (
            not isinstance(names, list)
            or len(names) != fitted.n_features_in
            or not all(isinstance(n, str) and len(n) <= MAX_NAME_LENGTH for n in names)
            or len(set(names)) != len(names)
        ):
            raise ValueError(
                f"{path}: {where} must be {fitted.n_features_in} unique strings of at most "
                f"{MAX_NAME_LENGTH} characters"
            )
    history = fitted.history
    if not isinstance(history, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(x is None or _is_number(x) for x in v)
        for k, v in history.items()
    ):
        raise ValueError(f"{path}: metadata field 'fitted.history' is invalid")
    for attr, what in (
        ("decision_scores", "training scores"),
        ("calibration_scores", "calibration scores"),
    ):
        scores = getattr(record, attr)
        if isinstance(scores, torch.Tensor):
            scores = scores.double().numpy()
        scores = np.asarray(scores)
        if scores.ndim != 1 or not np.isfinite(scores).all():
            raise ValueError(f"{path}: the {what} are not a finite 1D array")
        setattr(record, attr, scores.astype(np.float64))
    if fitted.calibration_source not in CALIBRATION_SOURCES:
        raise ValueError(f"{path}: metadata field 'fitted.calibration_source' is invalid")
    if "threshold_candidates" in record.info:
        record.info["threshold_candidates"] = check_candidates(
            record.info["threshold_candidates"], f"{path}: info field"
        )
    return record


# ---------------------------------------------------------------------------- pairs
def _read_pair(stem: Path, hidden_dims) -> ModelRecord:
    meta_file = stem.with_name(stem.name + PAIR_META)
    weights_file = stem.with_name(stem.name + PAIR_WEIGHTS)
    for file in (meta_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"Model file not found: {file}")
    for file, limit in ((meta_file, MAX_PAIR_METADATA_BYTES), (weights_file, MAX_WEIGHTS_BYTES)):
        if file.stat().st_size > limit:
            raise ValueError(f"{file} is {file.stat().st_size} bytes, over the limit")
    meta = load_plain_pickle(meta_file, MAX_PAIR_METADATA_BYTES)
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file}: expected a dict of metadata, got {type(meta).__name__}")
    weights = read_regular_file(weights_file, MAX_WEIGHTS_BYTES)  # checked, then loaded
    if weights[:4] == b"PK\x03\x04":  # torch's archive (since torch 1.6; not older files)
        _check_weights_archive(weights, str(weights_file), protocol=None)
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{weights_file}: not a readable state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{weights_file}: not a state dict of tensors")
    _check_tensor_memory(state, len(weights), weights_file)
    try:
        if meta.get("format") == COMPAT_V1:
            record = _record_from_compat_v1(meta, state, meta_file)
        else:
            record = _record_from_vae_module(meta, state, hidden_dims, meta_file)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{meta_file}: missing or invalid field {exc}") from exc
    return validate_record(record, meta_file)


def _number(meta: dict, key: str, where, default=None) -> float | None:
    value = meta.get(key, default)
    return None if value is None else finite_number(value, f"{where}: {key!r}")


def _record_from_compat_v1(meta: dict, state: dict, where) -> ModelRecord:
    params = dict(meta.get("detector_params") or {})
    network = dict(meta["network"])
    network.setdefault("clip", params.get("scaling") is not None)
    network.setdefault("mask_input", False)  # written before missing values
    _gaussian_decoder(params, network)
    if isinstance(network.get("hidden_dims"), tuple):  # pickles keep tuples
        network["hidden_dims"] = list(network["hidden_dims"])
    _check_network(network, where)
    net_state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    net_state["center"] = state["center"].double()
    net_state["scale"] = state["scale"].double()
    mean, std = _number(meta, "mean", where), _number(meta, "std", where)
    offset = _number(meta, "threshold", where)
    if offset is None:
        raise ValueError(f"{where}: no threshold stored; call set_threshold before saving")
    info = {"threshold_candidates": _integer_percentiles(meta, where)}
    return _pair_record(meta, params, network, net_state, (offset, mean, std), info, COMPAT_V1)


def _record_from_vae_module(meta: dict, state: dict, hidden_dims, where) -> ModelRecord:
    hidden = hidden_dims if hidden_dims is not None else meta.get("hidden_dims")
    if hidden is None:  # the old files did not store them: read them off the weights
        hidden = _vae_module_hidden_dims(state, where)
    hidden = [int(h) for h in hidden]
    input_dim, latent_dim = meta.get("input_dim"), meta.get("latent_dim")
    for key, value in (("input_dim", input_dim), ("latent_dim", latent_dim)):
        if not _is_count(value) or value > MAX_NETWORK["n_features"]:
            raise ValueError(f"{where}: {key!r} must be a positive integer; got {value!r}")
    net_state = convert_vae_module_state(state, len(hidden))
    network = {
        "n_features": input_dim,
        "latent_dim": latent_dim,
        "hidden_dims": hidden,
        "n_members": 1,
        "n_score_samples": 1,
        "decoder_variance": "feature",
        "clip": False,
        "decoder_df": None,
        "mask_input": False,
    }
    net_state["center"] = torch.zeros(input_dim, dtype=torch.float64)
    net_state["scale"] = torch.ones(input_dim, dtype=torch.float64)
    mean, std = _number(meta, "mean", where), _number(meta, "std", where)
    offset = _number(meta, "threshold", where)
    if mean is None or std is None or offset is None:
        raise ValueError(f"{where}: 'threshold', 'mean' and 'std' are required")
    raw = _integer_percentiles(meta, where)  # raw score percentiles: to thr units
    candidates = {
        key: normalize(finite_number(value, f"{where}: threshold_candidates"), mean, std)
        for key, value in raw.items()
    }
    params = {
        "latent_dim": latent_dim,
        "hidden_dims": hidden,
        "n_estimators": 1,
        "max_samples": 1.0,
        "trim_fraction": 0.0,
        "score_type": "squared_error",
        "scaling": None,
        "contamination": 0.01,
        "decoder_df": None,
    }
    info = {"threshold_candidates": candidates, "stochastic_statistics": True}
    return _pair_record(meta, params, network, net_state, (offset, mean, std), info, "vae_module")


def _integer_percentiles(meta: dict, where) -> dict:
    """The candidates of an old pair's metadata at whole percentiles (``5``, ``'p5'``);
    fractional ones (``'p0.5'``, which skvae 0.1.0 also wrote) are left out."""
    candidates = meta.get("threshold_candidates") or {}
    if not isinstance(candidates, dict):
        raise ValueError(f"{where}: threshold_candidates must be a mapping")
    return {
        k: v
        for k, v in candidates.items()
        if not isinstance(k, str) or k.removeprefix("p").isdigit()
    }


def _pair_record(meta, params, network, state, statistics, info, source) -> ModelRecord:
    """The record of a ``.pth`` + ``.pkl`` pair: no history and no training scores kept;
    ``statistics`` is ``(offset, mean, std)`` in the file's score units."""
    offset, mean, std = statistics
    fitted = Fitted(
        device=str(meta.get("device", "cpu")),
        n_features_in=int(network["n_features"]),
        offset=offset,
        score_mean=mean if mean is not None else 0.0,
        score_std=std if std is not None else 1.0,
    )
    return ModelRecord(params, network, state, fitted, np.zeros(0), source, info)


def _vae_module_hidden_dims(state: dict, where) -> list[int]:
    """The encoder widths of an old ``vae_module`` state dict (Linear layers at
    ``encoder.encoder.0``, ``.2``, ...)."""
    hidden = []
    while f"encoder.encoder.{2 * len(hidden)}.weight" in state:
        hidden.append(int(state[f"encoder.encoder.{2 * len(hidden)}.weight"].shape[0]))
    if not hidden:
        raise ValueError(f"{where}: not a state dict of the old VAE layout (no encoder layers)")
    return hidden


def convert_vae_module_state(state: dict[str, torch.Tensor], n_hidden: int) -> dict:
    """Map the old module's state dict (``encoder.encoder.0.weight``, ``encoder.fc_mu``,
    ``decoder.decoder.N``) onto a one-member :class:`~skvae._network.VAEEnsemble`."""
    out = {}
    try:
        for i in range(n_hidden):
            out[f"encoder_layers.{i}.weight"] = state[f"encoder.encoder.{2 * i}.weight"].T[None]
            out[f"encoder_layers.{i}.bias"] = state[f"encoder.encoder.{2 * i}.bias"][None, None]
            out[f"decoder_layers.{i}.weight"] = state[f"decoder.decoder.{2 * i}.weight"].T[None]
            out[f"decoder_layers.{i}.bias"] = state[f"decoder.decoder.{2 * i}.bias"][None, None]
        w = torch.cat([state["encoder.fc_mu.weight"], state["encoder.fc_logvar.weight"]])
        b = torch.cat([state["encoder.fc_mu.bias"], state["encoder.fc_logvar.bias"]])
        out["encoder_head.weight"], out["encoder_head.bias"] = w.T[None], b[None, None]
        last = 2 * n_hidden
        out["decoder_head.weight"] = state[f"decoder.decoder.{last}.weight"].T[None]
        out["decoder_head.bias"] = state[f"decoder.decoder.{last}.bias"][None, None]
    except KeyError as exc:
        raise ValueError(f"Not a state dict of the old VAE layout: missing {exc}") from exc
    n_features = out["decoder_head.bias"].shape[-1]
    latent = out["encoder_head.bias"].shape[-1] // 2
    # The old decoder had no variance (MSE loss): a unit variance, fixed.
    out["decoder_logvar"] = torch.zeros(1, 1, n_features)
    out["score_noise"] = torch.zeros(1, 1, 1, latent)
    return out
