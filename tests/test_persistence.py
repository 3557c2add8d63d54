"""The code-free .skvae format."""

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch

import skvae
from skvae import VAEOutlierDetector
from skvae._persistence import FORMAT_VERSION


@pytest.fixture(scope="module")
def fitted():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    # on the CPU also where a GPU is ('auto'): tests compare its scores bit for bit
    return VAEOutlierDetector(epochs=10, device="cpu", random_state=0).fit(X), X


def test_round_trip(fitted, tmp_path):
    det, X = fitted
    path = det.save(tmp_path / "det.skvae")
    loaded = skvae.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(loaded.predict(X), det.predict(X))
    assert loaded.get_params() == det.get_params()
    np.testing.assert_array_equal(loaded.feature_names_in_, det.feature_names_in_)
    np.testing.assert_array_equal(loaded.decision_scores_, det.decision_scores_)
    assert loaded.history_ == det.history_ and loaded.offset_ == det.offset_


def test_file_holds_no_pickled_code(fitted, tmp_path):
    det, _ = fitted
    path = skvae.save(det, tmp_path / "det.skvae")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["SHA256SUMS", "metadata.json", "weights.pt"]
        meta = json.loads(zf.read("metadata.json"))
    assert meta["versions"]["skvae"] == skvae.__version__ and "torch" in meta["versions"]
    assert meta["fitted"]["offset"] == det.offset_


def _rewrite(path, out, metadata=None, weights=None, resum=True):
    """Copy a .skvae file with its members changed; ``resum`` writes matching checksums
    (a consistent edit), otherwise the old ones are kept (corruption)."""
    import hashlib

    with zipfile.ZipFile(path) as zf:
        meta, w, sums = zf.read("metadata.json"), zf.read("weights.pt"), zf.read("SHA256SUMS")
    meta = metadata(meta) if metadata else meta
    meta = meta.encode() if isinstance(meta, str) else meta
    w = weights(w) if weights else w
    if resum:
        sums = "".join(
            f"{hashlib.sha256(d).hexdigest()}  {n}\n"
            for n, d in (("metadata.json", meta), ("weights.pt", w))
        )
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("metadata.json", meta)
        zf.writestr("weights.pt", w)
        zf.writestr("SHA256SUMS", sums)
    return out


def test_truncated_corrupted_tampered(fitted, tmp_path):
    det, _ = fitted
    path = det.save(tmp_path / "det.skvae")
    data = path.read_bytes()
    (tmp_path / "trunc.skvae").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="skvae model file"):
        skvae.load(tmp_path / "trunc.skvae")
    (tmp_path / "junk.skvae").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a skvae model file"):
        skvae.load(tmp_path / "junk.skvae")

    def flip(w):
        b = bytearray(w)
        b[len(b) // 2] ^= 0xFF
        return bytes(b)

    with pytest.raises(ValueError, match="checksum"):
        skvae.load(_rewrite(path, tmp_path / "tampered.skvae", weights=flip, resum=False))
    with pytest.raises(ValueError, match="metadata.json does not match its checksum"):
        skvae.load(
            _rewrite(path, tmp_path / "meta.skvae", metadata=lambda m: m + b" ", resum=False)
        )

    def bad_json(m):
        return m[:-10]

    with pytest.raises(ValueError, match="corrupted"):
        skvae.load(_rewrite(path, tmp_path / "badjson.skvae", metadata=bad_json))
    with pytest.raises(FileNotFoundError):
        skvae.load(tmp_path / "absent.skvae")


def _protocol_4(w):
    state = torch.load(io.BytesIO(w), weights_only=True)
    buffer = io.BytesIO()
    torch.save(state, buffer, pickle_protocol=4)
    return buffer.getvalue()


def _pickle_byte_flipped(w):  # the inner archive's CRC no longer matches
    b = bytearray(w)
    b[w.index(b"\x80\x02") + 1] = 4
    return bytes(b)


def _deflated(w):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(w)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


@pytest.mark.parametrize(
    "change, message",
    [
        (_protocol_4, "its pickle is not protocol 2"),
        (_pickle_byte_flipped, "data.pkl' does not match its CRC"),
        (_deflated, "not an archive written by torch.save"),
        (lambda w: b"not a zip archive", "the weights member: File is not a zip file"),
    ],
)
def test_weights_not_as_skvae_writes_them_are_refused_before_torch_reads_them(
    fitted, tmp_path, change, message
):
    # a consistent edit (checksums rewritten); torch would read some of these, with a
    # warning of its own about the checkpoint
    det, _ = fitted
    path = _rewrite(det.save(tmp_path / "det.skvae"), tmp_path / "edited.skvae", weights=change)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=message):
            skvae.load(path)
    assert not caught, [str(w.message) for w in caught]


