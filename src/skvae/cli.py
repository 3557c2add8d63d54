"""The ``skvae`` command line: train on offline-RL data from a YAML config, score,
evaluate and compute threshold candidates.

Run ``skvae --help`` (or ``python -m skvae --help``) for the commands. Every model file
``skvae`` writes is a ``.skvae`` file; every command reads any model file
:func:`skvae.load` reads.
"""

from __future__ import annotations

import argparse
import io
import sys
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
}
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


def _read_config(path) -> tuple[dict[str, Any], bool]:
    config = dict(CONFIG_KEYS)
    if path is None:
        return config, False
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
    return config, shipped


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
    hidden = config["hidden_dims"]
    return VAEOutlierDetector(
        latent_dim=config["latent_dim"],
        hidden_dims=tuple(hidden) if hidden else None,
        beta=config["beta"],
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        lr=config["lr"],
        patience=config["patience"],
        contamination=config["anomaly_fraction"],
        score_type=config["score_type"],
        n_estimators=config["n_estimators"],
        max_samples=config["max_samples"],
        trim_fraction=config["trim_fraction"],
        decoder_df=config["decoder_df"],
        scaling=scaling_for(config["score_type"])
        if config["scaling"] == "auto"
        else config["scaling"],
        device=str(config["device"]),
        random_state=config["seed"],
        verbose=verbose,
    )


def _label(config: dict[str, Any]) -> str:
    if config["data_path"] is not None:
        return Path(str(config["data_path"])).stem
    return str(config["task"])


def _cmd_train(args) -> int:
    config, shipped = _read_config(args.config)
    for key in (
        "task",
        "data_path",
        "epochs",
        "device",
        "seed",
        "model_save_path",
        "fig_save_path",
        "latent_dim",
    ):
        value = getattr(args, key)
        if value is not None:
            check_config_value(key, value, None)
            config[key] = value
    if shipped and args.data_path is not None:
        # a shipped config with the user's own data: the model is named after the data
        if args.task is None:
            config["task"] = None
        if args.model_save_path is None:
            config["model_save_path"] = None
    if config["task"] is None and config["data_path"] is None:
        raise CLIError("give a task (--task or 'task:' in the config) or --data-path")
    label = _label(config)
    save = model_path(config["model_save_path"] or label)
    _config_device(config, from_command_line=args.device is not None)
    plain = config["data_path"] is not None and (
        Path(str(config["data_path"])).suffix.lower() in FEATURE_FILE_SUFFIXES
    )
    if plain:  # a tabular feature file: each row is its own "episode"
        X, names = load_feature_file(config["data_path"])
        if X.ndim != 2:
            raise CLIError(f"{config['data_path']}: the features must be a 2D array of rows")
        ends = np.ones(len(X), dtype=bool)
        data = {"observations": X, "terminals": ends, "timeouts": np.zeros_like(ends)}
    else:
        data = load_dataset(
            task=config["task"],
            data_path=config["data_path"],
            next_observations=config["next_observations"],
            allow_code_execution=args.allow_code_execution,
        )
        X = make_features(data, config["features"])
        names = feature_names(data, config["features"])
    if config["input_dim"] is not None and int(config["input_dim"]) != X.shape[1]:
        raise CLIError(
            f"config input_dim={config['input_dim']} but the data has {X.shape[1]} "
            f"features ({config['features']})"
        )
    try:
        train, val, test = split_indices(
            data,
            config["val_ratio"],
            config["test_ratio"],
            shuffle=config["shuffle"],
            random_state=config["seed"],
        )
    except TypeError as exc:
        raise CLIError(f"config keys val_ratio and test_ratio must be numbers ({exc})") from exc
    if args.compute_thresholds_only:
        return _compute_thresholds_only(save, X, val, train)
    # progress unless --quiet or 'verbose: false'; --verbose adds the losses of each check
    verbose = 0 if args.quiet or not config["verbose"] else 2 if args.verbose else 1
    detector = _detector_from_config(config, verbose=verbose)
    print(f"training {label} ({len(X)} rows); the model will be written to {save}")
    detector.fit(X[train], validation_data=X[val] if len(val) else None)
    print(
        f"trained on {len(train)} rows ({X.shape[1]} features): "
        f"{detector.n_epochs_} epochs, kept epoch {detector.best_epoch_}"
    )
    held_out = X[val] if len(val) else X[train]
    # the one rule of the offline-RL entry points (compat's fit + save_model too): the
    # threshold and its candidates from the validation rows, mean and std from training
    offset, mean, std, candidates = heldout_statistics(
        -detector.decision_scores_,
        detector.score_samples(X[val]) if len(val) else None,
        detector.contamination,
    )
    detector._set_offset(offset, score_mean=mean, score_std=std)
    if len(test):
        s = detector.score_samples(X[test])
        print(
            f"test: mean score {s.mean():.4f}, flagged {np.mean(s < detector.offset_):.1%} "
            f"(expected about {detector.contamination:.1%})"
        )
    layout = config["features"]
    info = {
        "label": label,
        "task": config["task"],
        "data_path": None if config["data_path"] is None else str(config["data_path"]),
        "features": None if plain else list(FEATURE_LAYOUTS.get(layout, layout)),
        "feature_names": names,
        "splits": {
            "n_train": int(len(train)),
            "n_val": int(len(val)),
            "n_test": int(len(test)),
            "val_ratio": config["val_ratio"],
            "test_ratio": config["test_ratio"],
            "shuffle": bool(config["shuffle"]),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()},
        "threshold_candidates": candidates,
        "threshold_candidates_on": "validation" if len(val) else "training",
        "written_by": "skvae train",
    }
    detector.save(save, info=info)
    print(f"saved {save}")
    if config["fig_save_path"]:
        _save_figures(detector, held_out, Path(str(config["fig_save_path"])), save)
    return 0


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


