"""Training cost, side by side in one run: a busy machine, offline-RL scale against a plain
PyTorch loop, and the default detector against IsolationForest over varied shapes.

    python benchmarks/training_benchmark.py [--parts busy rl shapes floor] \
        [--out benchmarks/results/training.json] [--quick]

``busy``
    The default detector fitted on 2,000 x 20 rows with one thread (``n_jobs=None``)
    and with all cores (``n_jobs=-1``, what PyTorch's default gave before 0.2) beside
    IsolationForest, three interleaved repeats each, on the idle machine and with
    ``2 x cores`` processes spinning beside it.
``rl``
    GORMPO's hopper network (14 -> [256, 128] -> 8, batch 256, lr 1e-3, beta 1)
    trained on 30,000 rows for 20 epochs through ``skvae.compat.VAE.fit``, against a
    plain PyTorch autograd loop of the same architecture written as a user would
    (``nn.Linear``/``nn.ReLU``, Adam, the reparameterisation trick, summed squared error
    plus KL, batches from ``torch.randperm``), both on one thread, interleaved; the loop
    also at PyTorch's default threads. Rows/s, the share of the machine's single-thread
    float32 GEMM rate each reaches, and both models' validation loss (the old module's
    ``loss_function``: squared error plus KL per row) and negative ELBO under each
    model's own decoder (nats per row) after the same epochs. The rows come from a
    smooth 4-dimensional manifold in 14 dimensions with noise, standardised (no
    simulator needed).
``shapes``
    Fit time of the default detector against IsolationForest on normal rows of 300,
    2,000 and 10,000 rows x 6, 50, 200 and 1,000 features, one thread each, with the
    0.2 default width (``(h, h/2)``, h the power of two in [64, 256] at or above the
    features) as the ablation; medians of three interleaved fits of each.

``floor``
    Where the default fit's time goes over the same shapes, phase by phase (input
    scaling, training steps, the rest of the training loop, validation checks, the
    decoder variance's calibration, scoring the training rows, the rest), against the
    time its multiply-adds take at the single-thread GEMM rate (the floor of this
    network on this core), beside IsolationForest's fit; medians of three.

``baseline`` (only with ``--baseline REV``)
    The default detector's fit time over the same shapes with the source of git
    revision ``REV`` against this tree's, each fit in a fresh process, the two
    alternating (a before/after of a change, measured side by side).

``--quick`` shrinks every part to seconds (the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from torch import nn

from skvae import VAEOutlierDetector
from skvae.compat import VAE

BUSY_LOOP = "while True: pass"
ROOT = Path(__file__).resolve().parents[1]
# One default fit, timed in a fresh process (after a small fit: a process's one-off costs).
FIT_IN_PROCESS = """
import json, sys, time
import numpy as np
from skvae import VAEOutlierDetector
n, d = int(sys.argv[1]), int(sys.argv[2])
X = np.random.RandomState(0).normal(size=(n, d))
VAEOutlierDetector(epochs=2, random_state=0).fit(X[:200, :5])
start = time.perf_counter()
VAEOutlierDetector(random_state=0).fit(X)
print(json.dumps(time.perf_counter() - start))
"""


def seconds(fit) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def spinning(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


# ------------------------------------------------------------------------------ busy
def busy_part(rows: int, features: int, repeats: int) -> dict:
    X = np.random.RandomState(0).normal(size=(rows, features))
    VAEOutlierDetector(epochs=2, random_state=0).fit(X[:200])  # warm up
    fits = {
        "skvae n_jobs=None (1 thread)": lambda: VAEOutlierDetector(random_state=0).fit(X),
        "skvae n_jobs=-1 (all cores)": lambda: VAEOutlierDetector(random_state=0, n_jobs=-1).fit(X),
        "IsolationForest": lambda: IsolationForest(random_state=0).fit(X),
    }
    report = {"rows": rows, "features": features, "modes": {}}
    for mode in ("idle", "busy"):
        n_busy = 0 if mode == "idle" else 2 * (os.cpu_count() or 1)
        busy = spinning(n_busy)
        try:
            times = {name: [] for name in fits}
            for _ in range(repeats):  # interleaved, so that each sees the same load
                for name, fit in fits.items():
                    times[name].append(seconds(fit))
        finally:
            for p in busy:
                p.kill()
        report["modes"][mode] = {"busy_processes": n_busy, "seconds": times}
        base = np.median(times["IsolationForest"])
        for name, values in times.items():
            print(
                f"busy/{mode:5s} {name:30s} median {np.median(values):6.2f} s "
                f"(min {min(values):.2f}, max {max(values):.2f}), "
                f"{np.median(values) / base:5.1f}x IsolationForest",
                flush=True,
            )
    return report


# -------------------------------------------------------------------------------- rl
INPUT, HIDDEN, LATENT, BATCH, LR = 14, (256, 128), 8, 256, 1e-3


def manifold_rows(n: int, seed: int) -> np.ndarray:
    """Rows near a smooth 4-dimensional manifold in 14 dimensions, standardised."""
    rng = np.random.RandomState(seed)
    A = np.random.RandomState(0).normal(size=(4, INPUT))
    X = np.tanh(rng.normal(size=(n, 4)) @ A) + 0.05 * rng.normal(size=(n, INPUT))
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32)


class PlainVAE(nn.Module):
    """The loop's model: what a user writes for 14 -> [256, 128] -> 8."""

    def __init__(self) -> None:
        super().__init__()
        h1, h2 = HIDDEN
        self.encoder = nn.Sequential(
            nn.Linear(INPUT, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 2 * LATENT)
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, INPUT)
        )

    def forward(self, x, sample: bool = True):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decoder(z), mu, logvar


