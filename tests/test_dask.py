"""Scaling out with Dask: GridSearchCV on a local cluster through joblib, and lazy scoring
of a chunked dask array with the fitted model shipped to the workers once."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skvae import VAEOutlierDetector, make_synthetic

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def auc(estimator, X, y):
    return roc_auc_score(y, -estimator.score_samples(X))


@pytest.mark.slow
def test_grid_search_under_joblib_dask_backend(client):
    from joblib import parallel_backend

    X, y = make_synthetic(600, 4, anomaly_type="outlier", random_state=0)
    grid = {"latent_dim": [1, 2], "beta": [0.5, 1.0]}
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    est = VAEOutlierDetector(epochs=20, random_state=0)
    with parallel_backend("dask"):
        on_dask = GridSearchCV(est, grid, scoring=auc, cv=cv, n_jobs=-1).fit(X, y)
    local = GridSearchCV(est, grid, scoring=auc, cv=cv).fit(X, y)
    # the workers did the fitting, and got the same (reproducible) results
    assert any(v for v in client.run(lambda: True).values())
    np.testing.assert_allclose(
        on_dask.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert on_dask.best_score_ > 0.9


def test_lazy_scoring_of_a_chunked_dask_array(client):
    X, _ = make_synthetic(2000, 5, random_state=0)
    det = VAEOutlierDetector(epochs=20, random_state=0).fit(X)
    [model] = client.scatter([det], broadcast=True)  # shipped to every worker once
    X_dask = da.from_array(X, chunks=(250, 5))
    scores = X_dask.map_blocks(
        lambda block, model: model.score_samples(block), model, drop_axis=1, dtype=float
    )
    assert isinstance(scores, da.Array)  # nothing computed yet
    result = scores.compute()
    np.testing.assert_allclose(result, det.score_samples(X), rtol=1e-12)
