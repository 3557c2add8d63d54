"""The ``skvae`` command line: train on offline-RL data from a YAML config, score,
evaluate and compute threshold candidates.

Run ``skvae --help`` (or ``python -m skvae --help``) for the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._estimator import VAEOutlierDetector
from .datasets import FEATURE_LAYOUTS, load_dataset, make_features, split_indices

# Keys of the old vae_module configs, plus what skvae adds.
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
    "model_save_path": None,
    "features": "next_obs_action",
    "next_observations": "stored",
    "shuffle": False,
    "n_estimators": 1,
    "max_samples": 1.0,
    # Density modelling of a dataset's transitions: every row counts (no trimmed loss).
    "trim_fraction": 0.0,
    "score_type": "elbo",
}
THRESHOLD_PERCENTILES = (0.5, 1, 2, 5, 10, 20)


class CLIError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config, rejecting keys the command line does not know.

    Parameters
    ----------
    path : path-like or None
        The YAML file; ``None`` gives the defaults.

    Returns
    -------
    config : dict
        The defaults updated with the file's values.

    Examples
    --------
    >>> load_config(None)["features"]
    'next_obs_action'
    """
    config = dict(CONFIG_KEYS)
    if path is None:
        return config
    import yaml

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"config file not found: {file}")
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CLIError(f"{file} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise CLIError(f"{file} must hold a mapping of keys to values")
    unknown = sorted(set(loaded) - set(CONFIG_KEYS))
    if unknown:
        raise CLIError(
            f"unknown key(s) {', '.join(unknown)} in {file}; known keys: "
            f"{', '.join(sorted(CONFIG_KEYS))}"
        )
    config.update(loaded)
    return config


def _detector_from_config(config: dict[str, Any], verbose: int) -> VAEOutlierDetector:
    return VAEOutlierDetector(
        latent_dim=config["latent_dim"],
        hidden_dims=tuple(config["hidden_dims"]) if config["hidden_dims"] else None,
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
        device=str(config["device"]),
        random_state=config["seed"],
        verbose=verbose,
    )


def _metadata(detector: VAEOutlierDetector, config: dict[str, Any], X_train) -> dict:
    """Human-readable facts about a trained detector, saved beside the model."""
    import sklearn
    import torch

    train_scores = -detector.decision_scores_
    layout = config["features"]
    return {
        "skvae_version": __version__,
        "torch_version": torch.__version__,
        "sklearn_version": sklearn.__version__,
        "task": config.get("task"),
        "data_path": str(config["data_path"]) if config.get("data_path") else None,
        "features": list(FEATURE_LAYOUTS.get(layout, layout)),
        "input_dim": int(detector.n_features_in_),
        "latent_dim": int(detector.latent_dim_),
        "hidden_dims": list(detector.hidden_dims_),
        "n_train": int(len(X_train)),
        "score_type": detector.score_type,
        "anomaly_fraction": detector.contamination,
        "threshold": float(detector.offset_),
        "threshold_normalized": float(
            (detector.offset_ - detector.score_mean_) / detector.score_std_
        ),
        "score_mean": float(detector.score_mean_),
        "score_std": float(detector.score_std_),
        "threshold_candidates": threshold_candidates(train_scores),
        "best_epoch": int(detector.best_epoch_),
        "n_epochs": int(detector.n_epochs_),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()},
    }


def threshold_candidates(scores: np.ndarray) -> dict[str, float]:
    """Score percentiles that could serve as thresholds, keyed like ``'p5'``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Scores of (training) samples, higher = more normal.

    Returns
    -------
    candidates : dict of str to float
        The 0.5, 1, 2, 5, 10 and 20th percentiles.

    Examples
    --------
    >>> import numpy as np
    >>> threshold_candidates(np.arange(101.0))["p5"]
    5.0
    """
    return {f"p{p:g}": float(np.percentile(scores, p)) for p in THRESHOLD_PERCENTILES}


def _load_features(path: str, layout, model_meta: dict | None) -> np.ndarray:
    """An array file (.npy, .csv) as is, or a transitions file turned into features."""
    file = Path(path)
    if not file.is_file():
        raise CLIError(f"data file not found: {file}")
    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False)
    if file.suffix == ".csv":
        return np.loadtxt(file, delimiter=",", ndmin=2)
    if layout is None and model_meta is not None:
        layout = tuple(model_meta["features"])
    return make_features(load_dataset(data_path=file), layout or "next_obs_action")


def _load_model(path: str) -> tuple[VAEOutlierDetector, dict | None]:
    import joblib

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"model file not found: {file}")
    model = joblib.load(file)
    meta_file = file.with_suffix(".json")
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    return model, meta


