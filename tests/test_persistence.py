"""The code-free .skvae format."""

import json
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
    return VAEOutlierDetector(epochs=10, random_state=0).fit(X), X


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
        assert sorted(zf.namelist()) == ["metadata.json", "weights.pt"]
        meta = json.loads(zf.read("metadata.json"))
    assert meta["versions"]["skvae"] == skvae.__version__ and "torch" in meta["versions"]
    assert meta["fitted"]["offset"] == det.offset_


def _rewrite(path, out, metadata=None, weights=None):
    with zipfile.ZipFile(path) as zf:
        meta, w = zf.read("metadata.json"), zf.read("weights.pt")
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("metadata.json", metadata(meta) if metadata else meta)
        zf.writestr("weights.pt", weights(w) if weights else w)
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
        skvae.load(_rewrite(path, tmp_path / "tampered.skvae", weights=flip))

    def bad_json(m):
        return m[:-10]

    with pytest.raises(ValueError, match="corrupted"):
        skvae.load(_rewrite(path, tmp_path / "badjson.skvae", metadata=bad_json))
    with pytest.raises(FileNotFoundError):
        skvae.load(tmp_path / "absent.skvae")


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


def test_model_from_cuda_loads_on_cpu(fitted, tmp_path, monkeypatch):
    det, X = fitted
    path = det.save(tmp_path / "det.skvae")

    def on_cuda(m):
        meta = json.loads(m)
        meta["fitted"]["device"] = "cuda:0"
        return json.dumps(meta)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
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
