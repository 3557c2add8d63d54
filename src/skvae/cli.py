"""The ``skvae`` command line: train on offline-RL data from a YAML config, score,
evaluate and compute threshold candidates.

Run ``skvae --help`` (or ``python -m skvae --help``) for the commands. Every model file
``skvae`` writes is a ``.skvae`` file; every command reads any model file
:func:`skvae.load` reads.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from importlib import resources
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

from . import __version__
from ._csvio import write_table
from ._device import resolve_device
from ._estimator import VAEOutlierDetector, load
from ._inputs import short_repr
from ._persistence import SUFFIX, atomic_write, model_path
from ._scaling import scaling_for
from ._thresholds import heldout_statistics, normalize, threshold_candidates
from .datasets import (
    FEATURE_FILE_SUFFIXES,
    FEATURE_LAYOUTS,
    TRANSITION_KEYS,
    feature_names,
    load_dataset,
    load_feature_file,
    make_features,
    split_indices,
)
from .evaluation import evaluate_anomaly_detection
from .plotting import plot_score_histogram, plot_training_history

# Keys of the old vae_module configs, plus what skvae adds. Of the old keys,
# ``use_rl_data``, ``obs_dim`` and ``action_dim`` are accepted and ignored (the data file
# or task gives the dimensions; ``input_dim``, when set, is checked against them).
CONFIG_KEYS = {
    "task": None,
    "use_rl_data": True,
    "data_path": None,
    "input_dim": None,
    "obs_dim": None,
    "action_dim": None,
    "latent_dim": None,
    "hidden_dims": [256, 128],
    "epochs": 100,
    "batch_size": 256,
    "lr": 1e-3,
    "beta": 1.0,
    "patience": 15,
    "val_ratio": 0.2,
    "test_ratio": 0.2,
    "anomaly_fraction": 0.05,
    "device": "auto",
    "seed": 0,
    "verbose": True,
    "model_save_path": None,
    "fig_save_path": None,
    "features": "next_obs_action",
    "next_observations": "stored",
    "shuffle": False,
    "n_estimators": 1,
    "max_samples": 1.0,
    # Density modelling of a dataset's transitions: every row counts (no trimmed loss).
    "trim_fraction": 0.0,
    # The old module's score (minus the summed squared reconstruction error, in input
    # units), so tuned penalty coefficients keep their meaning; 'elbo' is the opt-in.
    "score_type": "squared_error",
    # 'auto': none for 'squared_error' (input units), 'robust' for the other scores
    "scaling": "auto",
    # The old module's Gaussian decoder; a number is the Student-t likelihood's degrees
    # of freedom (the library's default is 5).
    "decoder_df": None,
    # The estimator's name for anomaly_fraction (give one of the two).
    "contamination": None,
    # Plain feature files (.csv, .npy): the estimator's shuffled validation split, and a
    # shuffled test split only when asked (transition files use val_ratio/test_ratio).
    "validation_fraction": 0.1,
    "test_fraction": 0.0,
    # The estimator's other hyperparameters, with its defaults.
    "alpha": None,
    "n_score_samples": 10,
    "decoder_variance": "feature",
    "weight_decay": 0.0,
    "precision": "auto",
    "n_jobs": None,
}
# Keys that only split transition files (plain feature files use validation_fraction
# and test_fraction).
TRANSITION_SPLIT_KEYS = ("val_ratio", "test_ratio", "shuffle")
# Percentiles the ``thresholds`` command prints by default.
THRESHOLD_PERCENTILES = (1, 5, 10, 15, 20)
SCORE_OUTPUT_SUFFIXES = (".npy", ".csv", ".txt")


class CLIError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def shipped_configs() -> list[str]:
    """Names of the configs shipped with skvae (``skvae train --config NAME``).

    Returns
    -------
    names : list of str
        E.g. ``['halfcheetah', 'hopper', 'walker2d']``.

    Examples
    --------
    >>> "hopper" in shipped_configs()
    True
    """
    folder = resources.files("skvae") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _config_text(name_or_path: str | Path) -> tuple[str, str, bool]:
    """The YAML text of a config given by path or by shipped name, where it came from,
    and whether it is a shipped one."""
    file = Path(name_or_path).expanduser()
    if file.is_file():
        return file.read_text(), str(file), False
    name = str(name_or_path).removesuffix(".yaml")
    if name in shipped_configs():
        resource = resources.files("skvae") / "configs" / f"{name}.yaml"
        return resource.read_text(), f"skvae's shipped config {name!r}", True
    raise CLIError(
        f"there is no config file {file} (the shipped configs, given by name, are "
        f"{', '.join(shipped_configs())})"
    )


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config by path or shipped name, rejecting keys it does not know.

    Parameters
    ----------
    path : path-like, str or None
        A YAML file, or the name of a shipped config (``'hopper'``); ``None`` gives
        the defaults.

    Returns
    -------
    config : dict
        The defaults updated with the file's values.

    Examples
    --------
    >>> load_config(None)["features"]
    'next_obs_action'
    >>> load_config("hopper")["task"]
    'hopper-medium-v2'
    """
    return _read_config(path)[0]


