"""The training loop's concentration step: each member's trimmed rows, chosen at the
first check, stay out for the rest of the fit."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from skvae import VAEOutlierDetector, _training
from skvae._network import VAEEnsemble


def _module(n_members=2, n_features=4):
    module = VAEEnsemble(n_features, 2, (8,), n_members=n_members, decoder_df=5.0)
    module.reset_parameters(torch.Generator().manual_seed(0))
    return module


def test_concentrate_keeps_each_members_lowest_loss_rows():
    module = _module()
    Z = torch.randn(60, 4, generator=torch.Generator().manual_seed(1))
    Z[7] += 30.0  # far off: the highest loss under any member
    subsets = torch.stack([torch.arange(0, 40), torch.arange(20, 60)])
    kept = _training.concentrate(module, Z, subsets, 1.0, 0.1)
    assert kept.shape == (2, 40) and kept.dtype == torch.bool
    assert kept.sum(1).tolist() == [36, 36]
    with torch.no_grad():
        nll, kl = module.loss_terms(Z[subsets], None)
    loss = nll + kl
    for m in range(2):  # every kept row's loss is below every dropped row's
        assert loss[m][kept[m]].max() < loss[m][~kept[m]].min()
    assert not kept[0, 7]  # row 7 is member 0's eighth row
    # nothing to trim: no mask
    assert _training.concentrate(module, Z, subsets, 1.0, 0.0) is None
    assert _training.concentrate(module, Z, subsets[:, :5], 1.0, 0.05) is None


def test_concentrate_takes_missing_values_and_chunks(monkeypatch):
    module = _module(n_features=3)
    module.config["mask_input"] = False
    Z = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    Z[::4, 1] = float("nan")
    subsets = torch.stack([torch.arange(50), torch.arange(50).flip(0)])
    whole = _training.concentrate(module, Z, subsets, 1.0, 0.2)
    monkeypatch.setattr(_training, "chunk_rows", lambda module: 7)
    assert torch.equal(_training.concentrate(module, Z, subsets, 1.0, 0.2), whole)
    assert whole.sum(1).tolist() == [40, 40]


@pytest.mark.parametrize("batch_size", [128, 32])
def test_a_fit_trims_anew_until_the_first_check_then_keeps_its_rows(monkeypatch, batch_size):
    seen = []
    original = VAEEnsemble.loss_gradient

    def record(module, x, noise, beta, trim_fraction, mask=None, workspace=None, kept=None):
        seen.append(None if kept is None else kept.clone())
        return original(module, x, noise, beta, trim_fraction, mask, workspace, kept)

    chosen = []
    concentrate = _training.concentrate

    def record_concentrate(*args):
        chosen.append(concentrate(*args))
        return chosen[-1]

    monkeypatch.setattr(VAEEnsemble, "loss_gradient", record)
    monkeypatch.setattr(_training, "concentrate", record_concentrate)
    X = np.random.RandomState(0).normal(size=(300, 5))
    epochs = 40 if batch_size == 128 else 10  # 4 steps an epoch with 32-row batches
    VAEOutlierDetector(epochs=epochs, batch_size=batch_size, n_estimators=2, random_state=0).fit(X)
    assert len(seen) == 40 and len(chosen) == 1
    assert all(k is None for k in seen[:20])  # the first check comes after 20 steps
    later = seen[20:]
    assert all(k is not None and k.shape == (2, min(batch_size, 128)) for k in later)
    if batch_size == 128:  # the whole subsample each step: the same rows each time
        assert all(torch.equal(k, chosen[0]) for k in later)
        assert chosen[0].sum(1).tolist() == [115, 115]
    else:  # each epoch's four batches cover each member's kept rows once
        for start in range(0, 20, 4):
            assert torch.stack(later[start : start + 4], 0).sum((0, 2)).tolist() == [115, 115]
    # without trimming, and with a single check, there is nothing to keep
    seen.clear()
    VAEOutlierDetector(epochs=40, trim_fraction=0.0, n_estimators=2, random_state=0).fit(X)
    assert all(k is None for k in seen) and len(chosen) == 2 and chosen[-1] is None
    seen.clear()
    VAEOutlierDetector(epochs=15, n_estimators=2, random_state=0).fit(X)
    assert len(seen) == 15 and all(k is None for k in seen) and len(chosen) == 2


def _resampled_wine(seed):
    """Wine's third cultivar as the anomalies (a tenth of the rows), the rows then drawn
    with replacement up to 1,000 as ADBench does with small sets: each outlier comes
    in several copies."""
    data = load_wine()
    rng = np.random.RandomState(seed)
    normal = np.flatnonzero(data.target != 2)
    anomalies = rng.choice(np.flatnonzero(data.target == 2), len(normal) // 10, replace=False)
    rows = np.r_[normal, anomalies]
    X, y = data.data[rows], (data.target[rows] == 2).astype(int)
    idx = rng.choice(len(X), 1000, replace=True)
    X_tr, X_te, _, y_te = train_test_split(
        X[idx], y[idx], test_size=0.3, stratify=y[idx], random_state=seed
    )
    scaler = MinMaxScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_te


def test_copies_of_an_outlier_are_not_learned_as_normal(monkeypatch):
    """Trimming anew each step lets a network learn a group of copies of an outlier
    (they then explain well and come back in); rows kept from the first check on do
    not."""
    gains = []
    for seed in range(3):
        X_tr, X_te, y = _resampled_wine(seed)
        auc = {}
        for name in ("anew", "kept"):
            with monkeypatch.context() as patch:
                if name == "anew":
                    patch.setattr(_training, "concentrate", lambda *args: None)
                det = VAEOutlierDetector(random_state=0).fit(X_tr)
            auc[name] = roc_auc_score(y, -det.score_samples(X_te))
        gains.append(auc["kept"] - auc["anew"])
    assert min(gains) > 0.0 and np.mean(gains) > 0.03, gains
