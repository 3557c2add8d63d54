"""Offline-RL datasets: D4RL and Minari files, custom transition files, feature matrices
and train/validation/test splits.

All loaders return a *transition dict*: numpy arrays ``observations``, ``actions``,
``next_observations``, ``rewards``, ``terminals`` and ``timeouts`` with one row per
transition. The D4RL and Minari readers open those projects' own HDF5 layouts with h5py (a
dependency of skvae); no network access is needed when the file is present.
They were tested on files in those layouts generated from the MuJoCo ``Hopper-v5``
simulator (see ``tests/rl_data.py``), not on the published datasets themselves.
"""

from __future__ import annotations

import os
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._csvio import read_numbers
from ._inputs import check_numpy_claims, check_regular_file, numpy_file_errors
from ._plainpickle import load_plain_pickle

TRANSITION_KEYS = (
    "observations",
    "actions",
    "next_observations",
    "rewards",
    "terminals",
    "timeouts",
)
D4RL_ENV_VAR = "D4RL_DATASET_DIR"
D4RL_DEFAULT_DIR = Path("~/.d4rl/datasets")
D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/"
MINARI_ENV_VAR = "MINARI_DATASETS_PATH"
MINARI_DEFAULT_DIR = Path("~/.minari/datasets")
FEATURE_LAYOUTS = {
    "next_obs_action": ("next_observations", "actions"),
    "obs_action": ("observations", "actions"),
    "obs_action_next_obs": ("observations", "actions", "next_observations"),
}


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Reading HDF5 datasets needs h5py: pip install h5py") from exc
    return h5py


# ------------------------------------------------------------------------------ D4RL
def d4rl_dataset_dir() -> Path:
    """The directory D4RL keeps its files in: ``$D4RL_DATASET_DIR`` or
    ``~/.d4rl/datasets``.

    Returns
    -------
    path : pathlib.Path
        The directory (it may not exist).

    Examples
    --------
    >>> d4rl_dataset_dir().name in ("datasets", os.environ.get(D4RL_ENV_VAR, "x")[-8:])
    True
    """
    return Path(os.environ.get(D4RL_ENV_VAR, D4RL_DEFAULT_DIR)).expanduser()


def d4rl_filename(task: str) -> str:
    """File name D4RL stores a task's data under (the download URL's base name).

    Parameters
    ----------
    task : str
        A D4RL task name such as ``'hopper-medium-v2'``.

    Returns
    -------
    name : str
        E.g. ``'hopper_medium-v2.hdf5'``.

    Examples
    --------
    >>> d4rl_filename("walker2d-medium-replay-v2")
    'walker2d_medium_replay-v2.hdf5'
    """
    name, sep, version = task.rpartition("-v")
    if not sep or not version.isdigit() or not name:
        raise ValueError(f"Not a D4RL task name (expected e.g. 'hopper-medium-v2'): {task!r}")
    return f"{name.replace('-', '_')}-v{version}.hdf5"


def _read_hdf5_transitions(path: Path) -> dict[str, np.ndarray]:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            data = {}
            for key in TRANSITION_KEYS:
                if key not in f:
                    continue
                if not isinstance(f[key], h5py.Dataset):
                    raise ValueError(f"{path}: {key!r} is a group, not a dataset of values")
                data[key] = f[key][()]
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file: {exc}") from exc
    return _check_transitions(data, str(path))


