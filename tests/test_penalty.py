"""Reward penalties and the torch-native scoring path, on Hopper-v5 transitions (and on
synthetic ones where the test must run without MuJoCo)."""

import numpy as np
import pytest
import torch
from gormpo_reference import gormpo_penalty
from sklearn.metrics import roc_auc_score

from skvae import VAEOutlierDetector
from skvae.datasets import make_features, split_indices
from skvae.penalty import RewardPenalty


@pytest.fixture(scope="module")
def rl_model(hopper):
    data = hopper["linear"]
    train, _, test = split_indices(data, 0.1, 0.2)
    X = make_features(data)
    det = VAEOutlierDetector(max_samples=1.0, epochs=40, random_state=0).fit(X[train])
    return det, X[test], make_features(hopper["uniform"])


def test_penalty_higher_on_other_policy(rl_model):
    det, X_in, X_out = rl_model
    for kind in ["hinge", "hinge_tanh", "softplus", "nll", "tanh", "linear", "inverse"]:
        pen = RewardPenalty(det, kind=kind)
        p_in, p_out = pen.penalty(X_in), pen.penalty(X_out)
        assert p_out.mean() > p_in.mean(), kind
        y = np.r_[np.zeros(len(p_in)), np.ones(len(p_out))]
        assert roc_auc_score(y, np.r_[p_in, p_out]) > 0.9, kind


def test_threshold_and_scores_share_units(rl_model):
    det, X_in, _ = rl_model
    pen = RewardPenalty(det)
    assert pen.thr_ == pytest.approx((det.offset_ - det.score_mean_) / det.score_std_)
    # the fraction of training rows below the normalised threshold is the contamination
    s_train = (-det.decision_scores_ - det.score_mean_) / det.score_std_
    assert np.mean(s_train < pen.thr_) == pytest.approx(det.contamination, abs=0.01)
    s = pen.normalized_scores(X_in)
    np.testing.assert_allclose(s, (det.score_samples(X_in) - det.score_mean_) / det.score_std_)


def test_penalty_shapes_and_kinds(rl_model):
    det, X_in, X_out = rl_model
    X = np.r_[X_in[:50], X_out[:50]]
    s = RewardPenalty(det).normalized_scores(X)
    t = RewardPenalty(det).thr_
    lin = RewardPenalty(det, "hinge", scale=2.0).penalty(X)
    np.testing.assert_allclose(lin, np.maximum(0, 2.0 * (t - s)))
    hinge_tanh = RewardPenalty(det, "hinge_tanh").penalty(X)
    np.testing.assert_allclose(hinge_tanh, np.tanh(np.maximum(0, t - s)))
    np.testing.assert_allclose(RewardPenalty(det, "softplus").penalty(X), np.logaddexp(0, t - s))
    np.testing.assert_allclose(RewardPenalty(det, "nll").penalty(X), -s)
    r = np.ones(100)
    pen = RewardPenalty(det, "hinge", coef=0.5)
    np.testing.assert_allclose(pen.penalize(r, X), r - 0.5 * pen.penalty(X))
    assert pen.penalize(r[:, None], X).shape == (100, 1)
    with pytest.raises(ValueError, match="kind"):
        RewardPenalty(det, kind="quadratic")
    with pytest.raises(ValueError, match="fitted"):
        RewardPenalty(VAEOutlierDetector())


def test_torch_scoring_path_matches_numpy(rl_model):
    det, X_in, _ = rl_model
    t = torch.as_tensor(X_in[:300])
    s_t = det.score_samples(t)
    assert isinstance(s_t, torch.Tensor) and s_t.device == t.device
    np.testing.assert_allclose(s_t.numpy(), det.score_samples(X_in[:300]), rtol=1e-10)
    pen = RewardPenalty(det, "tanh")
    rewards = torch.ones(300, dtype=torch.float32)
    out = pen.penalize(rewards, t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), 1 - pen.penalty(X_in[:300]), atol=1e-6)


def test_torch_scoring_bad_input(rl_model):
    det, X_in, _ = rl_model
    with pytest.raises(ValueError, match="features"):
        det.score_samples(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="2D"):
        det.score_samples(torch.zeros(14))
    with pytest.warns(UserWarning, match="every value missing"):
        assert torch.isfinite(det.score_samples(torch.full((2, 14), float("nan")))).all()
    with pytest.raises(ValueError, match="infinity"):
        det.score_samples(torch.full((2, 14), float("inf")))
    with pytest.raises(ValueError, match="0 sample"):
        det.score_samples(torch.zeros(0, 14))


def _on(device: str, det):
    """A copy of CPU-fitted ``det`` with its network on ``device`` (the same weights)."""
    import copy

    moved = copy.deepcopy(det)
    moved.module_.to(device, torch.float32)
    moved.device_ = torch.device(device)
    return moved


