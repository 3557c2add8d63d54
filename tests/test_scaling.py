import numpy as np
import pytest

from skvae._scaling import fit_scaling, quartiles


@pytest.mark.parametrize("n_rows", [*range(1, 41), 97, 1000, 4099])
def test_quartiles_equal_numpy_percentile(n_rows):
    rng = np.random.RandomState(n_rows)
    X = np.column_stack(
        [
            rng.standard_normal(n_rows),
            rng.randint(0, 3, n_rows).astype(float),  # ties
            np.full(n_rows, 2.5),  # constant
            rng.standard_cauchy(n_rows) * 1e300,  # huge values and overflow in the difference
            -rng.exponential(size=n_rows) * 1e-300,  # tiny values
        ]
    )
    expected = np.percentile(X, [25, 50, 75], axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        got = quartiles(X)
    np.testing.assert_array_equal(got, expected)


def test_quartiles_leave_input_unchanged():
    X = np.random.RandomState(0).standard_normal((50, 3))
    before = X.copy()
    quartiles(X)
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_robust_scaling_is_the_normal_consistent_iqr(dtype):
    rng = np.random.RandomState(0)
    X = (rng.standard_normal((501, 2)) * [1.0, 3.0] + [5.0, -1.0]).astype(dtype)
    center, scale = fit_scaling(X, "robust", missing=False)
    q25, q50, q75 = np.percentile(X, [25, 50, 75], axis=0)
    np.testing.assert_allclose(center, q50)
    np.testing.assert_allclose(scale, (q75 - q25) / 1.3489795003921634)


def test_robust_scaling_of_missing_values_uses_the_observed_ones():
    X = np.array([[1.0, np.nan], [2.0, 1.0], [3.0, 2.0], [np.nan, 3.0], [4.0, 4.0]])
    center, _ = fit_scaling(X, "robust", missing=True)
    np.testing.assert_array_equal(center, [2.5, 2.5])


def test_features_with_zero_iqr_fall_back_to_their_std():
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.standard_normal(200), (rng.rand(200) < 0.1).astype(float)])
    X = np.column_stack([X, np.zeros(200)])  # constant: scale 1
    _, scale = fit_scaling(X, "robust", missing=False)
    assert scale[0] == pytest.approx(
        np.subtract(*np.percentile(X[:, 0], [75, 25])) / 1.3489795003921634
    )
    assert scale[1] == np.std(X[:, 1])
    assert scale[2] == 1.0


@pytest.mark.parametrize("n_rows", [*range(1, 30), 257, 2000])
def test_quartiles_of_missing_values_equal_numpy_nanpercentile(n_rows):
    rng = np.random.RandomState(n_rows)
    X = np.column_stack(
        [
            rng.standard_normal(n_rows),
            rng.randint(0, 3, n_rows).astype(float),
            rng.standard_cauchy(n_rows) * 1e300,
            rng.standard_normal(n_rows),
            rng.standard_normal(n_rows),
        ]
    )
    X[rng.rand(n_rows, 5) < 0.3] = np.nan
    X[:, 3] = np.nan  # no observed value: NaN, as numpy gives (with a warning)
    X[1:, 4] = np.nan  # one observed value (or none with one row)
    with np.errstate(over="ignore", invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanpercentile(X, [25, 50, 75], axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        got = quartiles(X, missing=True)
    np.testing.assert_array_equal(got, expected)
