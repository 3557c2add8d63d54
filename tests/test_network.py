"""The torch network: trimmed losses, held-out calibration of the decoder variance, one
flat parameter for the optimiser, and batch-independent float32 inference."""

import copy
import math

import numpy as np
import pytest
import torch

from skvae import VAEOutlierDetector
from skvae._network import (
    DECODER_LOGVAR_BOUNDS,
    INIT_DEC_LOGVAR,
    EnsembleLinear,
    VAEEnsemble,
    Workspace,
    chunk_rows,
    flat_parameters,
)


def make_module(n_features=3, n_members=2, decoder_variance="feature"):
    module = VAEEnsemble(
        n_features, 2, (8,), n_members=n_members, decoder_variance=decoder_variance
    )
    module.reset_parameters(torch.Generator().manual_seed(0))
    return module.eval()


def trimmed_mean(values, trim_fraction):
    return (VAEEnsemble.trim_weights(values, trim_fraction) * values).sum(1)


def test_trim_weights_drop_the_largest_values_per_member():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, -1.0, 7.0, 6.0]])
    assert trimmed_mean(values, 0.25).tolist() == pytest.approx([2.0, 10.0 / 3.0])
    assert trimmed_mean(values, 0.0).tolist() == pytest.approx([26.5, 4.25])
    # never fewer than one row
    assert trimmed_mean(values[:, :1], 0.49).tolist() == [1.0, 5.0]


@pytest.mark.parametrize("df", [None, 1.0, 5.0])
def test_log_density_is_the_gaussian_or_student_t_log_density(df):
    module = VAEEnsemble(4, 2, (8,), decoder_df=df)
    gen = torch.Generator().manual_seed(0)
    x, mean = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) * 3
    logvar = torch.randn(1, 1, 4, generator=gen, dtype=torch.float64)
    scale = torch.exp(0.5 * logvar)
    if df is None:
        expected = torch.distributions.Normal(mean, scale).log_prob(x)
    else:
        expected = torch.distributions.StudentT(df, mean, scale).log_prob(x)
    with torch.no_grad():  # the in-place inference branch
        inference = module.log_density(x, mean, logvar)
    torch.testing.assert_close(inference, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module.log_density(x, mean, logvar), expected)
    torch.testing.assert_close(module.log_likelihood(x, mean, logvar), expected.sum(-1))


@pytest.mark.parametrize("decoder_variance", ["feature", "sample"])
@pytest.mark.parametrize("hidden_dims", [(), (8,), (16, 8, 4)])
@pytest.mark.parametrize("beta, trim_fraction", [(1.0, 0.0), (0.5, 0.1), (2.0, 0.5)])
@pytest.mark.parametrize("df", [None, 5.0])
def test_loss_gradient_is_autograd_s(decoder_variance, hidden_dims, beta, trim_fraction, df):
    """The hand-written gradient of the training loss against autograd's, in float64,
    with log-variances beyond their bounds (whose gradient is zero) among them."""
    gen = torch.Generator().manual_seed(len(hidden_dims))
    module = VAEEnsemble(
        5, 3, hidden_dims, n_members=3, decoder_variance=decoder_variance, decoder_df=df
    )
    module.reset_parameters(gen)
    module.double().train()
    with torch.no_grad():
        module.encoder_head.bias[0, 0, -1] = 50.0  # a posterior log-variance beyond 8
        if decoder_variance == "feature":
            module.decoder_logvar[:, 0, 0] = -9.0  # beyond -6
            module.decoder_logvar[:, 0, 1] = 7.0  # beyond 6
        else:
            module.decoder_head.bias[1, 0, -1] = -40.0
    x = torch.randn(3, 40, 5, generator=gen, dtype=torch.float64) * 2.0
    noise = torch.randn(3, 40, 3, generator=gen, dtype=torch.float64)

    nll, kl = module.loss_terms(x, noise)
    weights = VAEEnsemble.trim_weights((nll + beta * kl).detach(), trim_fraction)
    expected_loss = ((nll + beta * kl) * weights).sum(1)
    expected_loss.sum().backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None if p.dim() % 2 else torch.full_like(p, 7.0)  # overwritten either way

    loss, nll_, kl_ = module.loss_gradient(x, noise, beta, trim_fraction)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll_, nll.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl_, kl.detach(), rtol=1e-12, atol=1e-12)
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12, msg=name)
    if decoder_variance == "feature":  # clamped: no gradient, and there was one to drop
        assert module.decoder_logvar.grad[:, 0, :2].abs().max() == 0
    assert expected["encoder_head.weight"].abs().max() > 0