def old_loss(recon, x, mu, logvar) -> torch.Tensor:
    """The old module's loss per row: summed squared error plus KL (beta 1)."""
    kl = -0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp())
    return ((recon - x).square().sum() + kl) / len(x)


def validation_terms(recon, x, mu, logvar, nll) -> dict[str, float]:
    """Mean per-row terms on validation rows, the code at its posterior mean: the
    negative ELBO under the model's own decoder likelihood (``nll`` per row: nats, the
    rows being the same standardised values for both models), its squared error and KL,
    and the old module's loss (squared error plus KL: a Gaussian decoder of fixed
    variance 1/2, up to a constant)."""
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
    error = (recon - x).square().sum(1)
    return {
        "negative_elbo": float((nll + kl).mean()),
        "squared_error": float(error.mean()),
        "kl": float(kl.mean()),
        "old_loss": float((error + kl).mean()),
    }


@torch.no_grad()
def compat_terms(model: VAE, x: torch.Tensor) -> dict[str, float]:
    model.eval()
    recon, mu, logvar = model(x)
    # compat trains without scaling: the network sees the rows as given
    nll = model.net.loss_terms(model._scale_in(x), None)[0][0]
    return validation_terms(recon, x, mu, logvar, nll)


@torch.no_grad()
def plain_terms(model: PlainVAE, x: torch.Tensor) -> dict[str, float]:
    recon, mu, logvar = model(x, sample=False)
    # squared error weighted 1 is a Gaussian of variance 1/2: nll = error + d/2 log(pi)
    nll = (recon - x).square().sum(1) + 0.5 * x.shape[1] * np.log(np.pi)
    return validation_terms(recon, x, mu, logvar, nll)


def plain_loop(
    X: np.ndarray, epochs: int, threads: int, seed: int = 0, device: str = "cpu"
) -> tuple[float, PlainVAE]:
    """Train :class:`PlainVAE` as a user would (the rows moved to ``device`` once);
    returns (seconds, model)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = PlainVAE().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        data = torch.from_numpy(X).to(device)
        start = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(len(data), device=device)
            for i in range(0, len(data), BATCH):
                xb = data[order[i : i + BATCH]]
                recon, mu, logvar = model(xb)
                loss = old_loss(recon, xb, mu, logvar)
                opt.zero_grad()
                loss.backward()
                opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - start, model.cpu()
    finally:
        torch.set_num_threads(before)


def compat_fit(
    X: np.ndarray, X_val: np.ndarray, epochs: int, device: str = "cpu", n_jobs: int | None = None
) -> tuple[float, VAE]:
    """The same network through ``skvae.compat.VAE.fit`` (``n_jobs=None``, its default:
    one thread)."""
    model = VAE(INPUT, LATENT, list(HIDDEN), device=device)
    model.detector.set_params(n_jobs=n_jobs)
    start = time.perf_counter()
    # patience beyond the epochs: both run every epoch
    model.fit(X, X_val, epochs=epochs, batch_size=BATCH, lr=LR, patience=epochs + 1, verbose=False)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start, model


def gemm_rate(n: int = 1024, repeats: int = 20) -> float:
    """The single-thread float32 GEMM rate (FLOP/s) of an n x n x n product."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        return 2 * n**3 * repeats / seconds(lambda: [a @ b for _ in range(repeats)])
    finally:
        torch.set_num_threads(before)


