"""Quickstart: fit VAEOutlierDetector on data made here and print its ROC AUC."""

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from skvae import VAEOutlierDetector

rng = np.random.RandomState(0)
# Inliers: a correlated 8-D Gaussian; outliers: points spread uniformly over a wide box.
cov = 0.6 * np.ones((8, 8)) + 0.4 * np.eye(8)
X = np.vstack([rng.multivariate_normal(np.zeros(8), cov, 2000), rng.uniform(-5, 5, (100, 8))])
y = np.r_[np.zeros(2000), np.ones(100)]  # 1 = outlier
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=0)

detector = VAEOutlierDetector(contamination=0.05, random_state=0).fit(X_train)
auc = roc_auc_score(y_test, -detector.score_samples(X_test))  # higher score = more normal
flagged = (detector.predict(X_test) == -1).mean()
print(f"ROC AUC: {auc:.3f}")
print(f"flagged as outliers: {flagged:.1%} of the test rows")