@pytest.mark.parametrize("decoder_variance", ["feature", "sample"])
@pytest.mark.parametrize("df", [None, 4.0])
def test_loss_gradient_with_missing_values_is_autograd_s(decoder_variance, df):
    """With missing values the likelihood covers the observed ones (weighted by
    observed_weights) and the encoder sees them and their mask: autograd agrees."""
    gen = torch.Generator().manual_seed(3)
    module = VAEEnsemble(
        5, 3, (8,), n_members=2, decoder_variance=decoder_variance, decoder_df=df, mask_input=True
    )
    module.reset_parameters(gen)
    module.double().train()
    x = torch.randn(2, 30, 5, generator=gen, dtype=torch.float64)
    mask = (torch.rand(x.shape, generator=gen) > 0.3).double()
    mask[:, :, 0] = 1.0  # every row has an observed value
    x = x * mask  # missing values arrive as 0
    noise = torch.randn(2, 30, 3, generator=gen, dtype=torch.float64)

    mu, logvar = module.encode(x, mask=mask)
    mean, dec_logvar = module.decode(mu + torch.exp(0.5 * logvar) * noise)
    density = module.log_density(x, mean, dec_logvar) * module.observed_weights(mask)
    nll, kl = -density.sum(-1), module.kl_divergence(mu, logvar)
    weights = VAEEnsemble.trim_weights((nll + kl).detach(), 0.1)
    expected_loss = ((nll + kl) * weights).sum(1)
    expected_loss.sum().backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}

    loss, nll_, _ = module.loss_gradient(x, noise, 1.0, 0.1, mask)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll_, nll.detach(), rtol=1e-12, atol=1e-12)
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12, msg=name)
    # the encoder's mask inputs got a gradient: it learns from which values are there
    assert module.encoder_layers[0].weight.grad[:, 5:].abs().max() > 0


def test_loss_gradient_over_kept_rows_is_autograd_s():
    """With ``kept`` the loss is each member's mean over its kept rows (0 with none),
    whatever ``trim_fraction`` says; the gradient is autograd's."""
    gen = torch.Generator().manual_seed(4)
    module = VAEEnsemble(5, 3, (8,), n_members=3, decoder_df=5.0)
    module.reset_parameters(gen)
    module.double().train()
    x = torch.randn(3, 30, 5, generator=gen, dtype=torch.float64)
    noise = torch.randn(3, 30, 3, generator=gen, dtype=torch.float64)
    kept = torch.rand(3, 30, generator=gen) > 0.4
    kept[2] = False  # a member with no kept row in this batch

    nll, kl = module.loss_terms(x, noise)
    weights = kept.double() / kept.sum(1, keepdim=True).clamp_min(1)
    expected_loss = ((nll + kl) * weights).sum(1)
    expected_loss.sum().backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}

    loss, _, _ = module.loss_gradient(x, noise, 1.0, 0.3, kept=kept)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-12)
    assert loss[2] == 0
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12, msg=name)
        assert p.grad[2].abs().max() == 0, name  # no kept row: no gradient


def test_missing_values_leave_complete_rows_alone_and_keep_one_scale():
    module = make_module().double().eval()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        complete = module.scores(x, "elbo")
        features, latent = module.score_terms(x, "elbo")
        partial = x.clone()
        partial[0, 1] = partial[3, :2] = float("nan")
        terms, latent_nan = module.score_terms(partial, "elbo")
        scores = module.scores(partial, "elbo")
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores[[1, 2, 4, 5]], complete[[1, 2, 4, 5]], rtol=0, atol=0)
    assert (terms[:, 0, 1] == 0).all() and (terms[:, 3, :2] == 0).all()
    # a row's observed terms count n_features / n_observed times
    x_seen = x.clone()
    x_seen[0, 1] = 0.0  # what the encoder sees in place of the missing value
    f0, _ = module.score_terms(x_seen[:1], "elbo")
    torch.testing.assert_close(terms[:, 0, [0, 2]], f0[:, 0, [0, 2]] * 1.5)


