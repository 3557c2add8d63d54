"""The skvae command line, on D4RL-format files generated from Hopper-v5."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rl_data import write_d4rl_hdf5

import skvae
from skvae import VAEOutlierDetector
from skvae.cli import load_config, main, model_path
from skvae.datasets import make_features

CONFIGS = Path(skvae.__file__).parent / "configs"


@pytest.fixture(scope="module")
def d4rl_dir(hopper, tmp_path_factory):
    root = tmp_path_factory.mktemp("d4rl")
    write_d4rl_hdf5(root / "hopper_generated-v2.hdf5", hopper["linear"])
    write_d4rl_hdf5(root / "hopper_generated-uniform-v2.hdf5", hopper["uniform"])
    return root


@pytest.fixture(scope="module")
def trained(d4rl_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "hopper_generated"
    config = yaml.safe_load((CONFIGS / "hopper.yaml").read_text())
    config.update(task="hopper-generated-v2", epochs=8, batch_size=128, hidden_dims=[64, 32])
    assert "trim_fraction" not in config  # the default of the command line applies
    cfg = out.parent / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    code = main(
        [
            "train",
            "--config",
            str(cfg),
            "--data-path",
            str(d4rl_dir / "hopper_generated-v2.hdf5"),
            "--model-save-path",
            str(out),
            "--seed",
            "3",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_shipped_configs_are_valid():
    for name, dim in [("hopper", 14), ("walker2d", 23), ("halfcheetah", 23)]:
        assert load_config(name) == load_config(CONFIGS / f"{name}.yaml")  # by name too
        config = load_config(name)
        assert config["task"] == f"{name}-medium-v2"
        assert config["input_dim"] == dim == config["obs_dim"] + config["action_dim"]
        for key in (
            "latent_dim",
            "hidden_dims",
            "epochs",
            "batch_size",
            "lr",
            "beta",
            "patience",
            "val_ratio",
            "test_ratio",
            "anomaly_fraction",
            "device",
            "model_save_path",
        ):
            assert key in config


def test_train_saves_one_skvae_file(trained, hopper):
    file = trained.with_name(trained.name + ".skvae")
    assert sorted(p.name for p in trained.parent.iterdir() if p.is_file()) == [
        "cfg.yaml",
        file.name,
    ]
    det, info = skvae.load(file, return_info=True)
    assert isinstance(det, VAEOutlierDetector)
    assert det.contamination == 0.05 and det.random_state == 3 and det.n_features_in_ == 14
    # a density model of the dataset's transitions: every row counts in the loss
    assert det.trim_fraction == 0.0 and det.max_samples == 1.0
    assert det.decoder_df is None  # the old module's Gaussian decoder
    assert info["features"] == ["next_observations", "actions"]
    assert info["feature_names"][0] == "next_obs[0]" and info["feature_names"][-1] == "action[2]"
    assert info["config"]["epochs"] == 8 and info["written_by"] == "skvae train"
    assert info["splits"]["n_train"] < 3000 and info["splits"]["n_val"] > 0
    # candidates: integer percentiles, normalised units, on the validation split
    assert sorted(info["threshold_candidates"]) == [1, 5, 10, 15, 20]
    values = [info["threshold_candidates"][p] for p in (1, 5, 10, 15, 20)]
    assert values == sorted(values)


def test_score_thresholds_evaluate(trained, d4rl_dir, tmp_path, capsys, hopper):
    model = str(trained.with_name(trained.name + ".skvae"))
    normal = str(d4rl_dir / "hopper_generated-v2.hdf5")
    other = str(d4rl_dir / "hopper_generated-uniform-v2.hdf5")
    out = tmp_path / "scores.npy"
    assert main(["score", model, normal, "--output", str(out)]) == 0
    capsys.readouterr()
    det = skvae.load(model)
    expected = det.score_samples(make_features(hopper["linear"]))
    np.testing.assert_array_equal(np.load(out), expected)
    # the stem finds the .skvae file, as offline-RL code passes it
    txt = tmp_path / "scores.v1.txt"
    assert main(["score", str(trained), normal, "--output", str(txt)]) == 0
    assert "scores.v1.txt" in capsys.readouterr().out
    np.testing.assert_allclose(np.loadtxt(txt), expected)
    assert main(["thresholds", model, normal, "--percentiles", "1", "5"]) == 0
    text = capsys.readouterr().out
    assert "percentile" in text and len(text.strip().splitlines()) == 3
    assert main(["evaluate", model, "--normal", normal, "--anomaly", other]) == 0
    text = capsys.readouterr().out
    auc = float(text.split("ROC AUC:")[1].split()[0])
    assert auc > 0.8 and "Accuracy:" in text
    # plain feature arrays work too
    np.save(tmp_path / "x.npy", make_features(hopper["uniform"])[:10])
    assert main(["score", model, str(tmp_path / "x.npy")]) == 0


def test_output_and_save_paths_are_literal(trained, d4rl_dir, tmp_path, capsys):
    model = str(trained.with_name(trained.name + ".skvae"))
    normal = str(d4rl_dir / "hopper_generated-v2.hdf5")
    assert main(["score", model, normal, "--output", str(tmp_path / "out.dat")]) == 2
    err = capsys.readouterr().err
    assert "unsupported extension '.dat'" in err and not (tmp_path / "out.dat").exists()
    assert main(["score", model, normal, "--output", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err
    assert model_path("runs/beta0.5") == Path("runs/beta0.5.skvae")
    assert model_path("runs/beta0.1") != model_path("runs/beta0.5")
    assert model_path("runs/m.skvae") == Path("runs/m.skvae")
    assert main(["train", "--task", "x-v2", "--model-save-path", "m.joblib"]) == 2
    assert ".skvae" in capsys.readouterr().err


def test_score_checks_the_recorded_feature_layout(trained, d4rl_dir, capsys):
    model = str(trained.with_name(trained.name + ".skvae"))
    normal = str(d4rl_dir / "hopper_generated-v2.hdf5")
    assert main(["score", model, normal, "--features", "obs_action"]) == 2
    err = capsys.readouterr().err
    assert "does not match the model's feature layout" in err
    assert main(["score", model, normal, "--features", "next_obs_action"]) == 0


def test_train_without_save_path_saves_where_it_says(hopper, tmp_path, monkeypatch, capsys):
    """A shipped config (by name) with the user's own data: the model is named after the
    data file and written where the output says, never lost."""
    np.savez(tmp_path / "my_rollouts.npz", **hopper["uniform"])
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", "hopper", "--data-path", "my_rollouts.npz", "--epochs", "2"]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "my_rollouts.skvae" in out and (tmp_path / "my_rollouts.skvae").is_file()
    det, info = skvae.load(tmp_path / "my_rollouts.skvae", return_info=True)
    assert info["label"] == "my_rollouts" and info["task"] is None
    assert not (tmp_path / "saved_models").exists()  # not the shipped config's path


def test_help_and_version_return_zero(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("skvae ")
    assert main(["score", "--help"]) == 0
    assert "--pvalues" in capsys.readouterr().out


@pytest.mark.slow
def test_console_entry_points(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "skvae", "train", "--task", "hopper-absent-v2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "skvae: error" in out.stderr
    out = subprocess.run([sys.executable, "-m", "skvae", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "thresholds" in out.stdout


def test_gormpos_sparse_configs_train_unchanged(tmp_path, d4rl_dir):
    # GORMPO's configs/vae/*_sparse_3.yaml write obs_dim as a list, as its --obs_dim takes
    config = {
        "task": "hopper-medium-expert-v2",
        "data_path": str(d4rl_dir / "hopper_generated-v2.hdf5"),
        "obs_dim": [11],
        "action_dim": 3,
        "input_dim": 14,
        "latent_dim": 8,
        "hidden_dims": [32, 32],
        "epochs": 2,
        "device": "cpu",
        "model_save_path": str(tmp_path / "vae_0"),
    }
    (tmp_path / "sparse.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "sparse.yaml"), "--quiet"]) == 0
    assert (tmp_path / "vae_0.skvae").is_file()


# ------------------------------------------------------------- every error is one line
# case: (arguments, what the line says (a regular expression), what it must not say).
# Names in braces are files the fixture below makes.
CLI_ERRORS = {
    # usage mistakes: argparse's, in one line that names --help
    "flag value not an int": (
        ["train", "--epochs", "abc"],
        r"^skvae train: error: argument --epochs: invalid int",
        None,
    ),
    "required argument missing": (
        ["score", "m.skvae"],
        r"^skvae score: error: the following arguments are required",
        None,
    ),
    "evaluate without labels": (
        ["evaluate", "m.skvae"],
        r"^skvae: error: give a labelled file \(with --label-column\) or --normal and --anomaly",
        None,
    ),
    "unknown command": (["info"], r"^skvae: error: argument command: invalid choice: 'info'", None),
    "no command": ([], r"^skvae: error: the following arguments are required: command", None),
    "percentile out of range": (  # checked before the model is read or anything printed
        ["thresholds", "m.skvae", "x.npy", "--percentiles", "5", "150"],
        r"^skvae thresholds: error: argument --percentiles: '150' is not a percentile",
        None,
    ),
    # config files: one schema, the key named as written with its file
    "unknown key": (
        ["train", "--config", "{cfg_unknown}"],
        r"unknown key\(s\) learning_rate",
        None,
    ),
    "yaml aliases": (["train", "--config", "{cfg_alias}"], "aliases", None),
    "hidden_dims an int": (["train", "--config", "{cfg_hidden}"], "key hidden_dims in", None),
    "hidden_dims with a zero": (
        ["train", "--config", "{cfg_hidden0}"],
        "key hidden_dims in .* must be a list of positive",
        None,
    ),
    "val_ratio a string": (["train", "--config", "{cfg_val}"], "key val_ratio in", None),
    "lr negative": (["train", "--config", "{cfg_lr}"], "key lr in", None),
    "lr zero": (["train", "--config", "{cfg_lr0}"], "key lr in", None),
    "decoder_df zero": (["train", "--config", "{cfg_df0}"], "key decoder_df in", None),
    "decoder_df negative": (["train", "--config", "{cfg_df_neg}"], "key decoder_df in", None),
    "decoder_df a string": (["train", "--config", "{cfg_df_str}"], "key decoder_df in", None),
    "max_samples one row": (["train", "--config", "{cfg_ms1}"], "key max_samples in", None),
    "max_samples zero": (["train", "--config", "{cfg_ms0}"], "key max_samples in", None),
    "anomaly_fraction zero": (["train", "--config", "{cfg_af0}"], "key anomaly_fraction in", None),
    "score_type unknown": (
        ["train", "--config", "{cfg_score}"],
        "key score_type in .* must be a str among",
        None,
    ),
    "epochs true": (
        ["train", "--config", "{cfg_epochs}"],
        "key epochs in .* must be a number, not true or false",
        None,
    ),
    "obs_dim two values": (
        ["train", "--config", "{cfg_obs}"],
        "key obs_dim in .* must be a positive integer or a list of one",
        None,
    ),
    "shuffle an int": (
        ["train", "--config", "{cfg_shuffle}"],
        "key shuffle in .* must be an instance of 'bool'",
        None,
    ),
    "flag out of range": (
        ["train", "--task", "hopper-generated-v2", "--epochs", "0"],
        "^skvae: error: --epochs must be an int in the range",
        None,
    ),
    # data and devices
    "task without its file": (
        ["train", "--task", "hopper-absent-v2"],
        "hopper_absent-v2.hdf5",
        None,
    ),
    "config file absent": (
        ["train", "--config", "{tmp}/none.yaml"],
        "there is no config file",
        None,
    ),
    "data file absent": (["score", "{good}", "{tmp}/none.npy"], "there is no data file", None),
    "input_dim against the data": (
        ["train", "--config", "{cfg_dim}", "--quiet"],
        "input_dim=20",
        None,
    ),
    "minari episode missing a key": (
        ["train", "--task", "minari:broken/set-v0"],
        "missing key",
        None,
    ),
    "scalar terminals": (["train", "--data-path", "{scalar}"], "terminals", None),
    "no transitions": (["train", "--data-path", "{empty}"], "no transitions", None),
    "a pickle name to save to": (
        ["train", "--data-path", "{const}", "--model-save-path", "{tmp}/c.pkl"],
        r"\.skvae",
        None,
    ),
    "cuda without cuda": (
        ["train", "--data-path", "{const}", "--device", "cuda:7"],
        "--device cpu",
        None,
    ),
    # model files
    "model named in full, absent": (
        ["score", "{tmp}/none.skvae", "{x}"],
        "[Mm]odel file not found",
        "also looked",
    ),
    "model stem, absent": (
        ["score", "{tmp}/none", "{x}"],
        "also looked for none.skvae and the pair none_model.pth",
        None,
    ),
    "garbage model": (["score", "{garbage}", "{x}"], "not a skvae model file", None),
    "wrong kind of model": (["score", "{x}", "{x}"], "not a skvae model file", None),
    "a pickle without the opt-in": (["score", "{joblib}", "{x}"], "allow-code-execution", None),
    # data to score, and outputs
    "wrong number of features": (["score", "{good}", "{wrong}"], "5 features", None),
    "0-d data": (["score", "{good}", "{zero_d}"], "2D array", None),
    "1-d data": (["score", "{good}", "{one_d}"], "2D array", None),
    "unknown feature layout": (
        ["score", "{good}", "{x}", "--features", "bogus"],
        "--features bogus is not a feature layout: use one of next_obs_action",
        None,
    ),
    "junk .npy": (["score", "{good}", "{junk_npy}"], "^skvae: error: {junk_npy}: ", "allow_pickle"),
    "junk .csv": (["score", "{good}", "{junk_csv}"], "^skvae: error: {junk_csv}: ", "allow_pickle"),
    # missing values are scored (a row with none observed too); infinity is not
    "infinity": (["score", "{good}", "{inf}"], "infinity", None),
    "a .txt data file": (
        ["score", "{good}", "{good}.txt"],
        r"unsupported data file '\.txt'; use a feature file \(\.csv, \.npy\) or a transitions "
        r"file \(\.npz, \.hdf5, \.h5, \.pkl\)",
        None,
    ),
    "training feature all missing": (
        ["train", "--data-path", "{empty_col}", "--model-save-path", "{tmp}/e"],
        "features with every value missing .* 1",
        None,
    ),
    "output folder under a file": (
        ["score", "{good}", "{x}", "--output", "{x}/sub/s.csv"],
        r"x\.npy is a file, not a folder",
        None,
    ),
    "model save path under a file, before training": (
        ["train", "--data-path", "{x}", "--model-save-path", "{x}/sub/m", "--quiet"],
        r"^skvae: error: the model .*x\.npy is a file, not a folder",
        "training",
    ),
    "unknown --set key": (
        ["train", "--data-path", "{x}", "--set", "n_estimator=3"],
        "unknown key n_estimator; known keys: ",
        None,
    ),
    "--set value out of range": (
        ["train", "--data-path", "{x}", "--set", "trim_fraction=2"],
        "--trim-fraction must be a float in the range",
        None,
    ),
    "contamination and anomaly_fraction": (
        ["train", "--data-path", "{x}", "--contamination", "0.1", "--set", "anomaly_fraction=0.1"],
        "give contamination or anomaly_fraction",
        None,
    ),
    "output under a file": (["score", "{good}", "{x}", "--output", "{x}/s.npy"], "folder", None),
    "output over the data": (
        ["score", "{good}", "{x}", "--output", "{x}"],
        "--output .* is the data",
        None,
    ),
    "output over the model": (
        ["score", "{model_txt}", "{x}", "--output", "{model_txt}"],
        "--output .* is the model",
        None,
    ),
    "two outputs on one path": (
        ["score", "{good}", "{x}", "--output", "{tmp}/s.npy", "--pvalues", "{tmp}/s.npy"],
        "--pvalues .* is --output",
        None,
    ),
    "config value beyond float range": (
        ["train", "--config", "{cfg_huge}"],
        "key epochs in .* must be a number of a sensible size; got 1000",
        None,
    ),
    "config nested 2000 deep": (["train", "--config", "{cfg_deep}"], "nested too deeply", None),
    "unsupported output": (
        ["score", "{good}", "{x}", "--output", "{tmp}/s.json"],
        "extension",
        None,
    ),
}
CLI_ERROR_CONFIGS = {
    "cfg_unknown": "task: x-v2\nlearning_rate: 1\n",
    "cfg_alias": "a: &a [1, 2]\nhidden_dims: *a\n",
    "cfg_hidden": "task: x-v2\nhidden_dims: 16\n",
    "cfg_hidden0": "task: x-v2\nhidden_dims: [64, 0]\n",
    "cfg_val": "task: x-v2\nval_ratio: '0.2'\n",
    "cfg_lr": "task: x-v2\nlr: -1\n",
    "cfg_lr0": "task: x-v2\nlr: 0\n",
    "cfg_df0": "task: x-v2\ndecoder_df: 0\n",
    "cfg_df_neg": "task: x-v2\ndecoder_df: -1\n",
    "cfg_df_str": "task: x-v2\ndecoder_df: '5'\n",
    "cfg_ms1": "task: x-v2\nmax_samples: 1\n",
    "cfg_ms0": "task: x-v2\nmax_samples: 0\n",
    "cfg_af0": "task: x-v2\nanomaly_fraction: 0\n",
    "cfg_score": "task: x-v2\nscore_type: bogus\n",
    "cfg_epochs": "task: x-v2\nepochs: true\n",
    "cfg_obs": "task: x-v2\nobs_dim: [11, 3]\n",
    "cfg_shuffle": "task: x-v2\nshuffle: 1\n",
    "cfg_huge": f"task: x-v2\nepochs: {10**400}\n",
    "cfg_deep": "a: " + "[" * 2000 + "]" * 2000 + "\n",
}


@pytest.fixture(scope="module")
def error_files(d4rl_dir, tmp_path_factory):
    """The files the CLI_ERRORS cases name, made once."""
    import h5py
    import joblib

    tmp = tmp_path_factory.mktemp("errors")
    X = np.random.RandomState(0).normal(size=(200, 4))
    det = VAEOutlierDetector(epochs=3, hidden_dims=(8, 4), random_state=0).fit(X)
    names = {"tmp": str(tmp), "good": str(det.save(tmp / "good.skvae"))}
    names["model_txt"] = str(det.save(tmp / "model.txt"))  # any name but a pickle's
    empty_row, inf, empty_col = X.copy(), X.copy(), X.copy()
    empty_row[2], inf[3, 1], empty_col[:, 1] = np.nan, np.inf, np.nan
    arrays = {"x": X, "wrong": np.zeros((3, 5)), "zero_d": np.float64(3), "one_d": X[0]}
    arrays.update(empty_row=empty_row, inf=inf, empty_col=empty_col)
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
        names[name] = str(tmp / f"{name}.npy")
    (tmp / "junk.npy").write_bytes(b"not numpy")
    (tmp / "junk.csv").write_text("1,2,x\n")
    (tmp / "good.skvae.txt").write_text("1,2\n")
    (tmp / "garbage.skvae").write_bytes(np.random.RandomState(1).bytes(300))
    joblib.dump({"not": "a model"}, tmp / "m.joblib")
    names.update(
        junk_npy=str(tmp / "junk.npy"),
        junk_csv=str(tmp / "junk.csv"),
        garbage=str(tmp / "garbage.skvae"),
        joblib=str(tmp / "m.joblib"),
    )
    configs = dict(
        CLI_ERROR_CONFIGS,
        cfg_dim=f"data_path: {d4rl_dir / 'hopper_generated-v2.hdf5'}\ninput_dim: 20\n",
    )
    for name, text in configs.items():
        (tmp / f"{name}.yaml").write_text(text)
        names[name] = str(tmp / f"{name}.yaml")
    n = 50
    np.savez(tmp / "const.npz", observations=np.ones((n, 3)), actions=np.ones((n, 1)))
    with h5py.File(tmp / "scalar.hdf5", "w") as f:
        f["observations"], f["actions"], f["terminals"] = np.ones((n, 3)), np.ones((n, 1)), 1
    np.savez(tmp / "empty.npz", observations=np.ones((1, 3)), actions=np.ones((1, 1)))
    minari = tmp / "minari" / "broken" / "set-v0" / "data"
    minari.mkdir(parents=True)
    with h5py.File(minari / "main_data.hdf5", "w") as f:
        f.create_group("episode_0")["observations"] = np.ones((3, 2))
    for name in ("const.npz", "scalar.hdf5", "empty.npz"):
        names[name.split(".")[0]] = str(tmp / name)
    return tmp, names


@pytest.mark.parametrize("case", list(CLI_ERRORS))
def test_every_error_is_one_line_that_says_what_is_wrong(case, error_files, capsys, monkeypatch):
    import re

    import torch

    tmp, names = error_files
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp / "minari"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp)
    argv, expected, absent = CLI_ERRORS[case]
    assert main([a.format(**names) for a in argv]) == 2  # returned, never raised
    err = capsys.readouterr().err
    assert re.match(r"skvae( \w+)?: error: ", err) and err.count("\n") == 1, err
    assert re.search(expected.format(**names) if "{" in expected else expected, err), err
    assert absent is None or absent not in err, err
    assert "usage:" not in err  # no usage block, and no traceback
    if "argument" in expected:  # usage mistakes name the command's help
        assert "--help" in err


def test_every_option_has_help():
    import argparse

    from skvae.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing = [a.dest for a in sub._actions if not a.help]
                assert not missing, (name, missing)


def test_train_and_score_plain_feature_files(tmp_path, capsys):
    """A CSV user's train/score/evaluate give the Python API's model and results."""
    import warnings

    pd = pytest.importorskip("pandas")
    X, y = skvae.make_synthetic(600, 4, random_state=0)
    frame = pd.DataFrame(X, columns=["speed", "load", "temp", "rpm"])
    frame.to_csv(tmp_path / "train.csv")  # pandas' default: a header and an index column
    np.save(tmp_path / "train.npy", X)
    for name in ("train.csv", "train.npy"):
        args = ["train", "--data-path", str(tmp_path / name), "--quiet"]
        assert main([*args, "--model-save-path", str(tmp_path / name)]) == 0
    det, info = skvae.load(tmp_path / "train.csv.skvae", return_info=True)
    # no config: the estimator's defaults, all rows, its own shuffled validation split
    reference = skvae.VAEOutlierDetector(random_state=0).fit(X)
    assert det.get_params() == {**reference.get_params(), "verbose": 0}
    np.testing.assert_array_equal(det.score_samples(frame), reference.score_samples(X))
    assert det.offset_ == reference.offset_
    assert list(det.feature_names_in_) == ["speed", "load", "temp", "rpm"]
    assert info["splits"] == {
        "n_train": 600, "n_test": 0, "validation_fraction": 0.1, "test_fraction": 0.0,
        "shuffle": True,
    }  # fmt: skip
    assert not hasattr(skvae.load(tmp_path / "train.npy.skvae"), "feature_names_in_")
    capsys.readouterr()
    out = tmp_path / "out" / "s.csv"  # missing folders are made, as train makes them
    model = str(tmp_path / "train.csv.skvae")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's feature-name warning included
        args = ["score", model, str(tmp_path / "train.csv"), "--output", str(out), "--pvalues"]
        assert main(args) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["score", "decision", "label", "pvalue"]
    assert out.read_text().splitlines()[1].split(",")[2] in ("1", "-1")  # an integer label
    np.testing.assert_array_equal(table["score"], reference.score_samples(X))
    np.testing.assert_array_equal(table["label"], reference.predict(X))
    np.testing.assert_allclose(table["decision"], reference.decision_function(X))
    np.testing.assert_array_equal(table["pvalue"], reference.pvalues(X))
    # columns that are not the model's are named, whichever way the model has them
    frame.rename(columns={"rpm": "torque"}).to_csv(tmp_path / "other.csv", index=False)
    assert main(["score", model, str(tmp_path / "other.csv")]) == 2
    assert "missing rpm; not the model's: torque" in capsys.readouterr().err
    # a labelled file: labels out of a column, anomaly = 1 (or --anomaly-label)
    frame.assign(y=y).to_csv(tmp_path / "labelled.csv", index=False)
    args = ["evaluate", model, str(tmp_path / "labelled.csv"), "--label-column", "y"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    expected = skvae.evaluation.evaluate_anomaly_detection(reference, X[y == 0], X[y == 1])
    assert f"ROC AUC: {expected.roc_auc:.4f}" in printed
    frame.assign(y=np.where(y == 1, 7, 3)).to_csv(tmp_path / "seven.csv", index=False)
    args = ["evaluate", model, str(tmp_path / "seven.csv"), "--label-column", "y"]
    assert main([*args, "--anomaly-label", "7"]) == 0
    assert f"ROC AUC: {expected.roc_auc:.4f}" in capsys.readouterr().out
    assert main(args) == 2
    assert "need both anomalies" in capsys.readouterr().err


def test_train_flags_set_and_test_split_of_a_feature_file(tmp_path, capsys):
    X, _ = skvae.make_synthetic(300, 3, random_state=0)
    np.save(tmp_path / "x.npy", X)
    args = ["train", "--data-path", str(tmp_path / "x.npy"), "--quiet", "--contamination", "0.05"]
    args += ["--score-type", "reconstruction", "--n-estimators", "2", "--test-fraction", "0.2"]
    args += ["--set", "hidden_dims=[16, 8]", "--set", "epochs=30", "--obs_dim", "11", "1"]
    assert main([*args, "--model-save-path", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert "trained on 240 rows" in printed and "test (60 rows)" in printed
    det, info = skvae.load(tmp_path / "m.skvae", return_info=True)
    assert (det.contamination, det.score_type, det.n_estimators) == (0.05, "reconstruction", 2)
    assert tuple(det.hidden_dims) == (16, 8) and info["splits"]["n_test"] == 60


def test_missing_values_pass_through_the_command_line(tmp_path):
    pd = pytest.importorskip("pandas")
    X, _ = skvae.make_synthetic(600, 4, random_state=0)
    X[np.random.RandomState(1).rand(*X.shape) < 0.2] = np.nan
    X[np.isnan(X).all(1), 0] = 0.0
    frame = pd.DataFrame(X, columns=["speed", "load", "temp", "rpm"])
    frame.to_csv(tmp_path / "holes.csv")  # pandas writes NaN as an empty cell
    assert ",," in (tmp_path / "holes.csv").read_text()
    args = ["train", "--data-path", str(tmp_path / "holes.csv"), "--epochs", "3", "--quiet"]
    assert main([*args, "--model-save-path", str(tmp_path / "m")]) == 0
    det = skvae.load(tmp_path / "m.skvae")
    assert det.module_.config["mask_input"]
    out = tmp_path / "s.npy"
    assert (
        main(
            ["score", str(tmp_path / "m.skvae"), str(tmp_path / "holes.csv"), "--output", str(out)]
        )
        == 0
    )
    scores = np.load(out)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, det.score_samples(frame))


@pytest.mark.slow
def test_ctrl_c_while_the_command_imports_exits_130_without_a_traceback():
    import signal
    import time

    for delay in (0.3, 0.6):  # PyTorch takes longer than this to import
        process = subprocess.Popen(
            [sys.executable, "-m", "skvae", "--version"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
        if process.returncode == 0:  # the import won the race: nothing to test
            continue
        assert process.returncode == 130 and "Traceback" not in err, err


def test_ctrl_c_inside_an_extension_import_exits_130_without_a_traceback():
    # an extension module whose initialisation is interrupted raises ImportError from
    # the KeyboardInterrupt (scipy's HiGHS did so in CI); interrupt the import of the
    # command line the same way, deterministically
    code = """