def test_version_mismatch(fitted, tmp_path):
    det, X = fitted
    path = det.save(tmp_path / "det.skvae")

    def newer_format(m):
        meta = json.loads(m)
        meta["format_version"] = FORMAT_VERSION + 1
        return json.dumps(meta)

    with pytest.raises(ValueError, match="newer"):
        skvae.load(_rewrite(path, tmp_path / "newer.skvae", metadata=newer_format))

    def other_release(m):
        meta = json.loads(m)
        meta["versions"]["skvae"] = "0.0.1"
        return json.dumps(meta)

    with pytest.warns(UserWarning, match="written by skvae 0.0.1"):
        old = skvae.load(_rewrite(path, tmp_path / "old.skvae", metadata=other_release))
    np.testing.assert_array_equal(old.score_samples(X), det.score_samples(X))

    def no_release(m):
        meta = json.loads(m)
        meta["versions"]["skvae"] = None
        return json.dumps(meta)

    with pytest.warns(UserWarning, match="written by an unrecorded skvae; this is"):
        skvae.load(_rewrite(path, tmp_path / "none.skvae", metadata=no_release))


def test_model_from_cuda_loads_on_cpu(fitted, tmp_path, monkeypatch):
    det, X = fitted
    path = det.save(tmp_path / "det.skvae")

    def on_cuda(m):
        meta = json.loads(m)
        meta["fitted"]["device"] = "cuda:0"
        return json.dumps(meta)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA is not available here"):
        loaded = skvae.load(_rewrite(path, tmp_path / "gpu.skvae", metadata=on_cuda))
    assert loaded.device_.type == "cpu"
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fitted_model_saved_and_loaded_on_cpu(tmp_path, monkeypatch):
    X = np.random.RandomState(0).normal(size=(200, 3))
    det = VAEOutlierDetector(epochs=5, device="cuda", random_state=0).fit(X)
    path = det.save(tmp_path / "gpu.skvae")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = skvae.load(path)
    assert cpu.device_.type == "cpu"
    np.testing.assert_allclose(cpu.score_samples(X), det.score_samples(X), rtol=1e-4)


def test_unfitted_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        VAEOutlierDetector().save(tmp_path / "x.skvae")


def test_save_refuses_names_no_reader_would_take(fitted, tmp_path):
    det, _ = fitted
    for name in ("m.joblib", "m.PKL", "m.pickle"):  # readers take these for pickles
        with pytest.raises(ValueError, match=r"means a pickle, .* name it m\.skvae"):
            skvae.save(det, tmp_path / name)
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="folder is a folder"):
        skvae.save(det, tmp_path / "folder")
    with pytest.raises(TypeError, match="got dict"):
        skvae.save({"model": det}, tmp_path / "m.skvae")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing written
    assert skvae.load(skvae.save(det, tmp_path / "m.txt")).n_features_in_ == 4  # literal


