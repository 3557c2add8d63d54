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


def test_user_errors_are_one_line(tmp_path, d4rl_dir, trained, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: hopper-generated-v2\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("skvae: error:") and "learning_rate" in err and "\n" not in err

    assert main(["train", "--task", "hopper-absent-v2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hopper_absent-v2.hdf5" in err and "\n" not in err

    for value in ("0", "-1", "'5'"):  # decoder_df: a positive number or null
        bad.write_text(f"task: hopper-generated-v2\ndecoder_df: {value}\n")
        assert main(["train", "--config", str(bad), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "decoder_df" in err and "\n" not in err

    cfg = tmp_path / "dim.yaml"
    cfg.write_text(f"data_path: {d4rl_dir / 'hopper_generated-v2.hdf5'}\ninput_dim: 20\n")
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    assert "input_dim=20" in capsys.readouterr().err

    assert main(["score", str(tmp_path / "none.skvae"), "x.npy"]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err.lower() and "also looked" not in err  # named in full
    assert main(["score", str(tmp_path / "none"), "x.npy"]) == 2  # a stem: where it looked
    assert "also looked for none.skvae and the pair none_model.pth" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5)))
    assert main(["score", str(trained), str(tmp_path / "wrong.npy")]) == 2
    assert "5 features" in capsys.readouterr().err
    np.save(tmp_path / "flat.npy", np.zeros(14))
    assert main(["score", str(trained), str(tmp_path / "flat.npy")]) == 2
    assert "2D array" in capsys.readouterr().err
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "junk.csv").write_text("1,2,x\n")
    for name in ("junk.npy", "junk.csv"):
        assert main(["score", str(trained), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"skvae: error: {tmp_path / name}: ") and "\n" not in err
        assert "allow_pickle" not in err
    # a pickle is refused without the opt-in, and its payload never runs
    import joblib

    joblib.dump({"not": "a model"}, tmp_path / "m.joblib")
    assert main(["score", str(tmp_path / "m.joblib"), str(tmp_path / "wrong.npy")]) == 2
    assert "allow-code-execution" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--epochs", "abc"], "skvae train: error: argument --epochs: invalid int"),
        (["evaluate", "m.skvae"], "skvae evaluate: error: the following arguments are required"),
        (["info"], "skvae: error: argument command: invalid choice: 'info'"),
        ([], "skvae: error: the following arguments are required: command"),
        (  # checked before the model is read or anything printed
            ["thresholds", "m.skvae", "x.npy", "--percentiles", "5", "150"],
            "skvae thresholds: error: argument --percentiles: '150' is not a percentile",
        ),
    ],
)
def test_usage_mistakes_are_one_line(argv, expected, capsys):
    assert main(argv) == 2  # returned, not raised: main() reports every error the same way
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(expected) and captured.err.count("\n") == 1
    assert "usage:" not in captured.err and "--help" in captured.err


def test_help_and_version_return_zero(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("skvae ")
    assert main(["score", "--help"]) == 0
    assert "--pvalues" in capsys.readouterr().out


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


@pytest.mark.parametrize(
    "line, message",
    [
        # wrong values of estimator keys are named as written, with their file, before
        # any work (they failed later, naming contamination, or trained on one row)
        ("max_samples: 1", "config key max_samples in {cfg} must be"),
        ("max_samples: 0", "config key max_samples in {cfg} must be"),
        ("anomaly_fraction: 0", "config key anomaly_fraction in {cfg} must be"),
        ("score_type: bogus", "config key score_type in {cfg} must be a str among"),
        ("epochs: true", "config key epochs in {cfg} must be a number, not true or false"),
        ("hidden_dims: [64, 0]", "config key hidden_dims in {cfg} must be a list of positive"),
        ("obs_dim: [11, 3]", "config key obs_dim in {cfg} must be a positive integer or a list"),
        ("shuffle: 1", "config key shuffle in {cfg} must be an instance of 'bool'"),
    ],
)
def test_config_values_are_checked_by_one_schema(tmp_path, capsys, line, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: hopper-generated-v2\n{line}\n")
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"skvae: error: {message.format(cfg=cfg)}") and "\n" not in err


def test_flags_are_checked_by_the_same_schema(capsys):
    assert main(["train", "--task", "hopper-generated-v2", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.startswith("skvae: error: --epochs must be an int in the range")


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