def load_d4rl(
    task: str,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    use_d4rl: bool | str = "auto",
) -> dict[str, np.ndarray]:
    """Load a D4RL dataset by task name.

    The file D4RL itself uses is read with h5py: ``path`` when given, else
    ``d4rl_filename(task)`` in ``data_dir`` (default :func:`d4rl_dataset_dir`). When the
    file is absent and the ``d4rl`` package imports (``use_d4rl='auto'`` or ``True``),
    ``gym.make(task).get_dataset()`` is used instead, which may download it.

    Parameters
    ----------
    task : str
        D4RL task name, e.g. ``'hopper-medium-v2'``.
    data_dir : path-like, optional
        Directory holding D4RL's files.
    path : path-like, optional
        Explicit path of the HDF5 file.
    use_d4rl : bool or 'auto', default='auto'
        Whether the ``d4rl`` package may be used when the file is absent.

    Returns
    -------
    dataset : dict of ndarray
        The transition dict (``next_observations`` as stored in the file).

    Examples
    --------
    >>> try:
    ...     load_d4rl("hopper-nosuchdata-v2", data_dir="/nonexistent", use_d4rl=False)
    ... except FileNotFoundError as e:
    ...     print(str(e).splitlines()[0])
    D4RL file for 'hopper-nosuchdata-v2' not found: /nonexistent/hopper_nosuchdata-v2.hdf5
    """
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"D4RL file for {task!r} not found: {file}")
        return _read_hdf5_transitions(file)
    directory = Path(data_dir).expanduser() if data_dir is not None else d4rl_dataset_dir()
    file = directory / d4rl_filename(task)
    if file.is_file():
        return _read_hdf5_transitions(file)
    if use_d4rl:
        dataset = _load_with_d4rl(task, required=use_d4rl is True)
        if dataset is not None:
            return dataset
    raise FileNotFoundError(
        f"D4RL file for {task!r} not found: {file}\n"
        f"Put {file.name} (from {D4RL_URL}{file.name}) in {directory}, set "
        f"${D4RL_ENV_VAR} to the directory that holds it, or pass its path."
    )


def _load_with_d4rl(task: str, required: bool) -> dict[str, np.ndarray] | None:
    try:
        import d4rl  # noqa: F401  (registers the environments)
        import gym
    except Exception as exc:  # d4rl raises a plain Exception without MuJoCo 2.1
        if required:
            raise ImportError(f"use_d4rl=True but d4rl/gym cannot be imported: {exc}") from exc
        return None
    return _check_transitions(dict(gym.make(task).get_dataset()), task)