def _cmd_train(args) -> int:
    config = load_config(args.config)
    for key in ("task", "data_path", "epochs", "device", "seed", "model_save_path"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    if config["task"] is None and config["data_path"] is None:
        raise CLIError("give a task (--task or 'task:' in the config) or --data-path")
    data = load_dataset(
        task=config["task"],
        data_path=config["data_path"],
        next_observations=config["next_observations"],
    )
    X = make_features(data, config["features"])
    if config["input_dim"] is not None and int(config["input_dim"]) != X.shape[1]:
        raise CLIError(
            f"config input_dim={config['input_dim']} but the data has {X.shape[1]} "
            f"features ({config['features']})"
        )
    train, val, test = split_indices(
        data,
        config["val_ratio"],
        config["test_ratio"],
        shuffle=config["shuffle"],
        random_state=config["seed"],
    )
    detector = _detector_from_config(config, verbose=0 if args.quiet else 1)
    detector.fit(X[train], validation_data=X[val] if len(val) else None)
    print(
        f"trained on {len(train)} transitions ({X.shape[1]} features): "
        f"{detector.n_epochs_} epochs, kept epoch {detector.best_epoch_}"
    )
    if len(test):
        s = detector.score_samples(X[test])
        print(
            f"test: mean score {s.mean():.4f}, flagged {np.mean(s < detector.offset_):.1%} "
            f"(expected about {detector.contamination:.1%})"
        )
    save = config["model_save_path"]
    if save:
        import joblib

        base = Path(save)
        base.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(detector, base.with_suffix(".joblib"))
        meta = _metadata(detector, config, X[train])
        base.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        print(f"saved {base.with_suffix('.joblib')} and {base.with_suffix('.json')}")
    return 0


def _model_and_scores(args, data: str) -> tuple[VAEOutlierDetector, np.ndarray]:
    """Load the model of ``args.model`` and score the features of the file ``data``."""
    model, meta = _load_model(args.model)
    X = _load_features(data, args.features, meta)
    _check_dim(model, X)
    return model, model.score_samples(X)


def _cmd_score(args) -> int:
    model, s = _model_and_scores(args, args.data)
    print(
        f"{len(s)} rows: mean score {s.mean():.4f}, std {s.std():.4f}, "
        f"flagged {np.mean(s < model.offset_):.1%}"
    )
    if args.output:
        out = Path(args.output)
        if out.suffix == ".csv":
            np.savetxt(out, s, delimiter=",")
        else:
            np.save(out, s)
        print(f"scores written to {out}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate_anomaly_detection

    model, meta = _load_model(args.model)
    X_normal = _load_features(args.normal, args.features, meta)
    X_anomaly = _load_features(args.anomaly, args.features, meta)
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
    model, s = _model_and_scores(args, args.data)
    print("percentile  threshold  normalized")
    for p in args.percentiles:
        t = float(np.percentile(s, p))
        print(f"{p:10g}  {t:9.4f}  {(t - model.score_mean_) / model.score_std_:10.4f}")
    return 0


def _check_dim(model: VAEOutlierDetector, X: np.ndarray) -> None:
    if X.ndim != 2 or X.shape[1] != model.n_features_in_:
        raise CLIError(
            f"the data has {X.shape[-1]} features but the model expects {model.n_features_in_}"
        )


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
    parser = argparse.ArgumentParser(
        prog="skvae", description="VAE outlier detection for tabular and offline-RL data."
    )
    parser.add_argument("--version", action="version", version=f"skvae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train on an offline-RL dataset")
    train.add_argument("--config", help="YAML config (keys as in configs/vae/*.yaml)")
    train.add_argument("--task", help="D4RL task or minari:<dataset id>")
    train.add_argument("--data-path", dest="data_path", help="dataset file")
    train.add_argument("--epochs", type=int)
    train.add_argument("--device")
    train.add_argument("--seed", type=int)
    train.add_argument("--model-save-path", dest="model_save_path")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    features = {"help": "feature layout for transition files (default: the model's)"}
    score = sub.add_parser("score", help="score samples with a saved model")
    score.add_argument("model")
    score.add_argument("data", help=".npy/.csv feature array or a transitions file")
    score.add_argument("--features", **features)
    score.add_argument("--output", help="write the scores to this .npy or .csv file")
    score.set_defaults(func=_cmd_score)

    evaluate = sub.add_parser("evaluate", help="ROC AUC and accuracy on labelled data")
    evaluate.add_argument("model")
    evaluate.add_argument("--normal", required=True)
    evaluate.add_argument("--anomaly", required=True)
    evaluate.add_argument("--features", **features)
    evaluate.set_defaults(func=_cmd_evaluate)

    thresholds = sub.add_parser("thresholds", help="threshold candidates at percentiles")
    thresholds.add_argument("model")
    thresholds.add_argument("data")
    thresholds.add_argument("--features", **features)
    thresholds.add_argument(
        "--percentiles", type=float, nargs="+", default=list(THRESHOLD_PERCENTILES)
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
        0 on success, 2 on a user error (reported in one line, without a traceback).

    Examples
    --------
    >>> main(["train", "--task", "hopper-absent-v2", "--quiet"])  # doctest: +ELLIPSIS
    2
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"skvae: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
