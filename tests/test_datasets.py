"""Dataset loaders on D4RL/Minari-format files generated from MuJoCo Hopper-v5."""

import pickle
from contextlib import nullcontext

import numpy as np
import pytest
from rl_data import write_d4rl_hdf5, write_minari

from skvae import datasets as ds

h5py = pytest.importorskip("h5py")


def test_d4rl_filename_matches_download_names():
    assert ds.d4rl_filename("hopper-medium-v2") == "hopper_medium-v2.hdf5"
    assert ds.d4rl_filename("halfcheetah-medium-expert-v2") == "halfcheetah_medium_expert-v2.hdf5"
    with pytest.raises(ValueError, match="D4RL task"):
        ds.d4rl_filename("hopper")


def test_d4rl_by_task_name_from_env_dir(hopper, tmp_path, monkeypatch):
    data = hopper["linear"]
    write_d4rl_hdf5(tmp_path / "hopper_generated-v2.hdf5", data)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    assert ds.d4rl_dataset_dir() == tmp_path
    loaded = ds.load_d4rl("hopper-generated-v2", use_d4rl=False)
    for k in ds.TRANSITION_KEYS:
        np.testing.assert_array_equal(loaded[k], data[k])
    assert loaded["observations"].shape == (3000, 11) and loaded["actions"].shape == (
        3000,
        3,
    )
    # explicit directory and explicit path
    other = ds.load_d4rl("hopper-generated-v2", data_dir=tmp_path, use_d4rl=False)
    np.testing.assert_array_equal(other["actions"], data["actions"])
    via_path = ds.load_dataset(
        "hopper-generated-v2", data_path=tmp_path / "hopper_generated-v2.hdf5"
    )
    np.testing.assert_array_equal(via_path["rewards"], data["rewards"])


def test_d4rl_default_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ds.d4rl_dataset_dir() == tmp_path / ".d4rl" / "datasets"


def test_missing_d4rl_file_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ds.load_d4rl("walker2d-medium-replay-v2", data_dir=tmp_path, use_d4rl=False)
    msg = str(err.value)
    assert "walker2d_medium_replay-v2.hdf5" in msg and str(tmp_path) in msg
    assert "D4RL_DATASET_DIR" in msg


def test_corrupt_hdf5_is_a_clear_error(tmp_path):
    bad = tmp_path / "hopper_broken-v2.hdf5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        ds.load_d4rl("hopper-broken-v2", data_dir=tmp_path, use_d4rl=False)


def test_qlearning_transitions_match_d4rl_semantics(hopper):
    data = hopper["uniform"]  # its episodes end by timeouts as well as terminals
    q = ds.qlearning_transitions(data)
    # reference: d4rl.qlearning_dataset's loop (terminate_on_end=False, with timeouts)
    obs, nxt, acts = [], [], []
    for i in range(len(data["rewards"]) - 1):
        if data["timeouts"][i]:
            continue
        obs.append(data["observations"][i])
        nxt.append(data["observations"][i + 1])
        acts.append(data["actions"][i])
    np.testing.assert_array_equal(q["observations"], np.array(obs))
    np.testing.assert_array_equal(q["next_observations"], np.array(nxt))
    np.testing.assert_array_equal(q["actions"], np.array(acts))
    assert data["timeouts"].sum() > 0 and len(q["observations"]) < len(data["observations"])
    # the stored next_observations differ where an episode ended (a reset follows)
    assert not np.array_equal(data["next_observations"][:-1], data["observations"][1:])


def test_minari_layout(hopper, tmp_path, monkeypatch):
    data = hopper["uniform"]
    write_minari(tmp_path, "generated/hopper/uniform-v0", data)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    loaded = ds.load_dataset("minari:generated/hopper/uniform-v0")
    for k in ("observations", "actions", "next_observations", "rewards"):
        np.testing.assert_allclose(loaded[k], data[k])
    np.testing.assert_array_equal(loaded["terminals"], data["terminals"])
    np.testing.assert_array_equal(loaded["timeouts"], data["timeouts"])
    with pytest.raises(FileNotFoundError, match="minari download"):
        ds.load_minari("generated/hopper/absent-v0", root=tmp_path)