def test_loss_gradient_takes_one_batch_per_member():
    module = make_module().train()
    with pytest.raises(ValueError, match="one batch per member"):
        module.loss_gradient(torch.zeros(4, 3), torch.zeros(2, 4, 2), 1.0, 0.1)


def held_out_logvar(module, x, keep_rows):
    with torch.no_grad():
        mean, _ = module.decode(module.encode(x)[0])
        residual = (x - mean[:, keep_rows]).square().mean(1, keepdim=True)
    return torch.log(residual).clamp(*DECODER_LOGVAR_BOUNDS)


def test_calibration_raises_an_overconfident_decoder_variance():
    module = make_module()
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        module.decoder_logvar.fill_(-5.0)
    module.calibrate_decoder_variance(x, 0.0)
    expected = held_out_logvar(module, x, slice(None))
    assert (expected > -5.0).all()
    torch.testing.assert_close(module.decoder_logvar, expected)


def test_calibration_never_lowers_the_variance():
    module = make_module()
    x = 0.01 * torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        module.decoder_logvar.fill_(3.0)
    module.calibrate_decoder_variance(x, 0.1)
    assert (module.decoder_logvar == 3.0).all()


def test_calibration_leaves_out_the_worst_explained_rows():
    module = make_module(n_members=1)
    x = 0.1 * torch.randn(20, 3, generator=torch.Generator().manual_seed(2))
    x[7] = 50.0  # far away: the worst explained row
    with torch.no_grad():
        module.decoder_logvar.fill_(DECODER_LOGVAR_BOUNDS[0])
    module.calibrate_decoder_variance(x, 0.05)  # drops round(0.05 * 20) = 1 row
    rest = [i for i in range(20) if i != 7]
    expected = held_out_logvar(module, x[rest], slice(None))
    torch.testing.assert_close(module.decoder_logvar, expected)
    assert (module.decoder_logvar < math.log(50.0**2) - 1).all()


def test_calibration_skips_per_sample_variances_and_single_rows():
    per_sample = make_module(decoder_variance="sample")
    before = {k: v.clone() for k, v in per_sample.state_dict().items()}
    per_sample.calibrate_decoder_variance(torch.randn(30, 3), 0.1)
    for key, value in per_sample.state_dict().items():
        assert torch.equal(value, before[key]), key
    module = make_module()
    module.calibrate_decoder_variance(torch.randn(1, 3), 0.1)
    assert torch.equal(
        module.decoder_logvar, torch.full_like(module.decoder_logvar, INIT_DEC_LOGVAR)
    )


@pytest.mark.parametrize("n_features", [3, 20, 33])
def test_float32_scores_do_not_depend_on_the_batch(monkeypatch, n_features):
    # narrow layers (a latent head of 2k < 8 columns, a decoder head of 3 or 33) are
    # where the CPU's kernels would otherwise vectorise over rows
    import skvae._network as network

    monkeypatch.setattr(network, "CHUNK_ROWS", 64)  # several chunks and a padded last one
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, n_features))
    det = VAEOutlierDetector(epochs=3, n_estimators=3, random_state=0).fit(X)
    assert next(det.module_.parameters()).dtype == torch.float32
    full = det.score_samples(X)
    for idx in (np.arange(300)[::-1], rng.permutation(300), np.array([7]), np.arange(61, 139)):
        np.testing.assert_array_equal(det.score_samples(X[idx]), full[idx])
    tensor = det.score_samples(torch.as_tensor(X[::-1].copy()))
    np.testing.assert_array_equal(tensor.double().numpy(), full[::-1])


