"""Choosing a score: ELBO, reconstruction error and reconstruction probability side by side,
on four kinds of anomaly at a third of make_synthetic's default distance (magnitude=1)."""

from sklearn.metrics import roc_auc_score

from skvae import VAEOutlierDetector, make_synthetic

for kind in ["outlier", "cluster", "local", "noise"]:
    X, y = make_synthetic(2000, 6, anomaly_type=kind, magnitude=1.0, random_state=0)
    aucs = []
    for score_type in ["elbo", "reconstruction", "reconstruction_probability"]:
        det = VAEOutlierDetector(score_type=score_type, random_state=0).fit(X)
        aucs.append(f"{score_type}={roc_auc_score(y, -det.score_samples(X)):.3f}")
    print(f"{kind:8s} " + "  ".join(aucs))