def qlearning_transitions(dataset: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transitions exactly as ``d4rl.qlearning_dataset`` builds them.

    ``next_observations[i]`` is ``observations[i + 1]`` (a stored ``next_observations``
    is ignored), the last row is dropped, and rows flagged as timeouts are dropped.

    Parameters
    ----------
    dataset : dict of ndarray
        A transition dict in file order, with ``timeouts``.

    Returns
    -------
    transitions : dict of ndarray
        Same keys, fewer rows.

    Examples
    --------
    >>> import numpy as np
    >>> d = {"observations": np.arange(5.0)[:, None], "actions": np.zeros((5, 1)),
    ...      "rewards": np.zeros(5), "terminals": np.zeros(5, bool),
    ...      "timeouts": np.array([0, 1, 0, 0, 0], bool)}
    >>> qlearning_transitions(d)["next_observations"].ravel().tolist()
    [1.0, 3.0, 4.0]
    """
    obs = np.asarray(dataset["observations"])
    n = len(obs) - 1
    timeouts = np.asarray(dataset.get("timeouts", np.zeros(len(obs), bool)), dtype=bool)
    keep = np.flatnonzero(~timeouts[:n])
    out = {
        "observations": obs[:n][keep],
        "actions": np.asarray(dataset["actions"])[:n][keep],
        "next_observations": obs[1:][keep],
        "rewards": np.asarray(dataset["rewards"])[:n][keep],
        "terminals": np.asarray(dataset["terminals"], dtype=bool)[:n][keep],
        "timeouts": np.zeros(len(keep), dtype=bool),
    }
    return out


# ------------------------------------------------------------------------------ Minari
def minari_dataset_dir() -> Path:
    """Minari's local root: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``.

    Returns
    -------
    path : pathlib.Path
        The directory (it may not exist).

    Examples
    --------
    >>> isinstance(minari_dataset_dir(), Path)
    True
    """
    return Path(os.environ.get(MINARI_ENV_VAR, MINARI_DEFAULT_DIR)).expanduser()


def load_minari(dataset_id: str, root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Load a Minari dataset from its local root, without the ``minari`` package.

    Reads ``<root>/<dataset_id>/data/main_data.hdf5``, whose ``episode_i`` groups hold
    ``observations`` (T + 1 rows), ``actions``, ``rewards``, ``terminations`` and
    ``truncations`` (T rows each).

    Parameters
    ----------
    dataset_id : str
        E.g. ``'mujoco/hopper/medium-v0'``.
    root : path-like, optional
        Minari's dataset root; default :func:`minari_dataset_dir`.

    Returns
    -------
    dataset : dict of ndarray
        The transition dict, episodes concatenated in order.

    Examples
    --------
    >>> try:
    ...     load_minari("mujoco/hopper/none-v0", root="/nonexistent")
    ... except FileNotFoundError as e:
    ...     print(str(e).split(":")[0])
    Minari dataset 'mujoco/hopper/none-v0' not found
    """
    base = Path(root).expanduser() if root is not None else minari_dataset_dir()
    file = base / dataset_id / "data" / "main_data.hdf5"
    if not file.is_file():
        raise FileNotFoundError(
            f"Minari dataset {dataset_id!r} not found: {file}\n"
            f"Download it with `minari download {dataset_id}` or set ${MINARI_ENV_VAR}."
        )
    h5py = _h5py()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in TRANSITION_KEYS}
    with h5py.File(file, "r") as f:
        names = sorted(
            (k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1])
        )
        if not names:
            raise ValueError(f"{file} holds no episode_i groups.")
        for name in names:
            ep = f[name]
            missing = [
                k
                for k in ("observations", "actions", "rewards", "terminations", "truncations")
                if k not in ep
            ]
            if missing:
                raise ValueError(f"{file}:{name}: missing key(s) {missing}")
            if not isinstance(ep["observations"], h5py.Dataset):
                raise ValueError(
                    f"{dataset_id}: dictionary observations are not supported; flatten them."
                )
            obs = ep["observations"][()]
            steps = len(ep["actions"])
            if len(obs) != steps + 1:
                raise ValueError(
                    f"{file}:{name}: expected {steps + 1} observations for {steps} steps, "
                    f"got {len(obs)}."
                )
            parts["observations"].append(obs[:-1])
            parts["next_observations"].append(obs[1:])
            parts["actions"].append(ep["actions"][()])
            parts["rewards"].append(ep["rewards"][()])
            parts["terminals"].append(ep["terminations"][()].astype(bool))
            parts["timeouts"].append(ep["truncations"][()].astype(bool))
    return _check_transitions({k: np.concatenate(v) for k, v in parts.items()}, dataset_id)