def _as_written_by_0_1_0(det, folder):
    """The three files skvae 0.1.0 wrote for ``det``: a format-1 ``.skvae`` (scaling in
    the metadata, not in the state dict), a compat pair (``skvae-compat-1`` pickle +
    ``.pth``) and a joblib pickle whose network state has no scaling buffers."""
    import hashlib
    import io
    import pickle

    import joblib

    state = {k: v for k, v in det.module_.state_dict().items() if k not in ("center", "scale")}
    assert det.decoder_df is None  # 0.1.0's decoder was Gaussian
    network = {k: v for k, v in det.module_.config.items() if k not in ("clip", "decoder_df")}
    buffer = io.BytesIO()
    torch.save({**state, "__decision_scores__": torch.from_numpy(det.decision_scores_)}, buffer)
    weights = buffer.getvalue()
    params = {k: v for k, v in det.get_params().items() if k != "decoder_df"}
    meta = {
        "format": "skvae-model",
        "format_version": 1,
        "class": "VAEOutlierDetector",
        "versions": {"skvae": "0.1.0"},
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "network": {k: list(v) if isinstance(v, tuple) else v for k, v in network.items()},
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "fitted": {
            "device": "cpu",
            "n_features_in": det.n_features_in_,
            "feature_names_in": None,
            "center": det.center_.tolist(),
            "scale": det.scale_.tolist(),
            "latent_dim": det.latent_dim_,
            "hidden_dims": list(det.hidden_dims_),
            "offset": det.offset_,
            "score_mean": det.score_mean_,
            "score_std": det.score_std_,
            "history": det.history_,
            "n_epochs": det.n_epochs_,
            "best_epoch": det.best_epoch_,
        },
    }
    with zipfile.ZipFile(folder / "v1.skvae", "w") as zf:
        zf.writestr("metadata.json", json.dumps(meta))
        zf.writestr("weights.pt", weights)

    compat_state = {f"net.{k}": v for k, v in state.items()}
    compat_state["center"] = torch.as_tensor(det.center_)
    compat_state["scale"] = torch.as_tensor(det.scale_)
    torch.save(compat_state, folder / "compat_model.pth")
    s = det.score_samples(np.zeros((1, det.n_features_in_)))  # any finite numbers
    compat_meta = {
        "format": "skvae-compat-1",
        "skvae_version": "0.1.0",
        "input_dim": det.n_features_in_,
        "latent_dim": det.latent_dim_,
        "hidden_dims": list(det.hidden_dims_),
        "device": "cpu",
        "network": network,
        "detector_params": params,
        "threshold": det.offset_,
        "thr": float((det.offset_ - det.score_mean_) / det.score_std_),
        "mean": det.score_mean_,
        "std": det.score_std_,
        "threshold_candidates": {"p0.5": float(s[0]), "p5": -1.5, "p10": -1.2},
    }
    with open(folder / "compat_meta_data.pkl", "wb") as f:
        pickle.dump(compat_meta, f)

    pickled = {k: v for k, v in det.__getstate__().items() if k != "decoder_df"}
    pickled["module_"] = {"config": network, "state_dict": state}
    joblib.dump(pickled, folder / "state.joblib")
    return joblib.load(folder / "state.joblib")


def test_files_written_by_0_1_0_still_load(fitted, tmp_path):
    _, X = fitted
    # 0.1.0's files kept no feature names: fitted on an array, as the files say
    det = VAEOutlierDetector(epochs=10, decoder_df=None, device="cpu", random_state=0)
    det.fit(X.to_numpy())
    old_state = _as_written_by_0_1_0(det, tmp_path)
    expected = det.score_samples(X.to_numpy())
    v1 = skvae.load(tmp_path / "v1.skvae")
    np.testing.assert_array_equal(v1.score_samples(X.to_numpy()), expected)
    assert v1.offset_ == det.offset_ and v1.history_ == det.history_
    np.testing.assert_array_equal(v1.center_, det.center_)

    from skvae.compat import VAE

    d = VAE.load_model(str(tmp_path / "compat"))
    np.testing.assert_array_equal(d["model"].score_samples(X.to_numpy()), expected)
    assert d["thr"] == pytest.approx((det.offset_ - det.score_mean_) / det.score_std_)
    assert d["threshold_candidates"] == {5: -1.5, 10: -1.2}  # integer keys only

    unpickled = VAEOutlierDetector.__new__(VAEOutlierDetector)
    unpickled.__setstate__(old_state)
    np.testing.assert_array_equal(unpickled.score_samples(X.to_numpy()), expected)
    for loaded in (v1, d["model"].detector, unpickled):  # Gaussian, as they were written
        assert loaded.decoder_df is None and loaded.module_.config["decoder_df"] is None


def test_files_of_format_2_load_with_a_gaussian_decoder(fitted, tmp_path):
    _, X = fitted
    det = VAEOutlierDetector(epochs=10, decoder_df=None, random_state=0).fit(X)
    path = det.save(tmp_path / "det.skvae")

    def format_2(m):
        meta = json.loads(m)
        assert meta["format_version"] == 4 and meta["network"]["decoder_df"] is None
        meta["format_version"] = 2
        del meta["network"]["decoder_df"], meta["params"]["decoder_df"]
        del meta["network"]["mask_input"]
        return json.dumps(meta)

    loaded = skvae.load(_rewrite(path, tmp_path / "v2.skvae", metadata=format_2))
    assert loaded.decoder_df is None
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))


def test_files_of_format_3_load_with_an_encoder_that_sees_no_mask(fitted, tmp_path):
    det, X = fitted
    path = det.save(tmp_path / "det.skvae")

    def format_3(m):
        meta = json.loads(m)
        assert meta["network"]["mask_input"] is False
        meta["format_version"] = 3
        del meta["network"]["mask_input"]
        return json.dumps(meta)

    loaded = skvae.load(_rewrite(path, tmp_path / "v3.skvae", metadata=format_3))
    assert loaded.module_.config["mask_input"] is False
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))


