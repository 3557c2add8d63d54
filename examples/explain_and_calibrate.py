"""Explaining and calibrating flags: which features make a row an outlier, and a
threshold with a known false-alarm rate.

Fits the detector on rows driven by two correlated latent factors, then

- explains a row with two features pushed far out and a row whose feature 3 was swapped
  with another row's (its marginal is normal, its correlation with the rest is not);
- turns scores into conformal p-values and flags at alpha = 0.05, checking the
  false-alarm rate on fresh inliers;
- draws the contributions of both rows (``python explain_and_calibrate.py FIGURE.png``).
"""

import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from skvae import VAEOutlierDetector  # noqa: E402
from skvae.plotting import plot_feature_contributions  # noqa: E402

NAMES = [f"sensor_{j}" for j in range(8)]


def rows_from_factors(n, seed):
    rng = np.random.RandomState(seed)
    W = np.random.RandomState(100).normal(size=(2, 8))
    return rng.normal(size=(n, 2)) @ W + 0.1 * rng.normal(size=(n, 8))


X = rows_from_factors(3000, seed=0)
detector = VAEOutlierDetector(alpha=0.05, random_state=0).fit(X)

pushed = rows_from_factors(1, seed=1)
pushed[0, [1, 6]] += 6 * X.std(0)[[1, 6]]
swapped = rows_from_factors(1, seed=2)
donors = rows_from_factors(100, seed=3)  # another row's value, the farthest of 100
swapped[0, 3] = donors[np.argmax(np.abs(donors[:, 3] - swapped[0, 3])), 3]
suspects = np.r_[pushed, swapped]

contributions = detector.feature_contributions(suspects)
for name, row, p in zip(["pushed", "swapped"], contributions, detector.pvalues(suspects)):
    lowest = [NAMES[j] for j in np.argsort(row)[:2]]
    print(f"{name} row: p-value {p:.4f}, lowest contributions: {', '.join(lowest)}")

fresh = rows_from_factors(10000, seed=4)
rate = np.mean(detector.predict(fresh) == -1)
n_cal = len(detector.calibration_scores_)
# The guarantee holds on average over calibration sets: for one set, the rate on fresh
# inliers varies around 0.05 with this standard deviation.
spread = np.sqrt(0.05 * 0.95 / (n_cal + 2))
print(
    f"false-alarm rate on fresh inliers at alpha=0.05: {rate:.4f} "
    f"({(rate - 0.05) / spread:+.1f} standard deviations of a calibration set's {spread:.4f} "
    "from 0.05)"
)
print(f"calibrated on {n_cal} {detector.calibration_source_} rows")

ax = plot_feature_contributions(
    detector, suspects, feature_names=NAMES, top=6, row_labels=["pushed", "swapped"]
)
ax.figure.set_size_inches(6, 3.5)
ax.figure.tight_layout()
if len(sys.argv) > 1:
    ax.figure.savefig(sys.argv[1], dpi=90)
    print(f"figure written to {sys.argv[1]}")