def _read_config(path) -> tuple[dict[str, Any], bool, set[str]]:
    """The config (defaults updated with the file's values), whether it is a shipped
    one, and the keys the file set."""
    config = dict(CONFIG_KEYS)
    if path is None:
        return config, False, set()
    import yaml

    text, source, shipped = _config_text(path)
    if len(text) > MAX_CONFIG_BYTES:
        raise CLIError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes, too large for a config")
    try:
        loaded = yaml.load(text, Loader=_no_aliases_loader()) or {}
    except yaml.YAMLError as exc:
        raise CLIError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError:
        raise CLIError(f"{source} is nested too deeply to be a config") from None
    if not isinstance(loaded, dict):
        raise CLIError(f"{source} must hold a mapping of keys to values")
    unknown = sorted(set(map(str, loaded)) - set(CONFIG_KEYS))
    if unknown:
        raise CLIError(
            f"unknown key(s) {', '.join(unknown)} in {source}; known keys: "
            f"{', '.join(sorted(CONFIG_KEYS))}"
        )
    for key, value in loaded.items():
        check_config_value(key, value, source)
    config.update(loaded)
    return config, shipped, set(map(str, loaded))


MAX_CONFIG_BYTES = 1 << 20


def _no_aliases_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """A safe YAML loader that refuses anchors and aliases (a small file with
        nested aliases can expand into a huge one)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.YAMLError(f"aliases are not allowed (line {event.start_mark.line + 1})")
            return super().compose_node(parent, index)

    return NoAliasLoader


# Config keys that are estimator hyperparameters, and the parameter each sets: the
# estimator's own ``_parameter_constraints`` check them.
SAME_NAMED = ("latent_dim", "hidden_dims", "epochs", "batch_size", "lr", "beta", "patience")
SAME_NAMED += ("device", "n_estimators", "max_samples", "trim_fraction", "score_type", "decoder_df")
SAME_NAMED += ("contamination", "validation_fraction", "alpha", "n_score_samples")
SAME_NAMED += ("decoder_variance", "weight_decay", "precision", "n_jobs")
ESTIMATOR_KEYS = {key: key for key in SAME_NAMED} | {
    "anomaly_fraction": "contamination",
    "seed": "random_state",
}
_COUNT = Interval(Integral, 1, None, closed="left")
# The keys only the command line reads, in scikit-learn's constraint language.
CLI_KEY_CONSTRAINTS = {
    "task": [str, None],
    "use_rl_data": ["boolean"],
    "data_path": [str, None],
    "input_dim": [_COUNT, None],
    # GORMPO's sparse configs write obs_dim: [11] (its --obs_dim takes a list)
    "obs_dim": [_COUNT, list, None],
    "action_dim": [_COUNT, None],
    "val_ratio": [Interval(Real, 0, 1, closed="left")],
    "test_ratio": [Interval(Real, 0, 1, closed="left")],
    "verbose": ["boolean"],
    "model_save_path": [str, None],
    "fig_save_path": [str, None],
    "features": [str],
    "next_observations": [StrOptions({"stored", "qlearning"})],
    "shuffle": ["boolean"],
    "scaling": [StrOptions({"auto", "robust", "standard"}), None],
    "test_fraction": [Interval(Real, 0, 1, closed="left")],
}


def _constraint_text(constraints: list, value) -> str | None:
    """What ``constraints`` ask for when ``value`` fails them, else ``None``."""
    try:
        validate_parameter_constraints({"v": constraints}, {"v": value}, caller_name="config")
    except InvalidParameterError as exc:
        text = str(exc)
        return text[text.index(" must be ") + 9 : text.rindex(". Got ")]
    return None


def check_config_value(key: str, value, source: str | None = "the config") -> None:
    """Raise a one-line error naming ``key`` and ``source`` unless ``value`` has the
    type and range the config key takes.

    Keys that set an estimator hyperparameter are checked by the estimator's own
    constraints (:data:`ESTIMATOR_KEYS` names the parameter), the others by
    :data:`CLI_KEY_CONSTRAINTS`.

    Parameters
    ----------
    key : str
        A config key.
    value : object
        Its value, as YAML gave it.
    source : str or None, default='the config'
        Where it came from, for the message; ``None`` for the command line's flag.

    Returns
    -------
    None
        Raises :class:`CLIError` instead when the value is wrong.

    Examples
    --------
    >>> try:
    ...     check_config_value("val_ratio", "0.2", "hopper.yaml")
    ... except CLIError as e:
    ...     print(e)
    config key val_ratio in hopper.yaml must be a float in the range [0.0, 1.0); got '0.2'
    """
    if key == "contamination" and value is None:
        return  # not given: anomaly_fraction decides
    if key in ESTIMATOR_KEYS:
        constraints = VAEOutlierDetector._parameter_constraints[ESTIMATOR_KEYS[key]]
    else:
        constraints = CLI_KEY_CONSTRAINTS[key]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        what = "a number of a sensible size"  # e.g. 10**400, beyond float range
    else:
        what = _constraint_text(constraints, value)
    if what is None and isinstance(value, bool) and "boolean" not in constraints:
        what = "a number, not true or false"  # bool is an int to Python, not to YAML
    if what is None and key == "hidden_dims" and value is not None:
        try:
            VAEOutlierDetector(hidden_dims=value)._check_hidden_dims()
        except (TypeError, ValueError):
            what = "a list of positive integers or null"
    if what is None and key == "obs_dim" and isinstance(value, list):
        if len(value) != 1 or _constraint_text([_COUNT], value[0]) is not None:
            what = "a positive integer or a list of one"
    if what is not None:
        name = f"--{key.replace('_', '-')}" if source is None else f"config key {key} in {source}"
        raise CLIError(f"{name} must be {what}; got {short_repr(value)}")


def _detector_from_config(config: dict[str, Any], verbose: int) -> VAEOutlierDetector:
    params = {param: config[key] for key, param in ESTIMATOR_KEYS.items() if key != "contamination"}
    if config["contamination"] is not None:
        params["contamination"] = config["contamination"]
    hidden = config["hidden_dims"]
    params["hidden_dims"] = tuple(hidden) if hidden else None
    params["device"] = str(config["device"])
    params["scaling"] = (
        scaling_for(config["score_type"]) if config["scaling"] == "auto" else config["scaling"]
    )
    return VAEOutlierDetector(**params, verbose=verbose)


def estimator_defaults() -> dict[str, Any]:
    """The config values that give :class:`VAEOutlierDetector`'s defaults: what
    ``skvae train`` uses for a plain feature file without a config (``seed`` stays 0,
    so runs repeat).

    Returns
    -------
    values : dict
        Config keys and values.

    Examples
    --------
    >>> estimator_defaults()["score_type"], estimator_defaults()["hidden_dims"]
    ('elbo', None)
    """
    defaults = VAEOutlierDetector().get_params()
    values = {key: defaults[param] for key, param in ESTIMATOR_KEYS.items() if key != "seed"}
    values["contamination"] = None  # anomaly_fraction carries the estimator's default
    values["scaling"] = defaults["scaling"]
    return values


def _label(config: dict[str, Any]) -> str:
    if config["data_path"] is not None:
        return Path(str(config["data_path"])).stem
    return str(config["task"])


def _parse_set(text: str) -> tuple[str, Any]:
    """A ``--set KEY=VALUE`` item: the value is read as YAML (``5``, ``0.1``, ``null``,
    ``[64, 32]``, ``auto``)."""
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise CLIError(f"--set {text}: give KEY=VALUE (e.g. --set n_estimators=10)")
    if key not in CONFIG_KEYS:
        raise CLIError(
            f"--set {text}: unknown key {key}; known keys: {', '.join(sorted(CONFIG_KEYS))}"
        )
    try:
        return key, yaml.load(value, Loader=_no_aliases_loader()) if value.strip() else None
    except yaml.YAMLError as exc:
        raise CLIError(f"--set {text}: {' '.join(str(exc).split())}") from None


# Flags of ``skvae train`` that set a config key of the same name.
TRAIN_FLAGS = (
    "task", "data_path", "epochs", "device", "seed", "model_save_path", "fig_save_path",
    "latent_dim", "contamination", "score_type", "n_estimators", "test_fraction",
)  # fmt: skip


def _train_config(args) -> tuple[dict[str, Any], bool, bool]:
    """The training config of ``args``: the config file's values (or, for a plain
    feature file without one, the estimator's defaults), then ``--set`` items, then
    the flags; whether the data is a plain feature file, and the config is shipped."""
    config, shipped, given = _read_config(args.config)
    data_path = args.data_path if args.data_path is not None else config["data_path"]
    plain = data_path is not None and Path(str(data_path)).suffix.lower() in FEATURE_FILE_SUFFIXES
    if plain and args.config is None:
        config.update(estimator_defaults())
    overrides = dict(_parse_set(item) for item in args.set or [])
    overrides.update({k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None})
    for key, value in overrides.items():
        check_config_value(key, value, None)
    config.update(overrides)
    given |= set(overrides)
    if "contamination" in given and "anomaly_fraction" in given:
        raise CLIError("give contamination or anomaly_fraction (its old name), not both")
    if shipped and args.data_path is not None:
        # a shipped config with the user's own data: the model is named after the data
        if args.task is None:
            config["task"] = None
        if args.model_save_path is None:
            config["model_save_path"] = None
    if plain and given & set(TRANSITION_SPLIT_KEYS):
        print(
            f"skvae: warning: {', '.join(sorted(given & set(TRANSITION_SPLIT_KEYS)))} split "
            "transition files; a feature file is split by validation_fraction and "
            "test_fraction",
            file=sys.stderr,
        )
    return config, plain, shipped


def _cmd_train(args) -> int:
    config, plain, _ = _train_config(args)
    if config["task"] is None and config["data_path"] is None:
        raise CLIError("give a task (--task or 'task:' in the config) or --data-path")
    if config["data_path"] is not None:
        _check_data_suffix(config["data_path"])
    label = _label(config)
    save = check_output(model_path(config["model_save_path"] or label), "the model")
    if config["fig_save_path"]:
        check_output(Path(str(config["fig_save_path"])) / "figure.png", "--fig-save-path")
    _config_device(config, from_command_line=args.device is not None)
    names = None
    if plain:  # a tabular feature file: rows, in the order of the file
        X, names = load_feature_file(config["data_path"], header=args.header)
        if X.ndim != 2:
            raise CLIError(f"{config['data_path']}: the features must be a 2D array of rows")
        data = None
    else:
        data = load_dataset(
            task=config["task"],
            data_path=config["data_path"],
            next_observations=config["next_observations"],
            allow_code_execution=args.allow_code_execution,
        )
        X = make_features(data, config["features"])
    if config["input_dim"] is not None and int(config["input_dim"]) != X.shape[1]:
        raise CLIError(
            f"config input_dim={config['input_dim']} but the data has {X.shape[1]} "
            f"features ({config['features']})"
        )
    if plain:
        train, val, test = _plain_split(len(X), config["test_fraction"], config["seed"])
    else:
        train, val, test = split_indices(
            data,
            config["val_ratio"],
            config["test_ratio"],
            shuffle=config["shuffle"],
            random_state=config["seed"],
        )
    if args.compute_thresholds_only:
        return _compute_thresholds_only(save, X, val, train)
    # progress unless --quiet or 'verbose: false'; --verbose adds the losses of each check
    verbose = 0 if args.quiet or not config["verbose"] else 2 if args.verbose else 1
    detector = _detector_from_config(config, verbose=verbose)
    print(f"training {label} ({len(X)} rows); the model will be written to {save}")
    if plain:  # the estimator's own fit: its validation split, its threshold
        detector.fit(X[train])
        if names is not None:
            detector._name_features(names)
    else:
        detector.fit(X[train], validation_data=X[val] if len(val) else None)
    print(
        f"trained on {len(train)} rows ({X.shape[1]} features): "
        f"{detector.n_epochs_} epochs, kept epoch {detector.best_epoch_}"
    )
    held_out = X[val] if len(val) else X[train]
    info: dict[str, Any] = {}
    if not plain:
        # the one rule of the offline-RL entry points (compat's fit + save_model too):
        # the threshold and its candidates from the validation rows, mean and std from
        # training
        offset, mean, std, candidates = heldout_statistics(
            -detector.decision_scores_,
            detector.score_samples(X[val]) if len(val) else None,
            detector.contamination,
        )
        detector._set_offset(offset, score_mean=mean, score_std=std)
        info["threshold_candidates"] = candidates
        info["threshold_candidates_on"] = "validation" if len(val) else "training"
    if len(test):
        s = detector.score_samples(X[test])
        print(
            f"test ({len(test)} rows): mean score {s.mean():.4f}, flagged "
            f"{np.mean(s < detector.offset_):.1%} (expected about {detector.contamination:.1%})"
        )
    layout = config["features"]
    splits: dict[str, Any] = {"n_train": int(len(train)), "n_test": int(len(test))}
    if plain:
        splits.update(
            validation_fraction=config["validation_fraction"],
            test_fraction=config["test_fraction"],
            shuffle=True,
        )
    else:
        splits.update(
            n_val=int(len(val)),
            val_ratio=config["val_ratio"],
            test_ratio=config["test_ratio"],
            shuffle=bool(config["shuffle"]),
        )
    info.update(
        label=label,
        task=config["task"],
        data_path=None if config["data_path"] is None else str(config["data_path"]),
        features=None if plain else list(FEATURE_LAYOUTS.get(layout, layout)),
        feature_names=names if plain else feature_names(data, layout),
        splits=splits,
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()},
        written_by="skvae train",
    )
    detector.save(save, info=info)
    print(f"saved {save}")
    if config["fig_save_path"]:
        _save_figures(detector, held_out, Path(str(config["fig_save_path"])), save)
    return 0


def _plain_split(n_rows: int, test_fraction: float, seed) -> tuple[np.ndarray, ...]:
    """Rows of a plain feature file: a seeded, shuffled test split of ``test_fraction``
    (none by default); the rest trains (the estimator holds out its own validation
    rows). Returns ``(train, val, test)`` with ``val`` empty, each sorted."""
    n_test = int(test_fraction * n_rows)
    if n_test and n_rows - n_test < 2:
        raise CLIError(f"--test-fraction {test_fraction} leaves fewer than 2 training rows")
    order = np.random.RandomState(seed).permutation(n_rows)
    return np.sort(order[n_test:]), order[:0], np.sort(order[:n_test])


def check_output(path: str | Path, what: str) -> Path:
    """``path`` as a file this process can write, checked before any work: not a
    folder, in a folder that exists or can be made (missing folders are made when the
    file is written), writable. Every command checks its outputs with this.

    Parameters
    ----------
    path : path-like
        The file to be written.
    what : str
        What it is, for the message (``'--output'``, ``'the model'``).

    Returns
    -------
    path : pathlib.Path
        The path, with ``~`` expanded.

    Examples
    --------
    >>> check_output("/proc/version/x.csv", "--output")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skvae.cli.CLIError: --output /proc/version/x.csv: /proc/version is a file, not a folder
    """
    out = Path(path).expanduser()
    if out.is_dir():
        raise CLIError(f"{what} {path} is a folder; give a file name")
    if out.exists() and not out.is_file():
        raise CLIError(f"{what} {path} exists and is not a regular file")
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise CLIError(f"{what} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CLIError(f"{what} {path}: {out if out.exists() else folder} is not writable")
    return out


def _config_device(config: dict[str, Any], from_command_line: bool) -> None:
    """Check the training device before any work. A CUDA device that this machine
    lacks is an error when ``--device`` named it, and falls back to the CPU with one
    warning line when the config did (every GORMPO config says ``device: cuda``; the
    old command line fell back too)."""
    try:
        resolve_device(str(config["device"]))
    except ValueError:
        if from_command_line or not str(config["device"]).startswith("cuda"):
            raise
        print(
            f"skvae: warning: the config's device {config['device']!r} is not available "
            "here (no CUDA); training on the CPU",
            file=sys.stderr,
        )
        config["device"] = "cpu"


def _compute_thresholds_only(save: Path, X: np.ndarray, val, train) -> int:
    """Score the validation split with the saved model and store threshold candidates
    (integer percentiles, ``thr`` units) in its file, as the old
    ``--compute_thresholds_only`` did."""
    detector, info = load(save, return_info=True)
    _check_dim(detector, X)
    rows = val if len(val) else train
    candidates = threshold_candidates(
        detector.score_samples(X[rows]), detector.score_mean_, detector.score_std_
    )
    info = {k: v for k, v in info.items() if k != "source"}
    info.update(
        threshold_candidates=candidates,
        threshold_candidates_on="validation" if len(val) else "training",
    )
    detector.save(save, info=info)
    for p, thr in candidates.items():
        print(f"percentile {p:>2}: thr {thr:.4f}")
    print(f"threshold candidates stored in {save}")
    return 0


def _save_figures(detector: VAEOutlierDetector, X_held_out, folder: Path, save: Path) -> None:
    """The training curves and the held-out score distribution, as PNG files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print(
            "figures skipped: plotting needs matplotlib (pip install 'skvae[plot]', or "
            "pip install -e '.[plot]' in a checkout)"
        )
        return
    folder.mkdir(parents=True, exist_ok=True)
    stem = save.name.removesuffix(SUFFIX)
    for name, ax in (
        ("training_curves", plot_training_history(detector)),
        (
            "score_distribution",
            plot_score_histogram(detector.score_samples(X_held_out), threshold=detector.offset_),
        ),
    ):
        file = folder / f"{stem}_{name}.png"
        atomic_write(file, lambda fh, fig=ax.figure: fig.savefig(fh, format="png", dpi=100))
        matplotlib.pyplot.close(ax.figure)
        print(f"figure written to {file}")