def test_a_model_fitted_with_missing_values_round_trips(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4))
    X[rng.rand(*X.shape) < 0.2] = np.nan
    det = VAEOutlierDetector(epochs=5, random_state=0).fit(X)
    assert det.module_.config["mask_input"] is True
    loaded = skvae.load(det.save(tmp_path / "nan.skvae"))
    assert loaded.module_.config["mask_input"] is True
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))

    def bad(m):
        meta = json.loads(m)
        meta["network"]["mask_input"] = "yes"
        return json.dumps(meta)

    with pytest.raises(ValueError, match="network.mask_input"):
        skvae.load(_rewrite(det.save(tmp_path / "b.skvae"), tmp_path / "bad.skvae", metadata=bad))


@pytest.mark.parametrize("network_df, params_df", [(0.0, 0.0), ("5", 5.0), (None, 5.0), (5.0, 4.0)])
def test_a_bad_or_inconsistent_decoder_df_is_refused(fitted, tmp_path, network_df, params_df):
    det, _ = fitted
    assert det.decoder_df == 5.0
    path = det.save(tmp_path / "det.skvae")

    def edit(m):
        meta = json.loads(m)
        meta["network"]["decoder_df"], meta["params"]["decoder_df"] = network_df, params_df
        return json.dumps(meta)

    with pytest.raises(ValueError, match="decoder_df"):
        skvae.load(_rewrite(path, tmp_path / "bad.skvae", metadata=edit))


def test_pickles_need_the_explicit_opt_in(fitted, tmp_path):
    import joblib

    det, X = fitted
    joblib.dump(det, tmp_path / "det.joblib")
    with pytest.raises(ValueError, match="allow_code_execution=True"):
        skvae.load(tmp_path / "det.joblib")
    trusted = skvae.load(tmp_path / "det.joblib", allow_code_execution=True)
    np.testing.assert_array_equal(trusted.score_samples(X), det.score_samples(X))
    moved = skvae.load(tmp_path / "det.joblib", device="cpu", allow_code_execution=True)
    assert moved.device_.type == "cpu" and moved.offset_ == det.offset_
    np.testing.assert_array_equal(moved.score_samples(X), det.score_samples(X))


def test_plain_data_unpickler_refuses_code(tmp_path):
    import pickle

    from skvae._persistence import load_plain_pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"observations": Payload()}))
    with pytest.raises(ValueError, match="not plain data"):
        load_plain_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()
    data = {"a": np.arange(3.0), "b": [1, "x", None], "c": np.float32(2.0)}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(data))
    back = load_plain_pickle(tmp_path / "ok.pkl")
    np.testing.assert_array_equal(back["a"], data["a"])
    assert back["b"] == data["b"] and back["c"] == 2.0


def test_failed_save_keeps_the_previous_file(fitted, tmp_path, monkeypatch):
    det, X = fitted
    path = det.save(tmp_path / "det.skvae")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken)
    with pytest.raises(KeyboardInterrupt):
        det.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.skvae"]  # no temporary left


def test_numpy_hyperparameters_save(tmp_path):
    X = np.random.RandomState(0).normal(size=(80, 3))
    det = VAEOutlierDetector(hidden_dims=np.array([8, 4]), epochs=2, random_state=0).fit(X)
    loaded = skvae.load(det.save(tmp_path / "np.skvae"))
    assert loaded.hidden_dims == [8, 4]
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))