@pytest.mark.parametrize("decoder_variance", ["feature", "sample"])
@pytest.mark.parametrize("df", [None, 5.0])
def test_a_workspace_kept_across_steps_gives_what_fresh_buffers_give(decoder_variance, df):
    """loss_gradient with one workspace over batches of changing shapes (a last partial
    batch, then full ones again) writes the gradient and returns the losses that it
    does without one, to the bit, and reuses its buffers while the shape holds."""
    module = VAEEnsemble(6, 2, (8,), n_members=3, decoder_variance=decoder_variance, decoder_df=df)
    module.reset_parameters(torch.Generator().manual_seed(0))
    module.train()
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    gen = torch.Generator().manual_seed(1)
    workspace = Workspace()
    pointers, returned = [], []
    for rows in (16, 10, 16, 16):
        x = torch.randn(3, rows, 6, generator=gen)
        noise = torch.randn(3, rows, 2, generator=gen)
        fresh = module.loss_gradient(x, noise, 1.0, 0.1)
        fresh_grads = [p.grad.clone() for p in module.parameters()]
        kept = module.loss_gradient(x, noise, 1.0, 0.1, None, workspace)
        for a, b in zip(fresh, kept):
            assert torch.equal(a, b)
        for a, p in zip(fresh_grads, module.parameters()):
            assert torch.equal(a, p.grad)
        pointers.append(workspace("residual", (3, rows, 6), x).data_ptr())
        returned.append((fresh, kept))
    assert pointers[2] == pointers[3]  # the same shape: the same buffer
    for fresh, kept in returned:  # what a call returned is its own, not a buffer
        for a, b in zip(fresh, kept):
            assert torch.equal(a, b)


def test_wide_networks_score_in_chunks_that_fit_the_cpu_chunk_bytes(monkeypatch):
    """On the CPU a chunk's widest intermediate (members, rows, features) stays within
    CPU_CHUNK_BYTES, the rows a power of two; narrow networks keep CHUNK_ROWS. Scores
    still do not depend on the batch."""
    import skvae._network as network

    narrow = VAEEnsemble(20, 4, (64, 32), n_members=5)
    assert chunk_rows(narrow) == network.CHUNK_ROWS
    for n_features, variance in [(1000, "feature"), (1000, "sample"), (300, "feature")]:
        wide = VAEEnsemble(n_features, 8, (64, 32), n_members=5, decoder_variance=variance)
        rows = chunk_rows(wide)
        widest = 5 * n_features * (2 if variance == "sample" else 1) * 4  # float32 bytes
        assert rows & (rows - 1) == 0 and rows < network.CHUNK_ROWS
        assert rows * widest <= network.CPU_CHUNK_BYTES < 2 * rows * widest
        assert chunk_rows(wide.double()) == rows // 2
    # 32-row chunks: 5 members x the 64-wide hidden layer (wider than 50 features)
    monkeypatch.setattr(network, "CPU_CHUNK_BYTES", 2**16)
    rng = np.random.RandomState(0)
    X = rng.normal(size=(150, 50))
    det = VAEOutlierDetector(epochs=2, n_estimators=5, random_state=0).fit(X)
    assert chunk_rows(det.module_) == 32
    full = det.score_samples(X)
    for idx in (np.arange(150)[::-1], np.array([7]), np.arange(61, 139)):
        np.testing.assert_array_equal(det.score_samples(X[idx]), full[idx])


@pytest.mark.parametrize("score_type", ["elbo", "reconstruction_probability"])
def test_row_bytes_bounds_what_a_pass_holds(score_type):
    """row_bytes (which sizes passes under working_memory) is at least the float64
    layer outputs one row needs, and not a multiple of them: the reconstruction
    probability's draws are taken one at a time, so they do not count."""
    from sklearn.utils._chunking import get_chunk_n_rows

    import skvae._network as network
    from skvae._estimator import default_hidden_dims, default_latent_dim

    d, rows = 20, 100
    net = VAEEnsemble(d, default_latent_dim(d), default_hidden_dims(d), 5, 10).double().eval()
    per_call = []  # bytes of the layer outputs of each decoder call and the encoder
    for layer in net.modules():
        if isinstance(layer, EnsembleLinear):
            layer.register_forward_hook(
                lambda _, __, out: per_call.append(out.numel() * out.element_size())
            )
    with torch.inference_mode():
        net.scores(torch.randn(rows, d, dtype=torch.float64), score_type)
    n_layers = sum(isinstance(m, EnsembleLinear) for m in net.modules())
    held = sum(per_call[:n_layers]) / rows  # one pass through every layer
    assert held <= net.row_bytes() <= 2 * held
    # so at scikit-learn's default working memory (1 GiB) both devices take full passes
    assert get_chunk_n_rows(net.row_bytes(), max_n_rows=network.CUDA_CHUNK_ROWS) == (
        network.CUDA_CHUNK_ROWS
    )
    assert network.chunk_rows(net) == network.CHUNK_ROWS


