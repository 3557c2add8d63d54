"""Saving and loading: joblib (pickle) and the code-free format."""

import tempfile
from pathlib import Path

import joblib
import numpy as np

import skvae
from skvae import VAEOutlierDetector, make_synthetic

X, _ = make_synthetic(1000, 5, random_state=0)
det = VAEOutlierDetector(random_state=0).fit(X)

folder = Path(tempfile.mkdtemp())
joblib.dump(det, folder / "detector.joblib")  # scikit-learn style; trusted files only
restored = joblib.load(folder / "detector.joblib")
same = np.array_equal(restored.score_samples(X), det.score_samples(X))
print(f"joblib round trip gives identical scores: {same}")

det.save(folder / "detector.skvae")  # zip of JSON metadata + torch state dict: no code runs on load
safe = skvae.load(folder / "detector.skvae")
same = np.array_equal(safe.score_samples(X), det.score_samples(X))
print(f".skvae round trip gives identical scores: {same}")
print(f"threshold (offset_) kept: {safe.offset_ == det.offset_}")