def _load_model(args) -> tuple[VAEOutlierDetector, dict]:
    return load(
        args.model,
        hidden_dims=args.hidden_dims,
        return_info=True,
        allow_code_execution=args.allow_code_execution,
    )


def _load_features(args, path: str, info: dict) -> np.ndarray:
    """An array file (.npy, .csv) as is, or a transitions file turned into features in
    the layout the model was trained on."""
    file = Path(path)
    if not file.is_file():
        raise CLIError(f"there is no data file {file}")
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
        X, names = load_feature_file(file)
        recorded_names = info.get("feature_names")
        if names is not None and recorded_names is not None and names != recorded_names:
            raise CLIError(
                f"the columns of {file} ({', '.join(names)}) are not the model's "
                f"({', '.join(recorded_names)})"
            )
        return X
    layout = tuple(recorded) if recorded is not None else (args.features or "next_obs_action")
    data = load_dataset(data_path=file, allow_code_execution=args.allow_code_execution)
    return make_features(data, layout)


def _model_and_scores(args, data: str):
    """Load the model of ``args.model``, read the features of the file ``data`` and
    score them: ``(model, info, X, scores)``."""
    model, info = _load_model(args)
    X = _load_features(args, data, info)
    _check_dim(model, X)
    return model, info, X, model.score_samples(X)