import importlib.abc, os, signal, sys, time
class Interrupting(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "skvae.cli":
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt as error:
                raise ImportError("initialization failed") from error
        return None
sys.meta_path.insert(0, Interrupting())
from skvae._entry import main
sys.exit(main(["--version"]))
"""
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 130, process.stderr
    assert process.stderr == "skvae: interrupted\n"


def test_an_error_caused_by_ctrl_c_inside_a_command_exits_130(tmp_path, monkeypatch, capsys):
    import skvae.cli as cli

    def interrupted_import(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as error:
            raise ImportError("initialization failed") from error

    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    monkeypatch.setattr(cli, "load", interrupted_import)
    code = main(["score", str(tmp_path / "m.skvae"), str(tmp_path / "x.npy")])
    assert code == 130
    assert capsys.readouterr().err == "skvae: interrupted (nothing half-written was left)\n"
    # an ImportError of its own is still an error
    monkeypatch.setattr(cli, "load", lambda *a, **k: (_ for _ in ()).throw(ImportError("no h5py")))
    assert main(["score", str(tmp_path / "m.skvae"), str(tmp_path / "x.npy")]) == 2
    assert capsys.readouterr().err == "skvae: error: no h5py\n"


def test_a_row_with_nothing_observed_gets_a_score_and_one_warning_line(tmp_path, capsys):
    X, _ = skvae.make_synthetic(300, 3, random_state=0)
    np.save(tmp_path / "x.npy", X)
    args = ["train", "--data-path", str(tmp_path / "x.npy"), "--epochs", "5", "--quiet"]
    assert main([*args, "--model-save-path", str(tmp_path / "m")]) == 0
    rows = X[:6].copy()
    rows[2] = np.nan
    (tmp_path / "rows.csv").write_text(
        "a,b,c\n"
        + "\n".join(",".join("" if np.isnan(v) else repr(v) for v in r) for r in rows.tolist())
    )
    capsys.readouterr()
    out = tmp_path / "s.csv"
    assert (
        main(["score", str(tmp_path / "m.skvae"), str(tmp_path / "rows.csv"), "--output", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    expected = "1 row(s) of X have every value missing (NaN): each scores as the median"
    assert err == f"skvae: warning: {expected} training score.\n"
    table = np.genfromtxt(out, delimiter=",", names=True)
    assert len(table) == 6 and np.isfinite(table["score"]).all() and table["label"][2] == 1


def test_names_with_commas_and_newlines_survive_train_score_and_explain(tmp_path):
    pd = pytest.importorskip("pandas")
    X, _ = skvae.make_synthetic(200, 3, random_state=0)
    names = ["speed, km/h", 'load\n"peak"', "temp"]
    pd.DataFrame(X, columns=names).to_csv(tmp_path / "x.csv", index=False)
    args = ["train", "--data-path", str(tmp_path / "x.csv"), "--epochs", "3", "--quiet"]
    assert main([*args, "--model-save-path", str(tmp_path / "m")]) == 0
    assert list(skvae.load(tmp_path / "m.skvae").feature_names_in_) == names
    why = tmp_path / "why.csv"
    assert (
        main(["score", str(tmp_path / "m.skvae"), str(tmp_path / "x.csv"), "--explain", str(why)])
        == 0
    )
    table = pd.read_csv(why)
    assert list(table.columns) == [*names, "latent"] and len(table) == 200


def test_every_config_key_is_documented_on_one_page():
    from pathlib import Path

    from skvae.cli import CONFIG_KEYS

    page = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    missing = [key for key in CONFIG_KEYS if f"`{key}`" not in page]
    assert not missing, missing
