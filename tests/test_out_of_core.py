"""fit and score_samples on numpy memmaps and h5py datasets, without loading them."""

import tracemalloc

import numpy as np
import pytest

from skvae import VAEOutlierDetector

h5py = pytest.importorskip("h5py")


def _memmap(path, n, d, seed=0):
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, d))
    rng = np.random.RandomState(seed)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        X[start:stop] = rng.normal(size=(stop - start, d))
    X.flush()
    return np.load(path, mmap_mode="r")


def test_memmap_and_h5py_give_the_same_model(tmp_path):
    X = _memmap(tmp_path / "x.npy", 20_000, 6)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("X", data=np.asarray(X), chunks=(4096, 6))
    det_m = VAEOutlierDetector(epochs=20, random_state=0).fit(X)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        det_h = VAEOutlierDetector(epochs=20, random_state=0).fit(f["X"])
        s_h5 = det_m.score_samples(f["X"])
    s = det_m.score_samples(X)
    np.testing.assert_array_equal(s_h5, s)
    np.testing.assert_array_equal(det_h.score_samples(np.asarray(X)), s)
    np.testing.assert_allclose(det_m.decision_scores_, -s)
    assert det_m.n_features_in_ == 6 and np.isfinite(s).all()


def test_out_of_core_rows_with_missing_values_fit_and_score(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "h.npy", mode="w+", dtype=np.float64, shape=(3000, 4))
    rng = np.random.RandomState(0)
    X[:] = rng.normal(size=(3000, 4))
    X[rng.rand(3000, 4) < 0.15] = np.nan
    X[np.isnan(X).all(1), 0] = 0.0
    X.flush()
    on_disk = np.load(tmp_path / "h.npy", mmap_mode="r")
    with h5py.File(tmp_path / "h.h5", "w") as f:
        f.create_dataset("X", data=np.asarray(on_disk), chunks=(512, 4))
    det = VAEOutlierDetector(epochs=5, random_state=0).fit(on_disk)
    assert det.module_.config["mask_input"]
    s = det.score_samples(on_disk)
    assert np.isfinite(s).all()
    np.testing.assert_array_equal(s, det.score_samples(np.asarray(on_disk)))
    with h5py.File(tmp_path / "h.h5", "r") as f:  # read in chunks, the same model
        det_h = VAEOutlierDetector(epochs=5, random_state=0).fit(f["X"])
        np.testing.assert_array_equal(det_h.score_samples(f["X"]), s)


@pytest.mark.slow
def test_fit_memory_is_not_proportional_to_the_data(tmp_path):
    n, d = 400_000, 10
    X = _memmap(tmp_path / "big.npy", n, d)
    data_mb = n * d * 8 / 2**20
    tracemalloc.start()
    VAEOutlierDetector(epochs=5, random_state=0).fit(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the per-row outputs (scores, decision_scores_, labels_, the calibration scores
    # before they are subsampled) are O(n) by design; the data itself is never copied
    per_row_outputs_mb = 4 * n * 8 / 2**20
    assert peak / 2**20 < per_row_outputs_mb + 0.25 * data_mb, peak / 2**20


def test_out_of_core_bad_input(tmp_path):
    X = _memmap(tmp_path / "x.npy", 1000, 3)
    bad = np.lib.format.open_memmap(
        tmp_path / "bad.npy", mode="w+", dtype=np.float64, shape=(1000, 3)
    )
    bad[:] = 1.0
    bad[700, 1] = np.inf
    bad[800] = np.nan
    bad.flush()
    with pytest.raises(ValueError, match="infinity"):
        VAEOutlierDetector(epochs=1).fit(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    bad[700, 1] = np.nan  # a missing value is fine, a row with nothing observed too
    bad.flush()
    with pytest.warns(UserWarning, match="1 row.* every value missing.* left out"):
        VAEOutlierDetector(epochs=1).fit(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    det = VAEOutlierDetector(epochs=1).fit(X)
    with pytest.warns(UserWarning, match="1 row.* every value missing"):
        s = det.score_samples(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    assert s[800] == -np.median(det.decision_scores_)
    det = VAEOutlierDetector(epochs=1).fit(X)
    with pytest.raises(ValueError, match="features"):
        det.score_samples(_memmap(tmp_path / "y.npy", 10, 4))
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("s", data=np.array([["a", "b"]], dtype="S1"))
        with pytest.raises(TypeError, match="numeric"):
            VAEOutlierDetector(epochs=1).fit(f["s"])
        f.create_dataset("v", data=np.zeros(5))
        with pytest.raises(ValueError, match="2D"):
            VAEOutlierDetector(epochs=1).fit(f["v"])
