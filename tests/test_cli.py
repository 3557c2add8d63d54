"""The skvae command line, on D4RL-format files generated from Hopper-v5."""

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import yaml
from rl_data import write_d4rl_hdf5

from skvae import VAEOutlierDetector
from skvae.cli import load_config, main
from skvae.datasets import make_features

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vae"


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
        config = load_config(CONFIGS / f"{name}.yaml")
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


def test_train_saves_joblib_and_metadata(trained, hopper):
    det = joblib.load(trained.with_suffix(".joblib"))  # joblib alone is enough
    assert isinstance(det, VAEOutlierDetector)
    assert det.contamination == 0.05 and det.random_state == 3 and det.n_features_in_ == 14
    # a density model of the dataset's transitions: every row counts in the loss
    assert det.trim_fraction == 0.0 and det.max_samples == 1.0
    meta = json.loads(trained.with_suffix(".json").read_text())
    assert meta["features"] == ["next_observations", "actions"]
    assert meta["threshold"] == pytest.approx(det.offset_)
    assert meta["threshold_normalized"] == pytest.approx(
        (det.offset_ - det.score_mean_) / det.score_std_
    )
    assert meta["score_mean"] == pytest.approx(det.score_mean_)
    assert set(meta["threshold_candidates"]) >= {"p1", "p5", "p10"}
    assert meta["config"]["epochs"] == 8 and meta["skvae_version"]
    assert meta["n_train"] < 3000  # validation and test episodes held out


def test_score_thresholds_evaluate(trained, d4rl_dir, tmp_path, capsys, hopper):
    model = str(trained.with_suffix(".joblib"))
    normal = str(d4rl_dir / "hopper_generated-v2.hdf5")
    other = str(d4rl_dir / "hopper_generated-uniform-v2.hdf5")
    out = tmp_path / "scores.npy"
    assert main(["score", model, normal, "--output", str(out)]) == 0
    capsys.readouterr()
    det = joblib.load(model)
    np.testing.assert_allclose(np.load(out), det.score_samples(make_features(hopper["linear"])))
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


def test_user_errors_are_one_line(tmp_path, d4rl_dir, trained, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: hopper-generated-v2\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("skvae: error:") and "learning_rate" in err and "\n" not in err

    assert main(["train", "--task", "hopper-absent-v2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hopper_absent-v2.hdf5" in err and "\n" not in err

    cfg = tmp_path / "dim.yaml"
    cfg.write_text(f"data_path: {d4rl_dir / 'hopper_generated-v2.hdf5'}\ninput_dim: 20\n")
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    assert "input_dim=20" in capsys.readouterr().err

    assert main(["score", str(tmp_path / "none.joblib"), "x.npy"]) == 2
    assert "model file not found" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5)))
    assert main(["score", str(trained.with_suffix(".joblib")), str(tmp_path / "wrong.npy")]) == 2
    assert "5 features" in capsys.readouterr().err


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