DATA_SUFFIXES = (*FEATURE_FILE_SUFFIXES, ".npz", ".hdf5", ".h5", ".pkl")


def _check_data_suffix(path) -> None:
    """Refuse, in one line listing every format, a data file skvae does not read."""
    if Path(str(path)).suffix.lower() not in DATA_SUFFIXES:
        raise CLIError(
            f"{path}: unsupported data file {Path(str(path)).suffix or '(no extension)'!r}; "
            "use a feature file (.csv, .npy) or a transitions file (.npz, .hdf5, .h5, .pkl)"
        )


def _load_model(args) -> tuple[VAEOutlierDetector, dict]:
    return load(
        args.model,
        hidden_dims=args.hidden_dims,
        return_info=True,
        allow_code_execution=args.allow_code_execution,
    )


def _model_names(model: VAEOutlierDetector, info: dict) -> list[str] | None:
    """The model's feature names: ``feature_names_in_``, else (models written by
    ``skvae train`` before feature names were fitted) the names its file's ``info`` kept."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    recorded = info.get("feature_names")
    if isinstance(recorded, list) and len(recorded) == model.n_features_in_:
        return [str(n) for n in recorded]
    return None


def _check_names(names: list[str] | None, model_names: list[str] | None, file) -> None:
    """A CSV header must name the model's features, in its order."""
    if names is None or model_names is None or names == model_names:
        return
    missing = [n for n in model_names if n not in names]
    extra = [n for n in names if n not in model_names]
    if missing or extra:
        detail = (
            f"missing {', '.join(missing) or 'none'}; not the model's: {', '.join(extra) or 'none'}"
        )
    else:
        detail = "the same names in another order"
    raise CLIError(f"the columns of {file} are not the model's features ({detail})")