@pytest.mark.parametrize("suffix", [".pkl", ".npz", ".hdf5"])
def test_custom_files(hopper, tmp_path, suffix):
    data = hopper["linear"]
    path = tmp_path / f"generated_hopper{suffix}"
    if suffix == ".pkl":
        with open(path, "wb") as f:
            pickle.dump(data, f)
    elif suffix == ".npz":
        np.savez(path, **data)
    else:
        write_d4rl_hdf5(path, data)
    loaded = ds.load_dataset(task="custom", data_path=path)
    np.testing.assert_array_equal(loaded["next_observations"], data["next_observations"])


def test_custom_file_without_next_observations(tmp_path, hopper):
    data = {k: v for k, v in hopper["linear"].items() if k != "next_observations"}
    np.savez(tmp_path / "t.npz", **data)
    loaded = ds.load_transitions(tmp_path / "t.npz")
    ends = data["terminals"] | data["timeouts"]
    assert len(loaded["observations"]) == len(ends) - 1 - ends[:-1].sum()
    np.testing.assert_array_equal(loaded["next_observations"][0], data["observations"][1])


def test_custom_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ds.load_transitions(tmp_path / "absent.npz")
    np.savez(tmp_path / "x.npz", actions=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="observations"):
        ds.load_transitions(tmp_path / "x.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="Unsupported"):
        ds.load_transitions(tmp_path / "x.csv")
    np.savez(
        tmp_path / "y.npz",
        observations=np.zeros((3, 2)),
        actions=np.zeros((4, 1)),
        next_observations=np.zeros((3, 2)),
    )
    with pytest.raises(ValueError, match="rows"):
        ds.load_transitions(tmp_path / "y.npz")


def test_unreadable_npz_is_named_and_never_suggests_unpickling(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not numpy")  # NumPy would suggest allow_pickle
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 damaged")
    np.savez(
        tmp_path / "obj.npz",
        observations=np.array([[1, "a"]] * 3, dtype=object),
        actions=np.zeros((3, 1)),
    )
    for name in ("junk.npz", "zip.npz", "obj.npz"):
        with pytest.raises(ValueError, match=name) as info:
            ds.load_transitions(tmp_path / name)
        assert "allow_pickle" not in str(info.value)


def test_feature_layouts(hopper):
    data = hopper["linear"]
    X = ds.make_features(data)
    np.testing.assert_array_equal(X, np.c_[data["next_observations"], data["actions"]])
    assert ds.make_features(data, "obs_action").shape == (3000, 14)
    assert ds.make_features(data, "obs_action_next_obs").shape == (3000, 25)
    assert ds.make_features(data, ("actions",)).shape == (3000, 3)
    with pytest.raises(ValueError, match="layout"):
        ds.make_features(data, "next_obs")


@pytest.mark.parametrize("shuffle", [False, True])
def test_splits_respect_episodes(hopper, shuffle):
    data = hopper["linear"]
    train, val, test = ds.split_indices(data, 0.2, 0.2, shuffle=shuffle, random_state=0)
    assert len(train) + len(val) + len(test) == 3000
    assert len(np.intersect1d(train, val)) == 0 and len(np.intersect1d(val, test)) == 0
    ids = ds.episode_ids(data)
    for a, b in [(train, val), (val, test), (train, test)]:
        assert not set(ids[a]) & set(ids[b])  # no episode is split
    assert abs(len(train) / 3000 - 0.6) < 0.1
    if not shuffle:
        assert train.max() < val.min() and val.max() < test.min()


def test_d4rl_package_route_when_file_absent(hopper, tmp_path, monkeypatch):
    """With no file but an importable d4rl, gym.make(task).get_dataset() is used."""
    import sys
    import types

    data = hopper["linear"]
    made = []

    class Env:
        def get_dataset(self):
            return dict(data)

    gym = types.ModuleType("gym")
    gym.make = lambda task: made.append(task) or Env()
    monkeypatch.setitem(sys.modules, "gym", gym)
    monkeypatch.setitem(sys.modules, "d4rl", types.ModuleType("d4rl"))
    loaded = ds.load_d4rl("hopper-generated-v2", data_dir=tmp_path)
    assert made == ["hopper-generated-v2"]
    np.testing.assert_array_equal(loaded["observations"], data["observations"])
    # use_d4rl=False never touches the package
    with pytest.raises(FileNotFoundError):
        ds.load_d4rl("hopper-generated-v2", data_dir=tmp_path, use_d4rl=False)


def test_d4rl_import_failure_is_not_fatal(tmp_path, monkeypatch):
    """`import d4rl` raising a plain Exception (no MuJoCo 2.1) falls back to the file route."""
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "d4rl":
            raise Exception("MuJoCo 2.1 binaries missing")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(FileNotFoundError, match="hopper_x-v2.hdf5"):
        ds.load_d4rl("hopper-x-v2", data_dir=tmp_path)
    with pytest.raises(ImportError, match="MuJoCo 2.1"):
        ds.load_d4rl("hopper-x-v2", data_dir=tmp_path, use_d4rl=True)


def test_collect_transitions_checks_its_arguments_first():
    from skvae.datasets import collect_transitions

    with pytest.raises(ValueError, match="'n_steps' parameter of collect_transitions"):
        collect_transitions("Hopper-v5", n_steps=0)
    with pytest.raises(ValueError, match="'policy' parameter"):
        collect_transitions("Hopper-v5", policy="greedy")


def test_numpy_files_claiming_more_than_they_hold_are_named(tmp_path):
    import zipfile

    from numpy.lib import format as fmt

    from skvae.datasets import load_dataset, load_feature_file

    for shape in [(10**11, 4), (10**8, 4)]:  # MemoryError and a 3 GB request, before
        with open(tmp_path / "x.npy", "wb") as fh:
            fmt.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
            fh.write(b"\0" * 64)
        with pytest.raises(ValueError, match=r"x\.npy: the array claims \d+ bytes"):
            load_feature_file(tmp_path / "x.npy")
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("observations.npy", "w", force_zip64=True) as member:
            fmt.write_array_header_1_0(
                member, {"descr": "<f8", "fortran_order": False, "shape": (2**22, 8)}
            )
            chunk = b"\0" * 2**20
            for _ in range(2**8):  # 256 MiB of zeros, about 250 KB compressed
                member.write(chunk)
    with pytest.raises(ValueError, match=r"bomb\.npz: observations\.npy inflates"):
        load_dataset(data_path=tmp_path / "bomb.npz")


def test_transitions_keep_missing_values_and_refuse_infinity(tmp_path):
    obs = np.random.RandomState(0).normal(size=(6, 2))
    obs[1, 0] = np.nan  # a sensor drop-out: the detector scores around it
    f = tmp_path / "t.npz"
    np.savez(f, observations=obs, actions=np.zeros((6, 1)), next_observations=obs + 1)
    data = ds.load_transitions(f)
    assert np.isnan(data["observations"][1, 0]) and np.isnan(ds.make_features(data)).any()
    for key, value, match in (
        ("observations", np.inf, "'observations' contains infinity"),
        ("rewards", np.nan, "'rewards' contains NaN"),
    ):
        bad = {"observations": obs.copy(), "actions": np.zeros((6, 1)), "rewards": np.zeros(6)}
        bad[key][2] = value
        np.savez(tmp_path / "bad.npz", **bad)
        with pytest.raises(ValueError, match=match):
            ds.load_transitions(tmp_path / "bad.npz")


def test_csv_feature_files_read_empty_cells_as_missing(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text(",a,b\n0,1.5,\n1,,2\n2,3,4\n")  # pandas' to_csv of a frame with NaN
    X, names = ds.load_feature_file(f)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(X, [[1.5, np.nan], [np.nan, 2.0], [3.0, 4.0]])
    f.write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match="line 2, column 2: 'x' is not a number"):
        ds.load_feature_file(f)


ROWS = np.arange(10.0 * 3).reshape(10, 3)


@pytest.mark.parametrize(
    "case",
    ["plain", "BOM", "pandas integer header", "pandas integer header with index", "NaN first",
     "NA first", "empty cell first", "comment first", "comments between", "blank lines",
     "quoted", "CRLF", "header"],
)  # fmt: skip
def test_every_csv_row_is_one_row_in_order(case, tmp_path):
    """Ten lines of numbers read as ten rows, in order, whatever the first line holds."""
    rows = ROWS.copy()
    if case in ("NaN first", "NA first", "empty cell first"):
        rows[0, 1] = np.nan
    cells = {"NaN first": "NaN", "NA first": "NA", "empty cell first": ""}
    lines = [
        ",".join(cells.get(case, "") if np.isnan(v) else repr(v) for v in row.tolist())
        for row in rows
    ]
    head = {
        "BOM": "\ufeff",
        "pandas integer header": "0,1,2\n",
        "pandas integer header with index": ",0,1,2\n",
        "comment first": "# exported by a tool\n",
        "header": "a,b,c\n",
    }.get(case, "")
    if case == "pandas integer header with index":
        lines = [f"{i},{line}" for i, line in enumerate(lines)]
    sep = {"comments between": "\n# note\n", "blank lines": "\n\n", "CRLF": "\r\n"}
    if case == "quoted":
        lines = ['"' + line.replace(",", '","') + '"' for line in lines]
    (tmp_path / "x.csv").write_bytes((head + sep.get(case, "\n").join(lines) + "\n").encode())
    integer = "integer header" in case
    with pytest.warns(UserWarning, match="integer header") if integer else nullcontext():
        X, names = ds.load_feature_file(tmp_path / "x.csv")
    np.testing.assert_array_equal(X, rows)
    expected = {"header": ["a", "b", "c"]}.get(case)
    if "integer header" in case:
        expected = ["0", "1", "2"]
    assert names == expected


def test_csv_header_rules_and_flags(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("0,1,2\n3,4,5\n")
    with pytest.warns(UserWarning, match="integer header"):
        assert ds.load_feature_file(f)[0].shape == (1, 3)
    assert ds.load_feature_file(f, header=False)[0].shape == (2, 3)  # data after all
    f.write_text("NA,,nan\n1,2,3\n")  # a header, or a row with nothing observed?
    with pytest.raises(ValueError, match="--header or --no-header"):
        ds.load_feature_file(f)
    assert np.isnan(ds.load_feature_file(f, header=False)[0][0]).all()
    assert ds.load_feature_file(f, header=True)[1] == ["NA", "", "nan"]
    f.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3 has 1 cells; the first row has 2"):
        ds.load_feature_file(f)


def test_feature_files_that_claim_what_they_do_not_hold(tmp_path):
    """Refused by their headers, before NumPy allocates; special files by every reader."""
    import os

    from numpy.lib import format as fmt

    for descr, shape, match in (
        ("<f8", (10**9, 0), "claims a shape"),
        ("|V0", (10**6, 3), "not numbers"),
        ("|S0", (10**6, 3), "not numbers"),
        ("<U0", (10**6, 3), "not numbers"),
        ("|O", (3, 3), "not numbers"),
    ):
        with open(tmp_path / "x.npy", "wb") as fh:
            fmt.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        with pytest.raises(ValueError, match=match):
            ds.load_feature_file(tmp_path / "x.npy")
    np.savez(tmp_path / "t.npz", observations=np.zeros((10**6, 0)), actions=np.zeros((10**6, 0)))
    with pytest.raises(ValueError, match="claims a shape"):
        ds.load_transitions(tmp_path / "t.npz")
    os.mkfifo(tmp_path / "fifo.csv")
    os.symlink("/dev/zero", tmp_path / "zero.csv")
    os.symlink("/dev/zero", tmp_path / "zero.pkl")
    for name, load in (
        ("fifo.csv", ds.load_feature_file),
        ("zero.csv", ds.load_feature_file),
        ("zero.pkl", ds.load_transitions),
    ):
        with pytest.raises(ValueError, match="not a regular file"):
            load(tmp_path / name)
    (tmp_path / "wide.csv").write_text("0," * (2**20 + 5) + "0\n")
    with pytest.raises(ValueError, match="more than .* cells"):
        ds.load_feature_file(tmp_path / "wide.csv")


def test_make_features_names_the_keys_a_dict_lacks():
    with pytest.raises(ValueError, match=r"needs the key\(s\) \['next_observations', 'actions'\]"):
        ds.make_features({"observations": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="Unknown feature layout 'nope'"):
        ds.make_features({"observations": np.zeros((3, 2))}, "nope")