def test_metadata_beside_a_model_file_is_plain_data_for_that_file_only(fitted, tmp_path):
    import os
    import pickle
    import shutil

    from skvae._persistence import metadata_file, write_vae_module_metadata

    det, X = fitted
    path = det.save(tmp_path / "m.skvae")
    info = skvae.load(path, return_info=True)[1]
    values = {"threshold": det.offset_, "mean": det.score_mean_, "std": det.score_std_}
    meta = write_vae_module_metadata(path, values, {5: -1.0})
    assert meta == metadata_file(path) == tmp_path / "m_meta_data.pkl"
    assert skvae.load(path, return_info=True)[1] == info  # nothing edited: the file's
    content = pickle.loads(meta.read_bytes())
    content["threshold_candidates"] = {5: det.score_mean_ - 2 * det.score_std_}
    meta.write_bytes(pickle.dumps(content))
    assert skvae.load(path, return_info=True)[1]["threshold_candidates"] == {5: -2.0}
    # the pair is bound by content, not by names or times: a copy of both files under
    # other names, and a touched model file, keep the edit
    for other in ("copy.skvae", "copy_meta_data.pkl"):
        shutil.copy(tmp_path / other.replace("copy", "m"), tmp_path / other)
    assert skvae.load(tmp_path / "copy.skvae", return_info=True)[1]["threshold_candidates"] == {
        5: -2.0
    }
    os.utime(meta, (1, 1))
    assert skvae.load(path, return_info=True)[1]["threshold_candidates"] == {5: -2.0}
    # metadata written for another model is ignored, with a warning
    meta.write_bytes(pickle.dumps({**content, "skvae_model_sha256": "0" * 64}))
    with pytest.warns(UserWarning, match="written for another model"):
        assert skvae.load(path, return_info=True)[1] == info
    # an edit that is not plain data, or not numbers, is refused, and runs nothing
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    meta.write_bytes(pickle.dumps({**content, "threshold_candidates": {5: Payload()}}))
    with pytest.raises(ValueError, match="not plain data"):
        skvae.load(path)
    assert not marker.exists()
    for bad, match in (
        ({5: "x"}, "finite number"),
        ({5: 1e300}, "finite number|standard deviations"),
        ({5: det.score_mean_ + 3e299 * det.score_std_}, "standard deviations"),
        ({10**300: -1.0}, r"percentiles in \(0, 100\)"),
        ({100: -1.0}, r"percentiles in \(0, 100\)"),
    ):
        meta.write_bytes(pickle.dumps({**content, "threshold_candidates": bad}))
        with pytest.raises(ValueError, match=match):
            skvae.load(path)
    # a model saved again at the same path does not take the old file's candidates
    meta.write_bytes(pickle.dumps(content))
    skvae.VAEOutlierDetector(epochs=2, random_state=1).fit(X).save(path)
    with pytest.warns(UserWarning, match="written for another model"):
        assert skvae.load(path, return_info=True)[1]["threshold_candidates_on"] == "training"


def test_one_definition_of_the_fitted_fields_and_one_table_of_migrations(fitted, tmp_path):
    from dataclasses import fields

    from skvae._persistence import MIGRATIONS, Fitted

    det, _ = fitted
    path = det.save(tmp_path / "det.skvae")
    with zipfile.ZipFile(path) as zf:
        written = json.loads(zf.read("metadata.json"))["fitted"]
    assert list(written) == [f.name for f in fields(Fitted)]  # what the writer writes
    # every older format version has its step to the next one
    assert sorted(MIGRATIONS) == list(range(1, FORMAT_VERSION))
    # the reader names a missing required field
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(members["metadata.json"])
    del meta["fitted"]["offset"]
    members["metadata.json"] = json.dumps(meta).encode()
    import hashlib

    members["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(members[n]).hexdigest()}  {n}\n" for n in ("metadata.json", "weights.pt")
    ).encode()
    with zipfile.ZipFile(tmp_path / "bad.skvae", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match="'fitted.offset' is missing"):
        skvae.load(tmp_path / "bad.skvae")


def test_save_writes_only_what_load_accepts_and_keeps_the_previous_file(fitted, tmp_path):
    det, _ = fitted
    path = det.save(tmp_path / "m.skvae")
    good = path.read_bytes()
    for info, reason in (
        ({"threshold_candidates": {5: float("nan")}}, "threshold_candidates"),
        ({"blob": "x" * (17 * 2**20)}, "over the l"),
    ):
        with pytest.raises(ValueError, match=f"refusing to write .*{reason}"):
            det.save(path, info=info)
        assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.skvae"]


def test_atomic_writes_keep_the_mode_and_replace_only_regular_files(fitted, tmp_path):
    import os
    import stat

    det, _ = fitted
    path = det.save(tmp_path / "m.skvae")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # a new file's mode
    os.chmod(path, 0o640)
    det.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # kept, not 0600
    fifo = tmp_path / "pipe.skvae"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        det.save(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_an_unwritable_folder_is_named_not_the_temporary_file(fitted, tmp_path, monkeypatch):
    import errno
    import tempfile

    def refused(*args, **kwargs):  # as a read-only folder answers (root writes anyway)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".m.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    det, _ = fitted
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'm.skvae'}: Permission denied"):
        det.save(tmp_path / "m.skvae")


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
