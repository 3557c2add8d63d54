"""Property-based fuzzing: every input either works with finite scores or raises a clear
ValueError/TypeError; finite input never yields NaN or inf scores."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skvae import VAEOutlierDetector

FAST = dict(epochs=2, n_estimators=2, random_state=0)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLEAR = (ValueError, TypeError)


def _fit_score(X, X_score=None, **params):
    det = VAEOutlierDetector(**{**FAST, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(X)
        return det.score_samples(X if X_score is None else X_score)


shapes = st.tuples(st.integers(1, 40), st.integers(1, 12))
magnitudes = st.sampled_from([1.0, 1e-30, 1e30, 1e300, 1e-300])


@SETTINGS
@given(
    shape=shapes,
    dtype=st.sampled_from(["float16", "float32", "float64", "int32", "int64", "bool"]),
    scale=magnitudes,
    data=st.data(),
)
def test_finite_input_gives_finite_scores(shape, dtype, scale, data):
    X = data.draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
        )
    )
    with np.errstate(over="ignore", invalid="ignore"):
        X = (X * scale).astype(dtype)
    if not np.isfinite(X.astype(np.float64)).all():  # float16 overflow makes inf
        with pytest.raises(ValueError, match="infinity|NaN"):
            _fit_score(X)
        return
    s = _fit_score(X)
    assert s.shape == (shape[0],) and s.dtype == np.float64
    assert np.isfinite(s).all()


@SETTINGS
@given(
    n=st.integers(2, 30),
    d=st.integers(1, 6),
    constant_cols=st.integers(0, 3),
    duplicate=st.booleans(),
    trim_fraction=st.floats(0.0, 0.49),
    data=st.data(),
)
def test_constant_columns_and_duplicated_rows(n, d, constant_cols, duplicate, trim_fraction, data):
    X = data.draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-100, 100)))
    if constant_cols:
        X = np.hstack([X, np.full((n, constant_cols), 3.5)])
    if duplicate:
        X = np.vstack([X, X, X[:1].repeat(5, 0)])
    s = _fit_score(X, trim_fraction=trim_fraction)
    assert np.isfinite(s).all()
    if duplicate:  # identical rows, identical scores
        np.testing.assert_allclose(s[:n], s[n : 2 * n], rtol=1e-12)


@SETTINGS
@given(
    shape=shapes,
    bad=st.sampled_from([np.inf, -np.inf]),
    where=st.sampled_from(["fit", "score"]),
    data=st.data(),
)
def test_inf_and_all_missing_rows_are_rejected_clearly(shape, bad, where, data):
    X = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    i = data.draw(st.integers(0, shape[0] - 1))
    j = data.draw(st.integers(0, shape[1] - 1))
    X_inf, X_empty = X.copy(), X.copy()
    X_inf[i, j] = bad
    X_empty[i] = np.nan
    with pytest.raises(ValueError, match="infinity"):
        if where == "fit":
            _fit_score(X_inf)
        else:
            _fit_score(X, X_inf)
    if shape[0] > 1 or where == "score":  # a row with nothing observed: a defined score
        s = _fit_score(X_empty) if where == "fit" else _fit_score(X, X_empty)
        assert np.isfinite(s).all()


@SETTINGS
@given(shape=shapes, fraction=st.floats(0.05, 0.6), data=st.data())
def test_missing_values_give_finite_scores(shape, fraction, data):
    X = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    seed = data.draw(st.integers(0, 2**16))
    X_nan = X.copy()
    X_nan[np.random.RandomState(seed).rand(*shape) < fraction] = np.nan
    X_nan[np.isnan(X_nan).all(1), 0] = 1.0  # no row entirely missing
    if np.isnan(X_nan).all(0).any():  # nor a feature in training
        X_nan[0, np.isnan(X_nan).all(0)] = 1.0
    assert np.isfinite(_fit_score(X_nan)).all()  # fitted on missing values
    assert np.isfinite(_fit_score(X, X_nan)).all()  # fitted on complete rows


@SETTINGS
@given(shape=shapes, extra=st.integers(1, 3), data=st.data())
def test_wrong_feature_count_at_score_time(shape, extra, data):
    X = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    det = VAEOutlierDetector(**FAST).fit(X)
    with pytest.raises(ValueError, match="features"):
        det.score_samples(np.zeros((2, shape[1] + extra)))
    with pytest.raises(ValueError, match="features"):
        det.predict(np.zeros((2, shape[1] + extra)))


@pytest.mark.parametrize(
    "X",
    [
        np.array([["a", "b"], ["c", "d"]], dtype=object),
        np.array([["1.0", "x"], ["2", "3"]]),
        np.array([[1 + 2j, 3j]]),
        [[1.0, 2.0], [3.0]],
        np.empty((0, 4)),
        np.empty((3, 0)),
        np.zeros(5),
        np.zeros((2, 2, 2)),
        "not an array",
    ],
)
def test_malformed_input_raises_clear_error(X):
    with pytest.raises(CLEAR):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            VAEOutlierDetector(**FAST).fit(X)


def test_object_array_of_numbers_works():
    X = np.array([[1, 2.5], [3, 4], [5, 6.5]], dtype=object)
    assert np.isfinite(_fit_score(X)).all()


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_input_is_rejected_clearly(fmt):
    X = sp.random(20, 4, density=0.5, format=fmt, random_state=0)
    with pytest.raises(TypeError, match="[Ss]parse"):
        VAEOutlierDetector(**FAST).fit(X)
    det = VAEOutlierDetector(**FAST).fit(X.toarray())
    with pytest.raises(TypeError, match="[Ss]parse"):
        det.score_samples(X)


@SETTINGS
@given(
    shape=shapes,
    named=st.booleans(),
    data=st.data(),
)
def test_dataframes_with_and_without_column_names(shape, named, data):
    pd = pytest.importorskip("pandas")
    X = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    columns = [f"f{i}" for i in range(shape[1])] if named else None
    df = pd.DataFrame(X, columns=columns)
    det = VAEOutlierDetector(**FAST).fit(df)
    s = det.score_samples(df)
    assert np.isfinite(s).all()
    if named:
        assert list(det.feature_names_in_) == columns
        with pytest.raises(ValueError, match="[Ff]eature names"):
            det.score_samples(df.rename(columns={"f0": "other"}))
    else:
        assert not hasattr(det, "feature_names_in_")


def test_unscaled_extreme_data_with_scaling_none_is_clear():
    X = np.random.RandomState(0).normal(size=(50, 3)) * 1e300
    with pytest.raises(ValueError, match="too large"):
        VAEOutlierDetector(scaling=None, **FAST).fit(X)
