"""Pipeline + GridSearchCV over latent_dim and beta, scored by ROC AUC on labelled folds."""

from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skvae import VAEOutlierDetector, make_synthetic, outlier_scorer

X, y = make_synthetic(1500, 6, anomaly_type="local", anomaly_fraction=0.05, random_state=0)


pipe = Pipeline([("scale", StandardScaler()), ("vae", VAEOutlierDetector(random_state=0))])
search = GridSearchCV(
    pipe,
    {"vae__latent_dim": [1, 2, 4], "vae__beta": [0.5, 1.0, 2.0]},
    scoring=outlier_scorer(),  # not "roc_auc": that ranks normal rows as anomalies
    cv=StratifiedKFold(3, shuffle=True, random_state=0),
)
search.fit(X, y)
for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
    print(f"latent_dim={params['vae__latent_dim']} beta={params['vae__beta']}: AUC {score:.3f}")
print(f"best: {search.best_params_} with ROC AUC {search.best_score_:.3f}")