# ------------------------------------------------------------------------------ custom
def load_transitions(
    path: str | os.PathLike, *, allow_code_execution: bool = False
) -> dict[str, np.ndarray]:
    """Load transitions from a ``.pkl``, ``.npz`` or ``.hdf5``/``.h5`` file.

    The file holds arrays under the D4RL keys; ``observations`` and ``actions`` are
    required. Without ``next_observations``, they are taken from the following row
    within each episode (episodes end at ``terminals`` or ``timeouts``; the last row of
    an episode is dropped). A ``.pkl`` file (a pickled dict of arrays, as offline-RL
    code shares them) is read with an unpickler that rebuilds only plain data.

    Parameters
    ----------
    path : path-like
        The file.
    allow_code_execution : bool, default=False
        Unpickle a ``.pkl`` file fully, which runs whatever code it holds: only for
        files from a source you trust that hold more than plain data.

    Returns
    -------
    dataset : dict of ndarray
        The transition dict.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "t.npz")
    >>> np.savez(f, observations=np.zeros((4, 2)), actions=np.zeros((4, 1)),
    ...          next_observations=np.ones((4, 2)))
    >>> load_transitions(f)["next_observations"].shape
    (4, 2)
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"Dataset file not found: {file}")
    check_regular_file(file)
    suffix = file.suffix.lower()
    if suffix == ".pkl":
        if allow_code_execution:
            import pickle

            with open(file, "rb") as fh:
                raw = pickle.load(fh)
        else:
            raw = load_plain_pickle(file)
        if not isinstance(raw, dict):
            raise ValueError(f"{file}: expected a dict of arrays, got {type(raw).__name__}.")
        data = {k: np.asarray(v) for k, v in raw.items() if k in TRANSITION_KEYS}
    elif suffix == ".npz":
        # the handle is ours, so a damaged archive does not leak it
        with open(file, "rb") as fh, numpy_file_errors(file):
            check_numpy_claims(fh, file)
            with np.load(fh, allow_pickle=False) as npz:
                data = {k: npz[k] for k in TRANSITION_KEYS if k in npz.files}
    elif suffix in (".hdf5", ".h5"):
        return _read_hdf5_transitions(file)
    else:
        raise ValueError(f"Unsupported dataset file type {suffix!r}: use .pkl, .npz or .hdf5.")
    return _check_transitions(data, str(file))


FEATURE_FILE_SUFFIXES = (".npy", ".csv")


def load_feature_file(
    path: str | os.PathLike, header: bool | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """A plain feature array: a ``.npy`` file, or a ``.csv`` file with or without a
    header row, as pandas' ``to_csv`` writes it by default (its unnamed first column,
    the index, is left out).

    Every line of numbers in a CSV file is one row, in order (blank lines and lines
    starting with ``#`` are not rows); a byte order mark is stripped; empty cells and
    pandas' missing markers (``NA``, ``NaN``, ``null``, ...) are missing values. The
    first line is a header when it holds a name, or is pandas' integer header
    ``0,1,...`` (with a warning); a first line of missing cells only is refused unless
    ``header`` says which it is.

    Parameters
    ----------
    path : path-like
        The file; ``.npy`` (read without unpickling) or ``.csv`` (comma-separated).
    header : bool or None, default=None
        For ``.csv``: whether the first line is a header (None: by the rules above).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The rows (a ``.npy`` file of another shape is returned as it is).
    names : list of str or None
        The header's column names, or None.

    Examples
    --------
    >>> import os, tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(f, "w").write("speed,load\\n1.0,2.0\\n3.0,NA\\n")
    >>> X, names = load_feature_file(f)
    >>> X.tolist(), names
    ([[1.0, 2.0], [3.0, nan]], ['speed', 'load'])
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in FEATURE_FILE_SUFFIXES:
        raise ValueError(f"{file}: a feature file is .npy or .csv; got {file.suffix!r}.")
    if suffix == ".csv":
        return read_numbers(file, header)  # which checks the file itself
    check_regular_file(file)
    with open(file, "rb") as fh, numpy_file_errors(file):
        check_numpy_claims(fh, file)
        return np.load(fh, allow_pickle=False), None


def _check_transitions(data: dict[str, Any], source: str) -> dict[str, np.ndarray]:
    """Validate a transition dict: required keys, numeric arrays with one row per
    transition, no infinity, finite rewards, at least one transition (NaN in
    observations and actions is a missing value, which the detector scores around).
    Errors name the source and key."""
    missing = [k for k in ("observations", "actions") if k not in data]
    if missing:
        raise ValueError(f"{source}: missing required key(s) {missing}.")
    out = {}
    for key, value in data.items():
        try:
            arr = np.asarray(value)
        except Exception as exc:
            raise ValueError(f"{source}: {key!r} is not an array: {exc}") from exc
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{source}: {key!r} must be numeric; got dtype {arr.dtype}.")
        if arr.ndim == 0:
            raise ValueError(f"{source}: {key!r} is a scalar; it needs one row per transition.")
        if key in ("rewards", "terminals", "timeouts"):
            if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
                raise ValueError(f"{source}: {key!r} must hold one value per transition.")
            arr = arr.ravel()
        elif arr.ndim == 1:
            arr = arr[:, None]
        if key == "rewards" and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{source}: 'rewards' contains NaN or infinity.")
        if key in ("observations", "actions", "next_observations"):
            if arr.dtype.kind == "f" and np.isinf(arr).any():
                raise ValueError(f"{source}: {key!r} contains infinity.")
        out[key] = arr
    n = len(out["observations"])
    out.setdefault("rewards", np.zeros(n, dtype=np.float32))
    out.setdefault("terminals", np.zeros(n, dtype=bool))
    out.setdefault("timeouts", np.zeros(n, dtype=bool))
    out["terminals"] = out["terminals"].astype(bool)
    out["timeouts"] = out["timeouts"].astype(bool)
    bad = [k for k, v in out.items() if len(v) != n]
    if bad:
        raise ValueError(f"{source}: arrays {bad} do not have {n} rows like observations.")
    if "next_observations" not in out:
        out = _shift_within_episodes(out)
    if len(out["observations"]) == 0:
        raise ValueError(f"{source}: holds no transitions.")
    return out


def _shift_within_episodes(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ends = data["terminals"] | data["timeouts"]
    n = len(data["observations"])
    # row i has a successor unless it ends an episode or is the last row
    keep = np.flatnonzero(~ends[: n - 1]) if n > 1 else np.array([], dtype=int)
    out = {k: v[keep] for k, v in data.items()}
    out["next_observations"] = data["observations"][keep + 1]
    return out


# ------------------------------------------------------------------------------ dispatch
def load_dataset(
    task: str | None = None,
    data_path: str | os.PathLike | None = None,
    next_observations: str = "stored",
    *,
    allow_code_execution: bool = False,
) -> dict[str, np.ndarray]:
    """Load a dataset by task name or file.

    Parameters
    ----------
    task : str, optional
        A D4RL task (``'hopper-medium-v2'``) or a Minari dataset id, written
        ``'minari:<namespace>/<env>/<name>-v0'`` or containing a ``/``.
    data_path : path-like, optional
        A ``.pkl``/``.npz``/``.hdf5`` file. When given, this file is the data (a task
        name only labels it), as offline-RL configs that set both mean it.
    next_observations : {'stored', 'qlearning'}, default='stored'
        ``'stored'`` uses the file's ``next_observations``; ``'qlearning'`` rebuilds
        the transitions as ``d4rl.qlearning_dataset`` does (see
        :func:`qlearning_transitions`).
    allow_code_execution : bool, default=False
        See :func:`load_transitions` (``.pkl`` files only).

    Returns
    -------
    dataset : dict of ndarray
        The transition dict.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "t.npz")
    >>> np.savez(f, observations=np.zeros((4, 2)), actions=np.zeros((4, 1)))
    >>> len(load_dataset(data_path=f)["observations"])
    3
    """
    if next_observations not in ("stored", "qlearning"):
        raise ValueError(
            f"next_observations must be 'stored' or 'qlearning'; got {next_observations!r}."
        )
    if task is None and data_path is None:
        raise ValueError("Give a task name or a data_path.")
    if data_path is not None:
        data = load_transitions(data_path, allow_code_execution=allow_code_execution)
    elif task.startswith("minari:") or "/" in task:
        data = load_minari(task.removeprefix("minari:"))
    else:
        data = load_d4rl(task)
    if next_observations == "qlearning":
        data = qlearning_transitions(data)
    return data


def make_features(
    dataset: dict[str, np.ndarray], layout: str | tuple[str, ...] = "next_obs_action"
) -> np.ndarray:
    """The feature matrix a density model of transitions is trained on.

    Parameters
    ----------
    dataset : dict of ndarray
        A transition dict.
    layout : str or tuple of str, default='next_obs_action'
        ``'next_obs_action'`` (``[next_observations, actions]``, what MOPO-style
        reward penalties score), ``'obs_action'`` or ``'obs_action_next_obs'``, or a
        tuple of dataset keys to concatenate.

    Returns
    -------
    X : ndarray of shape (n_transitions, n_features)
        float32 features.

    Examples
    --------
    >>> import numpy as np
    >>> d = {"observations": np.zeros((3, 2)), "actions": np.ones((3, 1)),
    ...      "next_observations": np.full((3, 2), 2.0)}
    >>> make_features(d)[0].tolist()
    [2.0, 2.0, 1.0]
    """
    keys = FEATURE_LAYOUTS.get(layout, layout) if isinstance(layout, str) else layout
    if isinstance(keys, str):
        raise ValueError(
            f"Unknown feature layout {layout!r}: use one of {sorted(FEATURE_LAYOUTS)} "
            f"or a tuple of dataset keys ({sorted(map(str, dataset))})."
        )
    missing = [k for k in keys if k not in dataset]
    if missing:
        raise ValueError(
            f"The feature layout {layout!r} needs the key(s) {missing}, which the dataset "
            f"lacks (it has {sorted(map(str, dataset))})."
        )
    return np.concatenate(
        [np.asarray(dataset[k], dtype=np.float32).reshape(len(dataset[k]), -1) for k in keys],
        axis=1,
    )


# Short names of the dataset keys in feature names (``next_obs[3]``, ``action[1]``).
_FEATURE_PREFIX = {"next_observations": "next_obs", "observations": "obs", "actions": "action"}


def feature_names(
    dataset: dict[str, np.ndarray], layout: str | tuple[str, ...] = "next_obs_action"
) -> list[str]:
    """Names of the columns :func:`make_features` makes, e.g. ``'next_obs[3]'``.

    Parameters
    ----------
    dataset : dict of ndarray
        A transition dict.
    layout : str or tuple of str, default='next_obs_action'
        As for :func:`make_features`.

    Returns
    -------
    names : list of str
        One name per feature column.

    Examples
    --------
    >>> import numpy as np
    >>> d = {"next_observations": np.zeros((3, 2)), "actions": np.ones((3, 1))}
    >>> feature_names(d)
    ['next_obs[0]', 'next_obs[1]', 'action[0]']
    """
    keys = FEATURE_LAYOUTS.get(layout, layout) if isinstance(layout, str) else layout
    names = []
    for key in keys:
        width = int(np.prod(np.shape(dataset[key])[1:], dtype=int))
        names += [f"{_FEATURE_PREFIX.get(key, key)}[{i}]" for i in range(width)]
    return names


def episode_ids(dataset: dict[str, np.ndarray]) -> np.ndarray:
    """Index of the episode each transition belongs to (episodes end at a terminal or
    timeout).

    Parameters
    ----------
    dataset : dict of ndarray
        A transition dict in time order.

    Returns
    -------
    ids : ndarray of shape (n_transitions,)
        Episode indices, starting at 0.

    Examples
    --------
    >>> import numpy as np
    >>> episode_ids({"terminals": np.array([0, 1, 0, 0], bool),
    ...              "timeouts": np.array([0, 0, 0, 1], bool)}).tolist()
    [0, 0, 1, 1]
    """
    ends = np.asarray(dataset["terminals"], bool) | np.asarray(dataset["timeouts"], bool)
    if len(ends) == 0:
        return np.zeros(0, dtype=int)
    return np.concatenate([[0], np.cumsum(ends[:-1])]).astype(int)


def split_indices(
    dataset: dict[str, np.ndarray],
    val_ratio: float = 0.2,
    test_ratio: float = 0.2,
    shuffle: bool = False,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test row indices of a transition dict.

    Parameters
    ----------
    dataset : dict of ndarray
        A transition dict in time order.
    val_ratio, test_ratio : float, default=0.2
        Approximate fractions of transitions for validation and test.
    shuffle : bool, default=False
        ``False`` splits in time order (train first, then validation, then test),
        cutting only at episode boundaries so no episode is split; ``True`` assigns
        whole episodes at random.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle.

    Returns
    -------
    train, val, test : ndarray of int
        Row indices.

    Examples
    --------
    >>> import numpy as np
    >>> d = {"terminals": np.tile([0, 0, 0, 1], 5).astype(bool), "timeouts": np.zeros(20, bool)}
    >>> [len(i) for i in split_indices(d, 0.2, 0.2)]
    [12, 4, 4]
    """
    from sklearn.utils import check_random_state

    ratios = (val_ratio, test_ratio)
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratios) or not (
        np.isfinite(ratios).all() and min(ratios) >= 0 and sum(ratios) < 1
    ):
        raise ValueError(
            "val_ratio and test_ratio must be finite numbers >= 0 that sum to less than 1; "
            f"got {val_ratio!r} and {test_ratio!r}."
        )
    ids = episode_ids(dataset)
    if len(ids) == 0:
        raise ValueError("the dataset holds no transitions to split.")
    n_episodes = ids[-1] + 1 if len(ids) else 0
    order = np.arange(n_episodes)
    if shuffle:
        order = check_random_state(random_state).permutation(n_episodes)
    sizes = np.bincount(ids, minlength=n_episodes)[order]
    cum = np.cumsum(sizes) / max(len(ids), 1)
    # the split falls after the episode whose cumulative share first reaches the cut
    n_train_ep = int(np.searchsorted(cum, 1 - val_ratio - test_ratio - 1e-12) + 1)
    n_val_ep = int(np.searchsorted(cum, 1 - test_ratio - 1e-12) + 1) - n_train_ep
    if test_ratio == 0:
        n_val_ep = n_episodes - n_train_ep
    groups = np.split(order, [n_train_ep, n_train_ep + n_val_ep])
    rows = [np.flatnonzero(np.isin(ids, g)) for g in groups]
    return rows[0], rows[1], rows[2]


# ------------------------------------------------------------------------------ collection
@validate_params(
    {
        "env": "no_validation",  # an id or an environment
        "policy": [StrOptions({"uniform"}), callable],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "max_episode_steps": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def collect_transitions(
    env,
    policy="uniform",
    n_steps: int = 1000,
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """Run a Gymnasium environment under a policy and record a transition dict.

    Parameters
    ----------
    env : str or gymnasium.Env
        An environment id (e.g. ``'Hopper-v5'``, needs ``gymnasium[mujoco]``) or an
        environment with a Box action space.
    policy : 'uniform' or callable, default='uniform'
        ``'uniform'`` samples actions uniformly from the action space; a callable
        maps ``(observation, rng)`` to an action.
    n_steps : int, default=1000
        Number of transitions to record.
    seed : int, default=0
        Seeds the environment resets and the policy's ``rng``.
    max_episode_steps : int, optional
        Episode length limit for an environment given by id; reaching it is recorded
        as a timeout.

    Returns
    -------
    dataset : dict of ndarray
        The transition dict (D4RL keys) in time order.

    Examples
    --------
    >>> d = collect_transitions("Hopper-v5", n_steps=50, seed=0)  # needs gymnasium[mujoco]
    >>> d["observations"].shape, d["actions"].shape
    ((50, 11), (50, 3))
    """
    try:
        import gymnasium as gym
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "collect_transitions needs gymnasium: pip install 'skvae[rl]', or "
            "pip install -e '.[rl]' in a checkout"
        ) from exc
    own = isinstance(env, str)
    if own:
        kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        env = gym.make(env, **kwargs)
    rng = np.random.RandomState(seed)
    low, high = env.action_space.low, env.action_space.high
    if policy == "uniform":

        def policy(_obs, rng):
            return rng.uniform(low, high)

    keys = ("observations", "actions", "next_observations", "rewards", "terminals", "timeouts")
    out: dict[str, list] = {k: [] for k in keys}
    obs, _ = env.reset(seed=seed)
    for _ in range(n_steps):
        action = np.clip(np.asarray(policy(obs, rng), dtype=np.float32), low, high)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(keys, (obs, action, next_obs, reward, terminated, truncated)):
            out[key].append(value)
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.randint(1 << 30)))
        else:
            obs = next_obs
    if own:
        env.close()
    data = {k: np.asarray(v) for k, v in out.items()}
    for key in ("observations", "actions", "next_observations", "rewards"):
        data[key] = data[key].astype(np.float32)
    data["terminals"] = data["terminals"].astype(bool)
    data["timeouts"] = data["timeouts"].astype(bool)
    return data