def _cmd_score(args) -> int:
    output = None if args.output is None else _score_output(args.output)
    explain = None if args.explain is None else _score_output(args.explain, (".csv",))
    pvalues = None if args.pvalues is None else _score_output(args.pvalues)
    _refuse_clobbering(
        {"the data": args.data, "the model": args.model},
        {"--output": output, "--explain": explain, "--pvalues": pvalues},
    )
    model, info, X, s = _model_and_scores(args, args.data)
    print(
        f"{len(s)} rows: mean score {s.mean():.4f}, std {s.std():.4f}, "
        f"flagged {np.mean(s < model.offset_):.1%}"
    )
    thr = normalize(model.offset_, model.score_mean_, model.score_std_)
    print(f"threshold: offset_ {model.offset_!r} (score units), thr {thr!r} (normalised)")
    if output is not None:
        atomic_write(output, lambda fh: _write_scores(fh, output.suffix.lower(), s))
        print(f"scores written to {output}")
    if pvalues is not None:
        p = model.pvalues(X)
        atomic_write(pvalues, lambda fh: _write_scores(fh, pvalues.suffix.lower(), p))
        print(f"p-values written to {pvalues} ({np.mean(p <= 0.05):.1%} at or below 0.05)")
    if explain is not None:
        contributions, latent = model.feature_contributions(X, return_latent=True)
        names = info.get("feature_names") or [
            str(n)
            for n in getattr(model, "feature_names_in_", [f"x[{j}]" for j in range(X.shape[1])])
        ]
        table = np.column_stack([contributions, latent])
        header = ",".join([*names, "latent"])

        def write(fh) -> None:
            text = io.StringIO()
            np.savetxt(text, table, delimiter=",", header=header, comments="")
            fh.write(text.getvalue().encode())

        atomic_write(explain, write)
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


def _score_output(path: str, suffixes=SCORE_OUTPUT_SUFFIXES) -> Path:
    out = Path(path).expanduser()
    if out.is_dir():
        raise CLIError(f"output {path} is a folder; give a file name")
    if out.suffix.lower() not in suffixes:
        raise CLIError(
            f"output {path}: unsupported extension {out.suffix or '(none)'!r}; use "
            f"{', '.join(suffixes)}"
        )
    if not out.parent.is_dir():
        raise CLIError(f"output {path}: the folder {out.parent} does not exist")
    return out


def _write_scores(fh, suffix: str, scores: np.ndarray) -> None:
    if suffix == ".npy":
        np.save(fh, scores)
    else:
        text = io.StringIO()
        np.savetxt(text, scores, delimiter=",")
        fh.write(text.getvalue().encode())


def _cmd_evaluate(args) -> int:
    model, info = _load_model(args)
    X_normal = _load_features(args, args.normal, info)
    X_anomaly = _load_features(args, args.anomaly, info)
    _check_dim(model, X_normal)
    _check_dim(model, X_anomaly)
    report = evaluate_anomaly_detection(model, X_normal, X_anomaly)
    print(f"ROC AUC: {report.roc_auc:.4f}")
    print(f"Accuracy: {report.accuracy:.4f}")
    print(f"Average precision: {report.average_precision:.4f}")
    print(
        f"normal score {report.normal_score_mean:.4f} +- {report.normal_score_std:.4f}, "
        f"anomaly score {report.anomaly_score_mean:.4f} +- {report.anomaly_score_std:.4f}"
    )
    return 0


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
            help="accepted for old command lines; the data gives the dimensions",
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
        cmd.add_argument("--allow-code-execution", **unsafe)
        return cmd

    score = model_command("score", "score samples with a saved model")
    score.add_argument("data", help=".npy/.csv feature array or a transitions file")
    score.add_argument("--output", help="write the scores to this .npy, .csv or .txt file")
    score.add_argument(
        "--explain",
        help="write each feature's contribution to the score to this .csv file "
        "(one named column per feature, then the latent term)",
    )
    score.add_argument("--pvalues", help="write conformal p-values to this .npy, .csv or .txt file")
    score.set_defaults(func=_cmd_score)

    evaluate = model_command("evaluate", "ROC AUC and accuracy on labelled data")
    evaluate.add_argument("--normal", required=True, help="file of normal rows (label 0)")
    evaluate.add_argument("--anomaly", required=True, help="file of anomalous rows (label 1)")
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
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("skvae: interrupted (nothing half-written was left)", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, (CLIError, OSError, ValueError, TypeError, ImportError)):
            message = f"{type(exc).__name__}: {message} (--debug shows the traceback)"
        print(f"skvae: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