def _load_labelled(args, path: str, model_names) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` of a labelled CSV file: the column ``--label-column``
    names (a header name, or a 0-based position) holds the labels; the other columns
    must be the model's features."""
    if Path(path).suffix.lower() != ".csv":
        raise CLIError(f"{path}: a labelled file is a .csv file")
    X, names = load_feature_file(path, header=args.header)
    column = args.label_column
    if names is not None and column in names:
        j = names.index(column)
    elif column.isdigit() and int(column) < X.shape[1]:
        j = int(column)
    else:
        shown = ", ".join(names) if names is not None else f"{X.shape[1]} unnamed columns"
        raise CLIError(f"{path} has no column {column!r} ({shown})")
    keep = [k for k in range(X.shape[1]) if k != j]
    _check_names([names[k] for k in keep] if names else None, model_names, path)
    return X[:, keep], X[:, j]


def _load_features(args, path: str, info: dict, model_names=None) -> np.ndarray:
    """An array file (.npy, .csv) as is (a CSV header must name ``model_names``), or a
    transitions file turned into features in the layout the model was trained on."""
    file = Path(path)
    if not file.exists():
        raise CLIError(f"there is no data file {file}")
    _check_data_suffix(file)
    recorded = info.get("features")
    if args.features is not None and args.features not in FEATURE_LAYOUTS:
        unknown = [k for k in args.features.split(",") if k not in TRANSITION_KEYS]
        if unknown:
            raise CLIError(
                f"--features {args.features} is not a feature layout: use one of "
                f"{', '.join(sorted(FEATURE_LAYOUTS))}, or dataset keys joined by commas "
                f"({', '.join(TRANSITION_KEYS)})"
            )
    if args.features is not None and recorded is not None:
        asked = list(FEATURE_LAYOUTS.get(args.features, args.features.split(",")))
        if asked != list(recorded):
            raise CLIError(
                f"--features {args.features} does not match the model's feature layout {recorded}"
            )
    if file.suffix.lower() in FEATURE_FILE_SUFFIXES:
        X, names = load_feature_file(file, header=args.header)
        _check_names(names, model_names, file)
        return X
    layout = tuple(recorded) if recorded is not None else (args.features or "next_obs_action")
    data = load_dataset(data_path=file, allow_code_execution=args.allow_code_execution)
    return make_features(data, layout)


def _model_and_scores(args, data: str):
    """Load the model of ``args.model``, read the features of the file ``data`` and
    score them: ``(model, info, X, scores)``."""
    model, info = _load_model(args)
    X = _load_features(args, data, info, _model_names(model, info))
    _check_dim(model, X)
    return model, info, X, model.score_samples(X)


# The command line checks a CSV file's names itself and scores arrays: scikit-learn's
# warning that an array has no feature names would be noise.
_NO_NAMES = "X does not have valid feature names"


def _cmd_score(args) -> int:
    output = None if args.output is None else _score_output(args.output, "--output")
    explain = None if args.explain is None else _score_output(args.explain, "--explain", (".csv",))
    pvalues = (
        args.pvalues if args.pvalues in (None, True) else _score_output(args.pvalues, "--pvalues")
    )
    if pvalues is True and (output is None or output.suffix.lower() != ".csv"):
        raise CLIError("--pvalues without a file adds a column to a .csv --output; give one")
    _refuse_clobbering(
        {"the data": args.data, "the model": args.model},
        {
            "--output": output,
            "--explain": explain,
            "--pvalues": pvalues if isinstance(pvalues, Path) else None,
        },
    )
    model, info, X, s = _model_and_scores(args, args.data)
    print(
        f"{len(s)} rows: mean score {s.mean():.4f}, std {s.std():.4f}, "
        f"flagged {np.mean(s < model.offset_):.1%}"
    )
    thr = normalize(model.offset_, model.score_mean_, model.score_std_)
    print(f"threshold: offset_ {model.offset_!r} (score units), thr {thr!r} (normalised)")
    p = model.pvalues(X) if pvalues is not None else None
    if output is not None:
        columns = {"score": s, "decision": s - model.offset_}
        columns["label"] = np.where(columns["decision"] < 0, -1, 1)  # predict's
        if pvalues is True:
            columns["pvalue"] = p
        atomic_write(output, lambda fh: _write_scores(fh, output.suffix.lower(), columns))
        print(f"scores written to {output}")
    if isinstance(pvalues, Path):
        atomic_write(pvalues, lambda fh: _write_scores(fh, pvalues.suffix.lower(), {"pvalue": p}))
        print(f"p-values written to {pvalues} ({np.mean(p <= 0.05):.1%} at or below 0.05)")
    if explain is not None:
        contributions, latent = model.feature_contributions(X, return_latent=True)
        names = _model_names(model, info) or [f"x[{j}]" for j in range(X.shape[1])]
        table = np.column_stack([contributions, latent])
        atomic_write(explain, lambda fh: write_table(fh, [*names, "latent"], table))
        print(f"feature contributions written to {explain}")
    return 0


def _refuse_clobbering(inputs: dict[str, str], outputs: dict[str, Path | None]) -> None:
    """Refuse an output path that is an input or another output (checked before any
    work, so nothing is overwritten)."""
    seen: dict[Path, str] = {}
    for name, path in inputs.items():
        for candidate in (Path(path), Path(f"{path}{SUFFIX}")):
            if candidate.exists():
                seen[candidate.resolve()] = name
    for flag, path in outputs.items():
        if path is None:
            continue
        where = path.resolve()
        if where in seen:
            raise CLIError(f"{flag} {path} is {seen[where]}; give another file")
        seen[where] = flag


def _score_output(path: str, flag: str, suffixes=SCORE_OUTPUT_SUFFIXES) -> Path:
    out = check_output(path, flag)
    if out.suffix.lower() not in suffixes:
        raise CLIError(
            f"{flag} {path}: unsupported extension {out.suffix or '(none)'!r}; use "
            f"{', '.join(suffixes)}"
        )
    return out


def _write_scores(fh, suffix: str, columns: dict[str, np.ndarray]) -> None:
    """A ``.csv`` file gets every column under a header; ``.npy`` and ``.txt`` the
    first column alone (raw scores, or p-values), one value a line."""
    first = next(iter(columns.values()))
    if suffix == ".npy":
        np.save(fh, first)
    elif suffix == ".csv":  # each column keeps its type: labels stay integers
        table = np.empty((len(first), len(columns)), dtype=object)
        for j, values in enumerate(columns.values()):
            table[:, j] = np.asarray(values).tolist()
        write_table(fh, list(columns), table)
    else:
        text = io.StringIO()
        np.savetxt(text, first, delimiter=",")
        fh.write(text.getvalue().encode())


def _cmd_evaluate(args) -> int:
    if (args.data is None) == (args.normal is None and args.anomaly is None):
        raise CLIError("give a labelled file (with --label-column) or --normal and --anomaly")
    model, info = _load_model(args)
    names = _model_names(model, info)
    if args.data is not None:
        if args.label_column is None:
            raise CLIError(f"{args.data}: name the label column with --label-column")
        X, labels = _load_labelled(args, args.data, names)
        is_anomaly = _anomalies(labels, args.anomaly_label, args.data)
        X_normal, X_anomaly = X[~is_anomaly], X[is_anomaly]
    else:
        if args.normal is None or args.anomaly is None:
            raise CLIError("give both --normal and --anomaly")
        X_normal = _load_features(args, args.normal, info, names)
        X_anomaly = _load_features(args, args.anomaly, info, names)
    _check_dim(model, X_normal)
    _check_dim(model, X_anomaly)
    report = evaluate_anomaly_detection(model, X_normal, X_anomaly)
    print(f"{len(X_normal)} normal rows, {len(X_anomaly)} anomalies")
    print(f"ROC AUC: {report.roc_auc:.4f}")
    print(f"Accuracy: {report.accuracy:.4f}")
    print(f"Average precision: {report.average_precision:.4f}")
    print(
        f"normal score {report.normal_score_mean:.4f} +- {report.normal_score_std:.4f}, "
        f"anomaly score {report.anomaly_score_mean:.4f} +- {report.anomaly_score_std:.4f}"
    )
    return 0


def _anomalies(labels: np.ndarray, anomaly_label: float, file) -> np.ndarray:
    """Which rows are anomalies: label ``anomaly_label``; every other label is normal.
    Missing labels are an error, and both kinds must be present."""
    if np.isnan(labels).any():
        raise CLIError(f"{file}: the label column has missing values")
    is_anomaly = labels == anomaly_label
    if is_anomaly.all() or not is_anomaly.any():
        found = ", ".join(f"{v:g}" for v in np.unique(labels)[:5])
        raise CLIError(
            f"{file}: the labels ({found}) need both anomalies (= --anomaly-label "
            f"{anomaly_label:g}) and normal rows"
        )
    return is_anomaly


def _cmd_thresholds(args) -> int:
    model, _, _, s = _model_and_scores(args, args.data)
    print("percentile  threshold  thr (normalised)")
    for p in args.percentiles:
        t = float(np.percentile(s, p))
        print(f"{p:10g}  {t:9.4f}  {normalize(t, model.score_mean_, model.score_std_):16.4f}")
    return 0


def _check_dim(model: VAEOutlierDetector, X: np.ndarray) -> None:
    if X.ndim != 2:
        raise CLIError(f"the data must be a 2D array of rows; got shape {X.shape}")
    if X.shape[1] != model.n_features_in_:
        raise CLIError(
            f"the data has {X.shape[1]} features but the model expects {model.n_features_in_}"
        )


def _contamination(text: str) -> float | str:
    """A ``--contamination`` value: ``auto`` or a number (its range is the estimator's)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'auto'") from None


def _percentile(text: str) -> float:
    """A ``--percentiles`` value: a number in [0, 100] (checked before any work)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 100:  # also false for NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentile in [0, 100]")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a usage mistake in one line (no usage block),
    like every other error of the command line, and exits with 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``skvae`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        Parser with the ``train``, ``score``, ``evaluate`` and ``thresholds`` commands.

    Examples
    --------
    >>> args = build_parser().parse_args(["train", "--task", "hopper-medium-v2", "--epochs", "5"])
    >>> args.command, args.epochs
    ('train', 5)
    """
    parser = _Parser(
        prog="skvae", description="VAE outlier detection for tabular and offline-RL data."
    )
    parser.add_argument("--version", action="version", version=f"skvae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    header = {
        "action": argparse.BooleanOptionalAction,
        "default": None,
        "help": "whether the first line of a .csv file is a header (default: decided by "
        "rule, and an ambiguous first line is an error)",
    }
    unsafe = {
        "action": "store_true",
        "dest": "allow_code_execution",
        "help": "also read pickled files (.joblib/.pkl models, full .pkl datasets): "
        "unpickling runs the code they hold; only for files from a source you trust",
    }

    train = sub.add_parser("train", help="train on an offline-RL dataset or a feature file")
    train.add_argument(
        "--config",
        help=f"YAML config: a path, or the name of a shipped one ({', '.join(shipped_configs())})",
    )
    train.add_argument("--task", help="D4RL task or minari:<dataset id>")
    train.add_argument(
        "--data-path",
        "--data_path",
        dest="data_path",
        help="transitions (.hdf5/.npz/.pkl) or a plain feature array (.npy, or .csv with or "
        "without a header row)",
    )
    train.add_argument("--epochs", type=int, help="passes over the training rows (config: epochs)")
    train.add_argument(
        "--contamination",
        type=_contamination,
        help="expected fraction of outliers in the training rows, or 'auto' (config: "
        "contamination, or its old name anomaly_fraction)",
    )
    train.add_argument(
        "--score-type",
        "--score_type",
        dest="score_type",
        help="elbo, reconstruction, reconstruction_probability or squared_error",
    )
    train.add_argument(
        "--n-estimators", "--n_estimators", dest="n_estimators", type=int, help="ensemble size"
    )
    train.add_argument(
        "--test-fraction",
        "--test_fraction",
        dest="test_fraction",
        type=float,
        help="feature files: hold out this shuffled fraction of rows as a test split "
        "(default: none)",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="set any config key (docs/cli.md lists them), e.g. --set hidden_dims=[64,32]; "
        "repeatable",
    )
    train.add_argument("--header", **header)
    train.add_argument(
        "--device",
        help="cpu, cuda, cuda:N or auto; a CUDA device this machine lacks is an error here, "
        "while a config's falls back to the CPU with a warning",
    )
    train.add_argument("--seed", type=int, help="seeds the split, the weights and the batches")
    train.add_argument(
        "--latent-dim", "--latent_dim", dest="latent_dim", type=int, help="size of the latent space"
    )
    for flag in ("obs_dim", "action_dim"):
        train.add_argument(
            f"--{flag.replace('_', '-')}",
            f"--{flag}",
            dest=flag,
            type=int,
            nargs="+",
            help="accepted for old command lines (GORMPO's takes a list); the data gives "
            "the dimensions",
        )
    train.add_argument(
        "--fig-save-path",
        "--fig_save_path",
        dest="fig_save_path",
        help="folder for the training-curve and score-distribution figures",
    )
    train.add_argument(
        "--verbose",
        action="store_true",
        help="also print the losses of every check (progress is shown unless --quiet)",
    )
    train.add_argument(
        "--compute-thresholds-only",
        "--compute_thresholds_only",
        dest="compute_thresholds_only",
        action="store_true",
        help="do not train: score the validation split with the saved model and store "
        "threshold candidates (percentiles 1, 5, 10, 15, 20) in its file",
    )
    train.add_argument(
        "--model-save-path",
        "--model_save_path",
        dest="model_save_path",
        help=f"where to write the model ({SUFFIX} is appended unless given); default: "
        "the config's, else <task or data file name>.skvae here",
    )
    train.add_argument("--quiet", action="store_true", help="no progress")
    train.add_argument("--allow-code-execution", **unsafe)
    train.set_defaults(func=_cmd_train)

    def model_command(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("model", help="model file (.skvae, an old _model.pth pair, a stem)")
        cmd.add_argument(
            "--features", help="feature layout for transition files (default: the model's)"
        )
        cmd.add_argument(
            "--hidden-dims",
            dest="hidden_dims",
            type=int,
            nargs="+",
            help="hidden sizes, only for model files of the old vae_module",
        )
        cmd.add_argument("--header", **header)
        cmd.add_argument("--allow-code-execution", **unsafe)
        return cmd

    score = model_command("score", "score samples with a saved model")
    score.add_argument("data", help=".npy/.csv feature array or a transitions file")
    score.add_argument(
        "--output",
        help="write the scores to this file: .csv with a header (score, decision, label as "
        "predict gives it: +1 inlier, -1 outlier; pvalue with --pvalues), .npy or .txt the "
        "raw scores",
    )
    score.add_argument(
        "--explain",
        help="write each feature's contribution to the score to this .csv file "
        "(one named column per feature, then the latent term)",
    )
    score.add_argument(
        "--pvalues",
        nargs="?",
        const=True,
        help="add conformal p-values to the .csv --output, or, given a file, write them "
        "there (.npy, .csv or .txt)",
    )
    score.set_defaults(func=_cmd_score)

    evaluate = model_command("evaluate", "ROC AUC and accuracy on labelled data")
    evaluate.add_argument("data", nargs="?", help="a labelled .csv file (with --label-column)")
    evaluate.add_argument(
        "--label-column",
        "--label_column",
        dest="label_column",
        help="the column of the labels (a header name, or a 0-based position)",
    )
    evaluate.add_argument(
        "--anomaly-label",
        "--anomaly_label",
        dest="anomaly_label",
        type=float,
        default=1.0,
        help="the label of an anomaly (default: 1); every other label is normal",
    )
    evaluate.add_argument("--normal", help="or: a file of normal rows only")
    evaluate.add_argument("--anomaly", help="and a file of anomalous rows only")
    evaluate.set_defaults(func=_cmd_evaluate)

    thresholds = model_command("thresholds", "threshold candidates at percentiles")
    thresholds.add_argument("data", help=".npy/.csv feature array or a transitions file")
    thresholds.add_argument(
        "--percentiles",
        type=_percentile,
        nargs="+",
        default=list(THRESHOLD_PERCENTILES),
        help="percentiles of the scores to print (default: 1 5 10 15 20)",
    )
    thresholds.set_defaults(func=_cmd_thresholds)
    return parser


_INTERRUPTED = "skvae: interrupted (nothing half-written was left)"


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in the chain of causes of ``exc``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _warning_line(message, category, *args, **kwargs) -> None:
    """A warning, as the command line prints it: one line on stderr."""
    print(f"skvae: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    code : int
        0 on success (and for ``--help`` and ``--version``), 2 on a user error or a
        usage mistake (reported in one line, without a traceback), 130 when interrupted.

    Examples
    --------
    >>> main(["train", "--task", "hopper-absent-v2", "--quiet"])  # doctest: +ELLIPSIS
    2
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage mistake (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_NAMES, category=UserWarning)
            warnings.showwarning = _warning_line
            return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if _caused_by_interrupt(exc):  # e.g. an extension module's import, interrupted
            print(_INTERRUPTED, file=sys.stderr)
            return 130
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, (CLIError, OSError, ValueError, TypeError, ImportError)):
            message = f"{type(exc).__name__}: {message} (--debug shows the traceback)"
        print(f"skvae: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