def _check_scores_and_penalties_on(device: str) -> None:
    """Rollouts already on ``device``: scores, penalties and penalised rewards stay there
    and equal the CPU's from numpy. (Synthetic transitions: GPU machines lack MuJoCo.)"""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(1200, 14)) @ rng.normal(size=(14, 14))
    X[1000:1050] += 6.0  # some far from the training rows
    det = VAEOutlierDetector(epochs=20, device="cpu", random_state=0).fit(X[:1000])
    moved, rows = _on(device, det), X[1000:]
    t = torch.as_tensor(rows, device=device)
    scores = moved.score_samples(t)
    assert scores.device.type == device
    np.testing.assert_allclose(scores.cpu().numpy(), det.score_samples(rows), rtol=1e-4)
    rewards = torch.ones(len(rows), 1, device=device)
    for kind in ["hinge", "tanh", "linear", "inverse", "nll"]:
        on_device, on_cpu = RewardPenalty(moved, kind=kind), RewardPenalty(det, kind=kind)
        p = on_device.penalty(t)
        assert p.device.type == device and bool(torch.isfinite(p).all())
        expected = on_cpu.penalty(rows)
        np.testing.assert_allclose(p.cpu().numpy(), expected, rtol=1e-4, atol=1e-4)
        penalised = on_device.penalize(rewards, t)
        assert penalised.device.type == device and penalised.shape == rewards.shape
    assert float(RewardPenalty(moved, kind="tanh").penalty(t)[:50].mean()) > float(
        RewardPenalty(moved, kind="tanh").penalty(t)[50:].mean()
    )
    # rows with missing values (NaN) are penalised on what they hold, on the device too
    holes = rows.copy()
    holes[rng.rand(*holes.shape) < 0.2] = np.nan
    holes[np.isnan(holes).all(1), 0] = 0.0
    pen = RewardPenalty(moved, kind="tanh").penalty(torch.as_tensor(holes, device=device))
    assert bool(torch.isfinite(pen).all())
    expected = RewardPenalty(det, kind="tanh").penalty(holes)
    np.testing.assert_allclose(pen.cpu().numpy(), expected, rtol=1e-4, atol=1e-4)
    penalised = RewardPenalty(det, kind="tanh").penalize(np.ones(len(holes)), holes)
    assert np.isfinite(penalised).all()


def test_scores_and_penalties_of_tensors_on_the_cpu():
    _check_scores_and_penalties_on("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scores_and_penalties_of_tensors_on_cuda():
    _check_scores_and_penalties_on("cuda")


@pytest.mark.parametrize("kind", ["tanh", "linear", "inverse", "tanh_reg"])
def test_offline_rl_kinds_are_the_offline_rl_formulas(rl_model, kind):
    det, X_in, X_out = rl_model
    X = np.r_[X_in[:200], X_out[:200]]
    pen = RewardPenalty(det, kind=kind)
    s = pen.normalized_scores(X)
    expected = gormpo_penalty(kind, s, pen.thr_)
    np.testing.assert_allclose(pen.penalty(X), expected, rtol=1e-12, atol=1e-12)
    # the torch path (rollouts already in torch) gives the same numbers
    # (in the float32 of the network's tensor scores: the inverse kind divides by a
    # difference of scores, which can cost float32 a few more digits than its 6e-8)
    got = pen.penalty(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    for thr in (-3.0, 0.5):  # a threshold swept by hand
        pen = RewardPenalty(det, kind=kind, thr=thr)
        np.testing.assert_allclose(pen.penalty(X), gormpo_penalty(kind, s, thr), rtol=1e-12)


def test_penalty_accepts_a_compat_model_and_refuses_bad_thresholds(rl_model):
    from skvae.compat import VAE

    det, X_in, _ = rl_model
    model = VAE(det.n_features_in_, det.latent_dim_, list(det.hidden_dims_))
    model._adopt(det)
    np.testing.assert_array_equal(
        RewardPenalty(model).penalty(X_in), RewardPenalty(det).penalty(X_in)
    )
    with pytest.raises(ValueError, match="finite"):
        RewardPenalty(det, thr=float("nan"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coef": float("nan")}, "coef must be a finite number"),
        ({"coef": "large"}, "coef must be a finite number"),
        ({"coef": 10**400}, "coef must be a finite number"),  # beyond float: not Overflow
        ({"scale": float("inf")}, "scale must be a finite number"),
        ({"scale": -1.0, "kind": "hinge"}, "scale must be positive"),
        ({"scale": 0.0}, "scale must be positive"),
    ],
)
def test_coefficients_that_would_give_nan_or_reversed_penalties_are_refused(
    rl_model, kwargs, match
):
    det, _, _ = rl_model
    with pytest.raises(ValueError, match=match):
        RewardPenalty(det, **kwargs)


def test_penalize_names_a_rewards_length_mismatch(rl_model):
    det, X_in, _ = rl_model
    pen = RewardPenalty(det)
    X = X_in[:4]
    for rewards in (np.ones(3), torch.ones(5, 1)):
        with pytest.raises(ValueError, match=r"rewards has \d values but X has 4 rows"):
            pen.penalize(rewards, X)
    assert pen.penalize(np.ones((4, 1)), X).shape == (4, 1)
    assert pen.penalize(torch.ones(4), torch.as_tensor(X)).shape == (4,)


def test_penalize_keeps_float_rewards_dtype_and_does_not_truncate_integers(rl_model):
    det, X_in, _ = rl_model
    pen = RewardPenalty(det, "hinge", coef=0.5)
    X = X_in[:20]
    assert pen.penalize(np.ones(20, np.float32), X).dtype == np.float32
    assert pen.penalize(torch.ones(20, dtype=torch.float32), X).dtype == torch.float32
    ints = np.full(20, -171)
    p = pen.penalty(X)
    np.testing.assert_allclose(pen.penalize(ints, X), -171 - 0.5 * p)
    np.testing.assert_allclose(pen.penalize(torch.as_tensor(ints), X).numpy(), -171 - 0.5 * p)


def test_inverse_penalty_is_never_infinite(rl_model):
    det, X_in, _ = rl_model
    for thr in (80.0, 800.0):
        pen = RewardPenalty(det, "inverse", thr=thr)
        s = np.array([-1e6, 0.0, thr + 1])
        assert np.isfinite(pen.from_normalized(s)).all()
        for dtype in (torch.float32, torch.float64):
            assert torch.isfinite(pen.from_normalized(torch.as_tensor(s, dtype=dtype))).all()