def test_layer_outputs_are_aligned_only_in_eval_mode_outside_autograd():
    layer = EnsembleLinear(2, 4, 5)
    layer.reset_parameters(torch.Generator().manual_seed(0))
    layer.eval()
    x = torch.randn(2, 7, 4)
    with torch.no_grad():
        padded = layer(x)
    assert padded.shape == (2, 7, 5) and padded.stride()[-2] == 8  # a view of 8 columns
    differentiable = layer(x)
    assert differentiable.is_contiguous() and differentiable.requires_grad
    layer.train()
    with torch.no_grad():  # training (the hand-written gradient): not padded
        trained = layer(x)
    assert trained.is_contiguous()
    for out in (differentiable, trained):
        torch.testing.assert_close(padded, out.detach())


def test_rows_that_overflow_float32_are_scored_in_float64():
    # a finite weight can be beyond what float32 arithmetic survives (a tampered file
    # with consistent checksums, or a diverged fit); float64 scores those rows
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 4))
    det = VAEOutlierDetector(epochs=3, hidden_dims=(8, 4), device="cpu", random_state=0).fit(X)
    with torch.no_grad():
        det.module_.encoder_layers[1].weight[0, 0, 0] = 4e37
    wide = copy.deepcopy(det)
    wide.module_.to(torch.float64)
    module = det.module_
    with torch.no_grad():
        plain = module.scores(module.scale_input(torch.from_numpy(X)).float(), det.score_type)
    bad = ~torch.isfinite(plain).numpy()
    assert bad.any() and (~bad).any()

    scores, exact = det.score_samples(X), wide.score_samples(X)
    assert np.isfinite(scores).all() and np.abs(scores[bad]).max() > 1e38
    np.testing.assert_array_equal(scores[bad], exact[bad])
    np.testing.assert_allclose(scores[~bad], plain.double().numpy()[~bad], rtol=1e-5)
    np.testing.assert_array_equal(det.score_samples(X[::-1]), scores[::-1])
    with pytest.raises(ValueError, match="Non-finite scores"):  # a float32 tensor out
        det.score_samples(torch.from_numpy(X))
    # every inference path: the contributions still add up to the score, row by row
    contributions, latent = det.feature_contributions(X, return_latent=True)
    assert np.isfinite(contributions).all()
    np.testing.assert_allclose(contributions.sum(1) + latent, scores, rtol=1e-6)
    assert np.isfinite(det.encode(X)[0]).all()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_on_the_flat_parameter_takes_the_per_parameter_steps(weight_decay):
    per_parameter, flat_module = make_module(n_features=4), make_module(n_features=4)
    per_parameter.train(), flat_module.train()
    batches = torch.randn(6, 2, 16, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(6, 2, 16, 2, generator=torch.Generator().manual_seed(2))

    def loss(module, i):
        nll, kl = module.loss_terms(batches[i], noise[i])
        return (nll + kl).mean(1).sum()

    adam = torch.optim.Adam(per_parameter.parameters(), lr=1e-2, weight_decay=weight_decay)
    for i in range(len(batches)):
        adam.zero_grad()
        loss(per_parameter, i).backward()
        adam.step()
    with flat_parameters(flat_module) as flat:
        adam = torch.optim.Adam([flat], lr=1e-2, weight_decay=weight_decay)
        for i in range(len(batches)):
            flat.grad.zero_()
            loss(flat_module, i).backward()
            assert flat.grad.abs().sum() > 0
            adam.step()
    initial = make_module(n_features=4)
    for (name, a), b in zip(per_parameter.named_parameters(), flat_module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(b, initial.get_parameter(name))  # it was trained
        # each parameter owns its storage again, without a gradient
        assert b.grad is None and b.untyped_storage().nbytes() == b.numel() * b.element_size()