def step_flops_per_row() -> int:
    """FLOPs of one training row: the forward pass, the weights' gradients and the
    inputs' gradients of every layer but the first."""
    dims = [INPUT, *HIDDEN, 2 * LATENT, LATENT, *HIDDEN[::-1], INPUT]
    layers = [(dims[i], dims[i + 1]) for i in range(3)] + [
        (dims[i], dims[i + 1]) for i in range(4, 7)
    ]
    macs = sum(a * b for a, b in layers)
    return 2 * (3 * macs - INPUT * HIDDEN[0])


def rl_part(rows: int, epochs: int, repeats: int) -> dict:
    X, X_val = manifold_rows(rows, 1), manifold_rows(min(rows // 10, 5000), 2)
    plain_loop(X[:2048], 1, 1)  # warm up both
    compat_fit(X[:2048], X_val[:256], 1)
    cores = torch.get_num_threads()
    first_peak = gemm_rate()  # measured before and after; the higher one is reported
    times: dict[str, list[float]] = {"skvae.compat (1 thread)": [], "plain loop (1 thread)": []}
    times[f"plain loop ({cores} threads, PyTorch's default)"] = []
    losses: dict[str, dict[str, float]] = {}
    val = torch.from_numpy(X_val)
    for _ in range(repeats):  # interleaved
        t, model = compat_fit(X, X_val, epochs)
        times["skvae.compat (1 thread)"].append(t)
        losses["skvae.compat (1 thread)"] = compat_terms(model, val)
        t, plain = plain_loop(X, epochs, 1)
        times["plain loop (1 thread)"].append(t)
        losses["plain loop (1 thread)"] = plain_terms(plain, val)
        times[f"plain loop ({cores} threads, PyTorch's default)"].append(
            plain_loop(X, epochs, cores)[0]
        )
    peak, flops = max(gemm_rate(), first_peak), step_flops_per_row()
    report = {
        "rows": rows,
        "epochs": epochs,
        "gemm_flops_per_s_1_thread": peak,
        "flops_per_row": flops,
        "seconds": times,
        "validation_loss": losses,
    }
    base = rows * epochs / np.median(times["plain loop (1 thread)"])
    print(f"rl: single-thread float32 GEMM {peak / 1e9:.1f} GFLOP/s; {flops} FLOP per row")
    for name, values in times.items():
        rate = rows * epochs / np.median(values)
        print(
            f"rl: {name:40s} {rate:9.0f} rows/s ({rate / base:4.2f}x the 1-thread loop), "
            f"{rate * flops / peak:5.1%} of the GEMM rate"
            + (
                ", validation: " + ", ".join(f"{k} {v:.3f}" for k, v in losses[name].items())
                if name in losses
                else ""
            ),
            flush=True,
        )
    return report


# ---------------------------------------------------------------------------- shapes
def old_width(n_features: int) -> tuple[int, int]:
    """The default hidden sizes of 0.2: a power of two in [64, 256] at or above the
    number of features."""
    width = int(np.clip(2 ** int(np.ceil(np.log2(max(n_features, 1)))), 64, 256))
    return width, width // 2


def shapes_part(rows_list, features_list, repeats: int) -> dict:
    VAEOutlierDetector(epochs=2, random_state=0).fit(np.random.RandomState(0).normal(size=(200, 5)))
    fits = {
        "skvae default": lambda X: VAEOutlierDetector(random_state=0).fit(X),
        "skvae, 0.2 width": lambda X: VAEOutlierDetector(
            random_state=0, hidden_dims=old_width(X.shape[1])
        ).fit(X),
        "IsolationForest": lambda X: IsolationForest(random_state=0).fit(X),
    }
    results = []
    for n in rows_list:
        for d in features_list:
            X = np.random.RandomState(0).normal(size=(n, d))
            row = {"rows": n, "features": d}
            times: dict[str, list[float]] = {name: [] for name in fits}
            for _ in range(repeats):  # interleaved: a slow spell of the machine hits all
                for name, fit in fits.items():
                    times[name].append(seconds(lambda fit=fit, X=X: fit(X)))
            for name in fits:
                row[name] = float(np.median(times[name]))
            results.append(row)
            print(
                f"shapes: {n:6d} x {d:5d} "
                + ", ".join(
                    f"{name} {row[name]:.2f} s ({row[name] / row['IsolationForest']:.1f}x)"
                    for name in fits
                ),
                flush=True,
            )
    totals = {name: sum(r[name] for r in results) for name in fits}
    print(
        "shapes: in total "
        + ", ".join(
            f"{name} {t:.2f} s ({t / totals['IsolationForest']:.2f}x)" for name, t in totals.items()
        ),
        flush=True,
    )
    return {"fits": results, "total_seconds": totals}


# ---------------------------------------------------------------------------- floor
# The phases of a default fit, each timed by wrapping the function that does it (the
# module attribute the caller looks up), with the rows it computes (from its arguments;
# a row counts once for the whole ensemble: every member's network sees it, or in
# training its own row in that place), to count its multiply-adds.
STEPS = "training steps (loss and gradient)"


def _scored_rows(net, X, *_) -> int:
    from skvae._network import chunk_rows

    return -(-X.shape[0] // chunk_rows(net)) * chunk_rows(net)  # every pass is whole


PHASES = {
    "input scaling": ("skvae._estimator", "fit_scaling", None),
    "training loop": ("skvae._estimator", "train", None),
    # x is (members, rows, features): each member's rows through its network
    STEPS: ("skvae._network", "VAEEnsemble.loss_gradient", lambda net, x, *_: x.shape[1]),
    "validation checks": ("skvae._training", "validation_loss", lambda net, Z, *_: len(Z)),
    "decoder-variance calibration": (
        "skvae._network",
        "VAEEnsemble.calibrate_decoder_variance",
        lambda net, x, *_: len(x),
    ),
    "scoring the training rows": ("skvae._estimator", "forward_rows", _scored_rows),
}


class PhaseTimer:
    """Wraps the functions of :data:`PHASES` for the duration: seconds and computed
    rows of each."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.rows = dict.fromkeys(PHASES, 0)
        self._undo: list = []

    def __enter__(self) -> PhaseTimer:
        import importlib

        for phase, (module_name, name, rows) in PHASES.items():
            owner = importlib.import_module(module_name)
            attribute = name
            if "." in name:
                class_name, attribute = name.split(".")
                owner = getattr(owner, class_name)
            original = getattr(owner, attribute)

            def timed(*args, _phase=phase, _original=original, _rows=rows, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_phase] += time.perf_counter() - start
                    if _rows is not None:
                        self.rows[_phase] += _rows(*args)

            setattr(owner, attribute, timed)
            self._undo.append((owner, attribute, original))
        return self

    def __exit__(self, *exc) -> None:
        for owner, attribute, original in reversed(self._undo):
            setattr(owner, attribute, original)


def floor_part(shapes, repeats: int) -> dict:
    """Where a default fit's time goes, phase by phase, against the time the same
    multiply-adds take at the single-thread GEMM rate (a floor no implementation of this
    network goes below on this core), beside IsolationForest's fit."""
    VAEOutlierDetector(epochs=2, random_state=0).fit(np.random.RandomState(0).normal(size=(200, 5)))
    rate = gemm_rate()
    results = []
    for n, d in shapes:
        X = np.random.RandomState(0).normal(size=(n, d))
        runs, forest = [], []
        for _ in range(repeats):  # interleaved
            with PhaseTimer() as timer:
                start = time.perf_counter()
                det = VAEOutlierDetector(random_state=0).fit(X)
                total = time.perf_counter() - start
            runs.append((total, timer))
            forest.append(seconds(lambda X=X: IsolationForest(random_state=0).fit(X)))
        total, timer = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the median fit
        net = det.module_
        row_macs = net.row_macs()
        # the encoder's first layer computes no gradient for its input
        first = net.encoder_layers[0].weight.numel()
        macs = {
            phase: rows * (3 * row_macs - first if phase == STEPS else row_macs)
            for phase, rows in timer.rows.items()
        }
        phases = dict(timer.seconds)
        phases["training loop"] -= phases[STEPS] + phases["validation checks"]
        phases["rest of the fit"] = total - sum(
            timer.seconds[p]
            for p in (
                "input scaling",
                "training loop",
                "decoder-variance calibration",
                "scoring the training rows",
            )
        )
        floor = 2 * sum(macs.values()) / rate
        row = {
            "rows": n,
            "features": d,
            "fit_seconds": total,
            "phase_seconds": phases,
            "multiply_adds": macs,
            "gemm_floor_seconds": floor,
            "isolation_forest_seconds": float(np.median(forest)),
        }
        results.append(row)
        print(
            f"floor: {n:6d} x {d:5d} fit {total:.2f} s, at the GEMM rate {floor:.2f} s, "
            f"IsolationForest {row['isolation_forest_seconds']:.2f} s; "
            + ", ".join(f"{p} {t:.2f} s" for p, t in phases.items()),
            flush=True,
        )
    totals = {
        key: sum(r[key] for r in results)
        for key in ("fit_seconds", "gemm_floor_seconds", "isolation_forest_seconds")
    }
    print(
        f"floor: in total fit {totals['fit_seconds']:.2f} s, at the GEMM rate "
        f"{totals['gemm_floor_seconds']:.2f} s, IsolationForest "
        f"{totals['isolation_forest_seconds']:.2f} s",
        flush=True,
    )
    return {"gemm_flops_per_s_1_thread": rate, "fits": results, "total_seconds": totals}


def baseline_part(revision: str, rows_list, features_list, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", revision, "src"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        sources = {revision: Path(tmp) / "src", "this tree": ROOT / "src"}
        results = []
        for n in rows_list:
            for d in features_list:
                times: dict[str, list[float]] = {name: [] for name in sources}
                for _ in range(repeats):
                    for name, src in sources.items():
                        out = subprocess.run(
                            [sys.executable, "-c", FIT_IN_PROCESS, str(n), str(d)],
                            env={**os.environ, "PYTHONPATH": str(src)},
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        times[name].append(json.loads(out.stdout.splitlines()[-1]))
                row = {"rows": n, "features": d}
                row.update({name: float(np.median(t)) for name, t in times.items()})
                results.append(row)
                print(
                    f"baseline: {n:6d} x {d:5d} {revision} {row[revision]:.2f} s, this tree "
                    f"{row['this tree']:.2f} s ({row['this tree'] / row[revision]:.2f}x)",
                    flush=True,
                )
    totals = {name: sum(r[name] for r in results) for name in sources}
    print(
        f"baseline: in total {revision} {totals[revision]:.2f} s, this tree "
        f"{totals['this tree']:.2f} s ({totals['this tree'] / totals[revision]:.2f}x)",
        flush=True,
    )
    return {"revision": revision, "fits": results, "total_seconds": totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["busy", "rl", "shapes", "floor"])
    parser.add_argument("--out", default="benchmarks/results/training.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--baseline", metavar="REV", help="a git revision to compare default fits with"
    )
    args = parser.parse_args()
    if args.baseline and "baseline" not in args.parts:
        args.parts.append("baseline")
    report: dict = {"cores": os.cpu_count(), "torch": torch.__version__, "parts": {}}
    torch.set_num_threads(os.cpu_count() or 1)  # PyTorch's default, as a user has it
    for part in args.parts:
        if part == "busy":
            report["parts"]["busy"] = busy_part(*((300, 20, 1) if args.quick else (2000, 20, 3)))
        elif part == "rl":
            report["parts"]["rl"] = rl_part(*((2048, 1, 1) if args.quick else (30_000, 20, 3)))
        elif part == "shapes":
            report["parts"]["shapes"] = (
                shapes_part([300], [6, 50], 1)
                if args.quick
                else shapes_part([300, 2000, 10_000], [6, 50, 200, 1000], 3)
            )
        elif part == "floor":
            report["parts"]["floor"] = (
                floor_part([(300, 6), (300, 50)], 1)
                if args.quick
                else floor_part(
                    [(n, d) for n in (300, 2000, 10_000) for d in (6, 50, 200, 1000)], 3
                )
            )
        elif part == "baseline":
            if not args.baseline:
                parser.error("the baseline part needs --baseline REV")
            report["parts"]["baseline"] = (
                baseline_part(args.baseline, [300], [6], 1)
                if args.quick
                else baseline_part(args.baseline, [300, 2000, 10_000], [6, 50, 200, 1000], 3)
            )
        else:
            parser.error(f"unknown part {part!r}; choose from busy, rl, shapes, floor, baseline")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
