"""scikit-learn's own estimator checks, every one of them run."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skvae import VAEOutlierDetector


@parametrize_with_checks(
    [
        VAEOutlierDetector(epochs=5, random_state=0),
        VAEOutlierDetector(
            epochs=3,
            n_estimators=1,
            score_type="reconstruction_probability",
            n_score_samples=3,
        ),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
