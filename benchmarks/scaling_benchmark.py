"""Throughput and memory as the data grows: skvae against PyOD's VAE, in one run.

For n = 1e4, 1e5, 1e6 rows of d = 20 features (a correlated Gaussian), each
measurement runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own:

- ``fit``: skvae's default fit (a 5-member ensemble on 128-row subsamples, so its cost
  does not grow with n), skvae with ``max_samples=1.0, n_estimators=1`` (every row, as
  for density modelling: seconds per epoch), PyOD's VAE with ``epoch_num=1`` (seconds
  per epoch at its defaults);
- ``score``: rows/second of skvae's ``score_samples`` (``precision='auto'``, float32
  in fixed-shape chunks, and ``'float64'``; and on a torch tensor, the path a
  model-based RL rollout uses) and of PyOD VAE's ``decision_function``;
- ``share``: ``score_samples`` and the large matrix product alternating in one
  process, seven rounds: the median share of the GEMM rate (in the network's FLOPs);
  in the same rounds, the share of the network's own matrix products alone and of
  ``floor_pass``, the fewest eager operations that compute the same scores from
  scaled rows (a bound on what any eager implementation of this network reaches);
- ``ceiling``: the float32 matrix-product rate of this machine at a large shape
  (4096 x 512 by 512 x 512) turned into rows/second of the default network (its FLOPs
  per row), and the rate its own GEMM shapes reach alone, chunk by chunk, without the
  element-wise work.

``--memory`` instead scores 1e5, 1e6 and 1e7 rows and reports peak RSS minus the input
array, which stays flat when scoring memory is O(chunk), not O(n).

Example::

    python benchmarks/scaling_benchmark.py --out benchmarks/output/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

D = 20
REPEATS = 3


def make_data(n: int, seed: int = 0) -> np.ndarray:
    """A correlated Gaussian, generated in chunks so that the peak memory is the array."""
    rng = np.random.RandomState(seed)
    cov = 0.5 * np.ones((D, D)) + 0.5 * np.eye(D)
    factor = np.linalg.cholesky(cov)
    X = np.empty((n, D))
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        X[start:stop] = rng.standard_normal((stop - start, D)) @ factor.T
    return X


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case: str, n: int, device: str) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from skvae import VAEOutlierDetector

    out: dict = {"case": case, "n": n}
    if case.startswith("score") or case in ("ceiling", "share"):
        train = make_data(20000, seed=1)
        X = make_data(n)
        if case == "score_pyod_vae":
            from pyod.models.vae import VAE

            det = VAE(verbose=0, epoch_num=1, device=device).fit(train)
            det.decision_function(X[:1000])
            method = det.decision_function
        else:
            precision = "float64" if case == "score_skvae_float64" else "auto"
            det = VAEOutlierDetector(
                epochs=2, precision=precision, device=device, random_state=0
            ).fit(train)
            det.score_samples(X[:4096])
            if case == "ceiling":
                out.update(gemm_ceiling(det, n))
                return out
            if case == "share":
                out.update(gemm_share(det, X))
                return out
            method = det.score_samples
            if case == "score_skvae_torch":  # tensors in, tensor out: no numpy round trip
                X = torch.from_numpy(X)
        base_rss = peak_rss_mb()
        times = []
        for _ in range(REPEATS):  # the median of a few passes: the first pays page faults
            t = time.perf_counter()
            method(X)
            times.append(time.perf_counter() - t)
        seconds = float(np.median(times))
        out["rows_per_second"] = n / seconds
        out["seconds"] = seconds
        out["input_mb"] = n * D * 8 / 2**20
        out["peak_rss_mb"] = peak_rss_mb()
        out["peak_rss_minus_input_mb"] = out["peak_rss_mb"] - out["input_mb"]
        out["rss_before_scoring_mb"] = base_rss
        out["scoring_adds_mb"] = out["peak_rss_mb"] - base_rss
        return out

    X = make_data(n)
    warm = make_data(500, seed=2)  # first calls pay one-off costs: pay them outside the timing
    if case == "fit_pyod_vae":
        from pyod.models.vae import VAE

        VAE(verbose=0, epoch_num=1, device=device).fit(warm)
        det = VAE(verbose=0, epoch_num=1, device=device)
        t = time.perf_counter()
        det.fit(X)
        out["seconds_per_epoch"] = time.perf_counter() - t
    elif case == "fit_skvae_default":
        VAEOutlierDetector(epochs=2, device=device, n_jobs=-1).fit(warm)
        det = VAEOutlierDetector(device=device, n_jobs=-1, random_state=0)
        t = time.perf_counter()
        det.fit(X)
        out["seconds"] = time.perf_counter() - t
        out["epochs"] = det.n_epochs_
    elif case == "fit_skvae_all_rows":
        VAEOutlierDetector(epochs=2, max_samples=1.0, n_estimators=1, device=device, n_jobs=-1).fit(
            warm
        )
        det = VAEOutlierDetector(
            max_samples=1.0,
            n_estimators=1,
            epochs=1,
            validation_fraction=0.0,
            device=device,
            n_jobs=-1,
            random_state=0,
        )
        t = time.perf_counter()
        det.fit(X)
        out["seconds_per_epoch"] = time.perf_counter() - t
    else:
        raise ValueError(case)
    out["peak_rss_mb"] = peak_rss_mb()
    out["torch_threads"] = torch.get_num_threads()
    return out


def network_layers(net) -> list:
    """Every affine map of a posterior-mean ELBO pass, in order."""
    return [*net.encoder_layers, net.encoder_head, *net.decoder_layers, net.decoder_head]


def padded_layers(net) -> list:
    """Each affine map's weight and bias as skvae scores with them (output columns padded
    to its alignment, which it does only outside autograd)."""
    import torch

    with torch.inference_mode():
        return [layer._padded()[:2] for layer in network_layers(net)]


def flops_per_row(net) -> int:
    """Matrix-product FLOPs one row costs in a posterior-mean ELBO pass of ``net``."""
    return sum(2 * la.in_features * la.out_features * la.n_members for la in network_layers(net))


def large_gemm_flops(repeats: int = 20) -> float:
    """FLOP/s of ``repeats`` float32 4096x512 by 512x512 matrix products."""
    import torch

    a, b = torch.randn(4096, 512), torch.randn(512, 512)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return repeats * 2 * 4096 * 512 * 512 / (time.perf_counter() - t)


def gemm_ceiling(det, n: int) -> dict:
    """Rows/second the float32 matrix-product rate at a large shape allows the network,
    and rows/second of the network's own matrix multiplies alone, chunk by chunk."""
    import torch

    from skvae._network import CHUNK_ROWS as SCORE_CHUNK

    net = det.module_
    dtype = next(net.parameters()).dtype
    first, *rest = network_layers(net)
    members = net.n_members
    xs = [torch.randn(members, SCORE_CHUNK, la.in_features, dtype=dtype) for la in rest]
    ws = [torch.randn(members, la.in_features, la.out_features, dtype=dtype) for la in rest]
    x0 = torch.randn(SCORE_CHUNK, first.in_features, dtype=dtype)  # shared by the members
    w0 = torch.randn(first.in_features, first.out_features * members, dtype=dtype)
    reps = max(1, n // SCORE_CHUNK)
    with torch.inference_mode():
        for _ in range(3):
            torch.mm(x0, w0)
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(x0, w0)
            for x, w in zip(xs, ws):
                torch.bmm(x, w)
        seconds = time.perf_counter() - t
        large_gemm_flops(3)  # warm-up
        large_flops = float(np.median([large_gemm_flops() for _ in range(5)]))
    rows = reps * SCORE_CHUNK
    flops = flops_per_row(net)
    return {
        "dtype": str(dtype),
        "flops_per_row": flops,
        "gemm_gflops": flops * rows / seconds / 1e9,
        "ceiling_rows_per_second": rows / seconds,
        "large_gemm_gflops_float32": large_flops / 1e9,
        "hardware_rows_per_second": large_flops / flops,
    }


def floor_pass(net):
    """The fewest eager operations that give the default score (the posterior-mean
    ELBO) of already scaled rows: a function of one chunk (chunk rows, features) of
    scaled float32 rows to the ensemble's scores of those rows.

    It keeps what a score needs, the network's own affine maps with their biases (output
    columns padded as in skvae), ReLU, the encoder's clip, the KL term and the
    per-feature log-density, and leaves out everything else: input scaling and
    validation, copies to and from NumPy, the fallback for rows that overflow, fresh
    allocations (every output has its buffer), and the log-density's per-feature
    constants and scales, which it folds into per-member terms computed once. The
    element-wise work left is one subtraction, one square, one multiplication and one
    logarithm per feature and member, a ReLU per hidden unit and a few operations per
    latent unit.
    """
    import torch

    from skvae._network import CHUNK_ROWS as SCORE_CHUNK
    from skvae._network import (
        CLIP,
        DECODER_LOGVAR_BOUNDS,
        ENCODER_LOGVAR_BOUNDS,
        LOG_2PI,
        _t_constant,
    )

    df = net.config["decoder_df"]
    latent = net.latent_dim
    padded = padded_layers(net)
    with torch.inference_mode():
        logvar = net.decoder_logvar.clamp(*DECODER_LOGVAR_BOUNDS)  # (members, 1, features)
        if df is None:
            precision, factor = torch.exp(-logvar), -0.5
            constant = (-0.5 * (logvar + LOG_2PI)).sum(-1)
        else:
            precision, factor = torch.exp(-logvar) / df, -0.5 * (df + 1.0)
            constant = (-0.5 * logvar + _t_constant(df)).sum(-1)
        constant = constant + 0.5 * latent  # the KL's -1 per latent unit, with its sign
    members, n_encoder = net.n_members, len(net.encoder_layers) + 1
    outs = [torch.empty(members, SCORE_CHUNK, w.shape[-1], dtype=w.dtype) for w, _ in padded]
    residual = torch.empty(members, SCORE_CHUNK, net.config["n_features"], dtype=outs[0].dtype)
    clipped = torch.empty(SCORE_CHUNK, net.config["n_features"], dtype=outs[0].dtype)
    clip = (net.target_clip or 0.0) > CLIP

    def scores(x):
        h = torch.clamp(x, -CLIP, CLIP, out=clipped) if clip else x
        h = h.expand(members, *h.shape)
        for i, ((weight, bias), out) in enumerate(zip(padded, outs)):
            h = torch.baddbmm(bias, h, weight, out=out)
            if i == n_encoder - 1:  # the encoder's head: the posterior's mean and log-variance
                mu, lv = h[..., :latent], h[..., latent : 2 * latent]
                lv = lv.clamp(*ENCODER_LOGVAR_BOUNDS)
                kl = (mu.square() + lv.exp() - lv).sum(-1)
                h = mu
            elif i < len(padded) - 1:
                h = h.relu_()
        mean = h[..., : residual.shape[-1]]
        q = torch.sub(x, mean, out=residual).square_().mul_(precision)
        log_terms = q if df is None else q.log1p_()
        member = log_terms.sum(-1).mul_(factor).add_(constant).sub_(kl.mul_(0.5))
        return member.mean(0)

    return scores


def gemm_share(det, X: np.ndarray, rounds: int = 7) -> dict:
    """``score_samples`` against the large float32 matrix product, alternating in one
    process (this machine's speed drifts): the median share of the GEMM rate, in
    FLOPs of the fitted network; in the same rounds, the share that the network's own
    matrix products alone reach (with its biases, on buffers that are reused) and the
    share of :func:`floor_pass` on the same rows, already scaled."""
    import torch

    from skvae._network import CHUNK_ROWS as SCORE_CHUNK

    net = det.module_
    flops = flops_per_row(net)
    floor = floor_pass(net)
    chunks = max(1, len(X) // SCORE_CHUNK)
    with torch.inference_mode():
        scaled = net.scale_input(torch.from_numpy(X[: chunks * SCORE_CHUNK]))
        scaled = list(scaled.to(torch.float32).split(SCORE_CHUNK))
        layers = padded_layers(net)
        inputs = [torch.randn(net.n_members, SCORE_CHUNK, w.shape[-2]) for w, _ in layers]
        outs = [torch.empty(net.n_members, SCORE_CHUNK, w.shape[-1]) for w, _ in layers]

    def products():
        for _ in range(chunks):
            for (weight, bias), x, out in zip(layers, inputs, outs):
                torch.baddbmm(bias, x, weight, out=out)

    def floor_all():
        for x in scaled:
            floor(x)

    rates: dict[str, list[float]] = {"score": [], "products": [], "floor": []}
    gemm = []
    with torch.inference_mode():
        products(), floor_all()  # warm-up
        for _ in range(rounds):
            gemm.append(large_gemm_flops())
            for name, run, n in (
                ("score", lambda: det.score_samples(X), len(X)),
                ("products", products, chunks * SCORE_CHUNK),
                ("floor", floor_all, chunks * SCORE_CHUNK),
            ):
                t = time.perf_counter()
                run()
                rates[name].append(n / (time.perf_counter() - t))
    shares = {k: [r * flops / g for r, g in zip(v, gemm)] for k, v in rates.items()}
    return {
        "flops_per_row": flops,
        "large_gemm_gflops_float32": float(np.median(gemm)) / 1e9,
        "hardware_rows_per_second": float(np.median(gemm)) / flops,
        "rows_per_second": float(np.median(rates["score"])),
        "share_of_gemm_rate": float(np.median(shares["score"])),
        "share_min_max": [float(min(shares["score"])), float(max(shares["score"]))],
        "products_share_of_gemm_rate": float(np.median(shares["products"])),
        "floor_rows_per_second": float(np.median(rates["floor"])),
        "floor_share_of_gemm_rate": float(np.median(shares["floor"])),
        "floor_share_min_max": [float(min(shares["floor"])), float(max(shares["floor"]))],
    }


def spawn(case: str, n: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--device", device]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"case": case, "n": n, "error": res.stderr.strip().splitlines()[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case")
    parser.add_argument("--n", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=float, nargs="*", default=None)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--skip-pyod", action="store_true")
    parser.add_argument("--cases", nargs="*", help="run only these cases")
    parser.add_argument("--out", default="benchmarks/output/scaling.json")
    args = parser.parse_args(argv)
    if args.case:  # child process
        print(json.dumps(run_case(args.case, args.n, args.device)))
        return

    if args.memory:
        sizes = [int(s) for s in (args.sizes or [1e5, 1e6, 1e7])]
        cases = ["score_skvae"]
    else:
        sizes = [int(s) for s in (args.sizes or [1e4, 1e5, 1e6])]
        cases = [
            "fit_skvae_default",
            "fit_skvae_all_rows",
            "score_skvae",
            "score_skvae_float64",
            "ceiling",
            "share",
        ]
        if not args.skip_pyod:
            cases += ["fit_pyod_vae", "score_pyod_vae"]
    if args.cases:
        cases = [c for c in cases if c in args.cases]
    rows = []
    for n in sizes:
        for case in cases:
            r = spawn(case, n, args.device)
            rows.append(r)
            print(json.dumps(r), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": args.device, "rows": rows}, f, indent=1)
    print(markdown(rows, sizes, args.memory))


def markdown(rows, sizes, memory: bool) -> str:
    def get(case, n, key):
        for r in rows:
            if r["case"] == case and r["n"] == n and key in r:
                return r[key]
        return float("nan")

    if memory:
        lines = [
            "| rows | input MB | peak RSS before scoring MB | peak RSS MB | scoring adds MB |",
            "|---|---|---|---|---|",
        ]
        for n in sizes:
            lines.append(
                f"| {n:.0e} | {get('score_skvae', n, 'input_mb'):.0f} | "
                f"{get('score_skvae', n, 'rss_before_scoring_mb'):.0f} | "
                f"{get('score_skvae', n, 'peak_rss_mb'):.0f} | "
                f"{get('score_skvae', n, 'scoring_adds_mb'):.0f} |"
            )
        return "\n".join(lines)
    lines = [
        "| rows | skvae fit s (default) | skvae s/epoch (all rows) | PyOD VAE s/epoch | "
        "skvae score rows/s (default, float32) | share of the float32 GEMM rate | "
        "eager floor's share (its products alone) | "
        "skvae rows/s (float64) | network GEMMs alone rows/s | PyOD VAE score rows/s | "
        "skvae/PyOD score | peak RSS MB skvae fit / PyOD fit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        sk, py = (
            get("score_skvae", n, "rows_per_second"),
            get("score_pyod_vae", n, "rows_per_second"),
        )
        hardware = get("ceiling", n, "hardware_rows_per_second")
        share = get("share", n, "share_of_gemm_rate")
        lines.append(
            f"| {n:.0e} | {get('fit_skvae_default', n, 'seconds'):.2f} | "
            f"{get('fit_skvae_all_rows', n, 'seconds_per_epoch'):.2f} | "
            f"{get('fit_pyod_vae', n, 'seconds_per_epoch'):.2f} | {sk:,.0f} | "
            f"{sk / hardware:.0%} of {hardware:,.0f} (alternating: {share:.0%}) | "
            f"{get('share', n, 'floor_share_of_gemm_rate'):.0%} "
            f"({get('share', n, 'products_share_of_gemm_rate'):.0%}) | "
            f"{get('score_skvae_float64', n, 'rows_per_second'):,.0f} | "
            f"{get('ceiling', n, 'ceiling_rows_per_second'):,.0f} | {py:,.0f} | {sk / py:.1f}x | "
            f"{get('fit_skvae_all_rows', n, 'peak_rss_mb'):.0f} / "
            f"{get('fit_pyod_vae', n, 'peak_rss_mb'):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
