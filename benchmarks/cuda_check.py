"""The GPU check: CUDA tests, fitting and scoring on CUDA, CUDA models loaded on the CPU,
and CPU-vs-GPU timings, in one script that needs only what a bare GPU machine has
(PyTorch with CUDA, scikit-learn, h5py, PyYAML, pytest).

    PYTHONPATH=src python benchmarks/cuda_check.py OUT_DIR [--sizes 10000 100000 1000000]

Writes ``OUT_DIR/cuda_check.json`` and ``OUT_DIR/cuda_check.md``. Without CUDA it runs
the CPU half and says so (that is how the test suite keeps it working).

1. ``pytest -k cuda`` on the test files that hold the CUDA tests.
2. Fit and score on CUDA: arrays in and out, tensors on the GPU in and out.
3. A CUDA-fitted model saved in every format skvae writes or reads (``skvae.save``, the
   estimator pickled with joblib, ``skvae.compat`` ``save_model``, ``skvae train``), each
   loaded in a fresh process that sees no GPU (``CUDA_VISIBLE_DEVICES=``): scores equal
   to the GPU's within float32 tolerance.
4. Timings at each size, CPU and GPU in the same run: the default fit (subsampled), one
   epoch on all rows (``max_samples=1.0``), and ``score_samples`` (CPU float32 default,
   CPU float64, GPU from numpy, GPU tensor in and out).
5. ``score_samples`` at several rows per pass on 1e6 rows (the largest size), to choose
   ``CUDA_CHUNK_ROWS``.
6. Training rows/s per device and method (``--train-rows``, 1e6 on the GPU, a tenth of
   it on the CPU, one epoch each): GORMPO's hopper network through ``skvae.compat``,
   the estimator's defaults with ``max_samples=1.0``, and a plain PyTorch loop of the
   same network (``training_benchmark.py``'s); the CPU at one thread and at all cores;
   each GPU rate as a multiple of the best CPU rate of its method.
7. The latency of small scoring calls: ``score_samples`` of 10 to 100,000 rows, arrays
   and device tensors, median of five calls.
8. What might make GPU training faster, measured before it is built: the training step
   (``loss_gradient`` and the fused Adam update on one fixed batch, as ``fit`` runs it)
   eager and replayed from a CUDA graph, for GORMPO's network and the defaults, in ms
   per step, with the parameters of both after the same steps from the same start and
   the same draws; and a 10,000-row ``score_samples`` call's latency at several GPU
   rows per pass (whether its scores change with the pass size: stage 5).

Stages 6-8 run right after 1-3, before the timings, so that a short GPU session
reaches them.

The report is written after every stage, so a run stopped by a lent machine's time
limit keeps what it measured; ``pytest``'s whole output goes to ``OUT_DIR/cuda_tests.log``
and a failed stage records its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CUDA_TEST_FILES = ["tests/test_estimator.py", "tests/test_persistence.py", "tests/test_penalty.py"]


def data(n: int, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    W = np.random.RandomState(100).normal(size=(4, d))
    return (rng.normal(size=(n, 4)) @ W + 0.1 * rng.normal(size=(n, d))).astype(np.float64)


def run_cuda_tests(log: Path) -> dict:
    """``pytest -k cuda``; its whole output, tracebacks included, goes to ``log``."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "--tb=long", "-k", "cuda"]
        + ["-p", "no:cacheprovider"]
        + [str(ROOT / f) for f in CUDA_TEST_FILES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    log.write_text(out.stdout + out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return {
        "returncode": out.returncode,
        "summary": lines[-1] if lines else out.stderr[-300:],
        "seconds": time.perf_counter() - start,
    }


LOAD_ON_CPU = """
import sys, numpy as np, torch, skvae
assert not torch.cuda.is_available()
kind, path, x, out = sys.argv[1:5]
X = np.load(x)
if kind == "joblib":
    det = skvae.load(path, allow_code_execution=True)
elif kind == "compat":
    from skvae.compat import VAE
    det = VAE.load_model(path)["model"].detector
else:
    det = skvae.load(path)
assert det.device_.type == "cpu"
np.save(out, det.score_samples(X))
"""


def cuda_fit_and_formats(folder: Path, device: str = "cuda") -> dict:
    """Fit and score on ``device``, save the model in every format and load each file in
    a process that sees no GPU (``device='cpu'`` runs the same steps on the CPU, which is
    how the test suite keeps this half working before it meets a GPU)."""
    import joblib

    import skvae
    from skvae.cli import main as cli
    from skvae.compat import VAE

    X, X_test = data(4000), data(1000, seed=1)
    result = {}
    det = skvae.VAEOutlierDetector(device=device, n_jobs=-1, random_state=0).fit(X)
    scores = det.score_samples(X_test)
    t = torch.as_tensor(X_test, device=device)
    t_scores = det.score_samples(t)
    result["fit_on_cuda"] = {
        "device": str(det.device_),
        "scores_finite": bool(np.isfinite(scores).all()),
        "tensor_stays_on_gpu": t_scores.device.type == torch.device(device).type,
        "tensor_vs_array_max_rel": float(
            np.max(np.abs(t_scores.cpu().numpy() - scores) / np.abs(scores))
        ),
        "pvalues_and_contributions": bool(
            np.isfinite(det.pvalues(X_test)).all()
            and np.isfinite(det.feature_contributions(X_test)).all()
        ),
    }
    files = {}
    files["skvae.save"] = ("skvae", str(skvae.save(det, folder / "det.skvae")))
    joblib.dump(det, folder / "det.joblib")
    files["joblib"] = ("joblib", str(folder / "det.joblib"))
    compat = VAE(input_dim=20, latent_dim=5, hidden_dims=[64, 32], device=device)
    compat.fit(X[:3000], X[3000:], epochs=5, verbose=False)
    compat.save_model(str(folder / "compat"), X[:3000])
    files["compat save_model"] = ("compat", str(folder / "compat"))
    transitions = folder / "transitions.npz"
    np.savez(transitions, observations=X[:, :17], actions=X[:, 17:], next_observations=X[:, :17])
    code = cli(
        ["train", "--data-path", str(transitions), "--model-save-path", str(folder / "cli")]
        + ["--device", device, "--epochs", "3", "--quiet"]
    )
    files["skvae train"] = ("skvae", str(folder / "cli.skvae"))
    expected = {
        "skvae.save": scores,
        "joblib": scores,
        "compat save_model": compat.score_samples(X_test),
        "skvae train": skvae.load(folder / "cli.skvae").score_samples(X_test),
    }
    assert code == 0
    np.save(folder / "x.npy", X_test)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    loads = {}
    for name, (kind, path) in files.items():
        out = folder / f"{kind}-{len(loads)}.npy"
        proc = subprocess.run(
            [sys.executable, "-c", LOAD_ON_CPU, kind, path, str(folder / "x.npy"), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if proc.returncode != 0:
            loads[name] = {"ok": False, "error": proc.stderr.strip().splitlines()[-1:]}
            continue
        cpu = np.load(out)
        rel = float(np.max(np.abs(cpu - expected[name]) / np.abs(expected[name])))
        loads[name] = {"ok": bool(rel < 1e-4), "max_rel_diff": rel}
    result["loaded_on_cpu"] = loads
    return result


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def synchronizer(device: str):
    """What waits for the device's queued work: nothing to wait for on the CPU."""
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def scoring_rate(det, X, sync) -> float:
    """Rows per second of ``det.score_samples(X)``, the median of three passes, each
    waiting for the device (``sync``) before it counts as done."""

    def score():
        det.score_samples(X)
        sync()

    return len(X) / timed(score)


def timings(sizes, cuda: bool, report_progress=lambda rows: None) -> list[dict]:
    rows = []
    for n in sizes:
        X = data(n)
        for device in ["cpu", "cuda"] if cuda else ["cpu"]:
            try:
                rows.append(time_one(X, device))
            except Exception as exc:  # one failed size keeps the others
                rows.append({"n": n, "device": device, "error": f"{type(exc).__name__}: {exc}"})
            print(rows[-1], flush=True)
            report_progress(rows)
    return rows


def time_one(X: np.ndarray, device: str) -> dict:
    """Fit and scoring times of the defaults at one size on one device."""
    import skvae

    sync = synchronizer(device)

    def fit(**params):
        det = skvae.VAEOutlierDetector(device=device, n_jobs=-1, random_state=0, **params).fit(X)
        sync()
        return det

    n = len(X)
    row = {"n": n, "device": device}
    # untimed: the first fit on a device pays one-off costs (CUDA context, kernels,
    # torch's optimiser imports: about 1.5 s on the CPU)
    skvae.VAEOutlierDetector(device=device, n_jobs=-1, epochs=2, random_state=0).fit(X[:256])
    sync()
    row["fit_default_s"] = timed(fit, repeats=1)
    row["fit_one_epoch_all_rows_s"] = timed(
        lambda: fit(max_samples=1.0, epochs=1, validation_fraction=0.0), repeats=1
    )
    det = fit()
    det.score_samples(X[:1000])  # warm up
    row["score_rows_per_s"] = scoring_rate(det, X, sync)
    if device == "cpu":
        row["score_float64_rows_per_s"] = scoring_rate(fit(precision="float64"), X, sync)
        return row
    t = torch.as_tensor(X, device="cuda")
    det.score_samples(t)  # warm up
    row["score_tensor_rows_per_s"] = scoring_rate(det, t, sync)
    return row


def chunk_sweep(n: int, device: str) -> list[dict]:
    """``score_samples`` rows/s on ``n`` rows at several rows per forward pass (what the
    package's ``chunk_rows`` picks: ``CHUNK_ROWS`` on the CPU, ``CUDA_CHUNK_ROWS`` on a
    GPU), arrays and device tensors, and how far each chunk size's scores are from the
    first's."""
    import skvae
    from skvae import _network

    sync = synchronizer(device)
    # without a GPU, two sizes only: the CPU half keeps the code working in CI
    chunks = (2048, 16384, 65536, 262144) if device == "cuda" else (1024, 2048)
    X = data(n)
    det = skvae.VAEOutlierDetector(device=device, n_jobs=-1, random_state=0).fit(X[:10_000])
    t = torch.as_tensor(X, device=device)
    rows, first, default = [], None, _network.chunk_rows
    try:
        for chunk in chunks:
            _network.chunk_rows = lambda net, chunk=chunk: chunk
            scores = det.score_samples(X)
            det.score_samples(t)  # warm up
            row = {
                "chunk_rows": chunk,
                "array_rows_per_s": scoring_rate(det, X, sync),
                "tensor_rows_per_s": scoring_rate(det, t, sync),
            }
            first = scores if first is None else first
            row["max_rel_diff_to_first"] = float(np.max(np.abs(scores - first) / np.abs(first)))
            rows.append(row)
            print(row, flush=True)
    finally:
        _network.chunk_rows = default
    return rows


def _compat_seconds(X, X_val, device, threads) -> float:
    from training_benchmark import compat_fit

    compat_fit(X[:4096], X_val, 1, device)  # warm up
    return compat_fit(X, X_val, 1, device, n_jobs=None if threads == 1 else -1)[0]


def _defaults_seconds(X, X_val, device, threads) -> float:
    import skvae

    params = dict(max_samples=1.0, validation_fraction=0.0, device=device, random_state=0)
    params["n_jobs"] = None if threads == 1 else -1
    skvae.VAEOutlierDetector(epochs=1, **params).fit(X[:4096])  # warm up
    start = time.perf_counter()
    skvae.VAEOutlierDetector(epochs=1, **params).fit(X)
    synchronizer(device)()
    return time.perf_counter() - start


def _plain_seconds(X, X_val, device, threads) -> float:
    from training_benchmark import plain_loop

    plain_loop(X[:4096], 1, threads, device=device)  # warm up
    return plain_loop(X, 1, threads, device=device)[0]


TRAINING_METHODS = {
    "compat, GORMPO hopper": _compat_seconds,
    "defaults, max_samples=1.0": _defaults_seconds,
    "plain PyTorch loop": _plain_seconds,
}


def training_rates(n_gpu: int, cuda: bool) -> list[dict]:
    """Stage 6: rows/s of one epoch per device, method and threads."""
    from training_benchmark import manifold_rows

    cores = os.cpu_count() or 1
    rows = []
    runs = [("cpu", 1), ("cpu", cores)] + ([("cuda", cores)] if cuda else [])
    for device, threads in runs:
        n = n_gpu if device == "cuda" else max(4096, n_gpu // 10)
        X, X_val = manifold_rows(n, 1), manifold_rows(2048, 2)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for method, seconds in TRAINING_METHODS.items():
                row = {"device": device, "threads": threads, "method": method, "rows": n}
                try:
                    row["rows_per_s"] = n / seconds(X, X_val, device, threads)
                except Exception as exc:  # one failed method keeps the others
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                print(row, flush=True)
        finally:
            torch.set_num_threads(before)
    best_cpu: dict[str, float] = {}
    for r in rows:
        if r["device"] == "cpu" and "rows_per_s" in r:
            best_cpu[r["method"]] = max(best_cpu.get(r["method"], 0.0), r["rows_per_s"])
    for r in rows:
        if r["device"] == "cuda" and "rows_per_s" in r and best_cpu.get(r["method"]):
            r["x_best_cpu"] = r["rows_per_s"] / best_cpu[r["method"]]
    return rows


def scoring_latency(cuda: bool) -> list[dict]:
    """Stage 7: seconds of one ``score_samples`` call on few rows."""
    import skvae

    rows = []
    for device in ["cpu", "cuda"] if cuda else ["cpu"]:
        det = skvae.VAEOutlierDetector(device=device, random_state=0).fit(data(10_000))
        for n in (10, 1_000, 10_000, 100_000):
            X = data(n, seed=1)
            row = {"device": device, "rows": n}
            for kind, inp in (("array", X), ("tensor", torch.as_tensor(X, device=device))):
                det.score_samples(inp)  # warm up
                row[f"{kind}_s"] = timed(_scoring(det, inp, device), repeats=5)
            rows.append(row)
            print(row, flush=True)
    return rows


# Stage 8's networks: (features, latent, hidden, members, batch, decoder_df, trim_fraction)
STEP_CONFIGS = {
    "GORMPO hopper (compat)": (14, 8, (256, 128), 1, 256, None, 0.0),
    "defaults, 20 features": (20, 10, (64, 32), 5, 128, 5.0, 0.1),
}


def step_experiments(cuda: bool, steps: int = 200) -> dict:
    """Stage 8: ms per training step, eager and from a CUDA graph; small-call latency
    per GPU rows per pass."""
    device = "cuda" if cuda else "cpu"
    out: dict = {"device": device, "steps": steps, "training_step": [], "small_call": []}
    for name, config in STEP_CONFIGS.items():
        row = {"network": name}
        try:
            eager_ms, eager_params = _run_steps(config, device, steps, graph=False)
            row["eager_ms"] = eager_ms
            if cuda:
                graph_ms, graph_params = _run_steps(config, device, steps, graph=True)
                row["graph_ms"] = graph_ms
                row["eager_over_graph"] = eager_ms / graph_ms
                row["max_param_diff"] = float((eager_params - graph_params).abs().max())
        except Exception as exc:  # one failed network keeps the other
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc().splitlines()[-12:]
        out["training_step"].append(row)
        print(row, flush=True)
    import skvae
    import skvae._network as network

    det = skvae.VAEOutlierDetector(device=device, random_state=0).fit(data(10_000))
    X = torch.as_tensor(data(10_000, seed=1), device=device)
    attribute = "CUDA_CHUNK_ROWS" if cuda else "CHUNK_ROWS"
    default = getattr(network, attribute)
    sizes = (1024, 4096, 16384, default) if cuda else (256, default)
    try:
        for size in sizes:
            setattr(network, attribute, size)
            det.score_samples(X)  # warm up
            row = {"chunk_rows": size, "tensor_s": timed(_scoring(det, X, device), repeats=5)}
            out["small_call"].append(row)
            print(row, flush=True)
    finally:
        setattr(network, attribute, default)
    return out


def _run_steps(config, device: str, steps: int, graph: bool) -> tuple[float, torch.Tensor]:
    """ms per step of ``steps`` training steps on one fixed batch (after three warm-up
    steps), eager or replayed from a CUDA graph; and the flat parameters after them.
    The same start and the same draws for both."""
    from skvae._network import VAEEnsemble, Workspace, flat_parameters

    n_features, latent, hidden, members, batch, df, trim = config
    module = VAEEnsemble(n_features, latent, hidden, n_members=members, decoder_df=df)
    module.reset_parameters(torch.Generator().manual_seed(0))
    module.to(device, torch.float32).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(members, batch, n_features, generator=gen).to(device)
    draws = torch.randn(steps + 3, members, batch, latent, generator=gen).to(device)
    noise = torch.empty_like(draws[0])
    workspace = Workspace()
    sync = synchronizer(device)
    with flat_parameters(module) as flat:
        cuda_options = {"capturable": True} if device == "cuda" else {}
        optimizer = torch.optim.Adam([flat], lr=1e-3, fused=True, **cuda_options)

        def step() -> None:
            module.loss_gradient(x, noise, 1.0, trim, None, workspace)
            optimizer.step()

        if graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for i in range(3):
                    noise.copy_(draws[i])
                    step()
            torch.cuda.current_stream().wait_stream(side)
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                step()
            run_one = captured.replay
        else:
            for i in range(3):
                noise.copy_(draws[i])
                step()
            run_one = step
        sync()
        start = time.perf_counter()
        for i in range(3, steps + 3):
            noise.copy_(draws[i])
            run_one()
        sync()
        seconds = time.perf_counter() - start
        params = flat.detach().clone().cpu()
    return 1e3 * seconds / steps, params


def _scoring(det, inp, device):
    sync = synchronizer(device)

    def call():
        det.score_samples(inp)
        sync()

    return call


def _table(*columns: str) -> list[str]:
    """A markdown table's header lines (after a blank line)."""
    return ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def markdown(report: dict) -> str:
    lines = [f"# CUDA check ({report['device']})", ""]
    lines.append(f"- CUDA tests: {report['cuda_tests']['summary']}")
    fit = report.get("cuda_fit")
    if fit is None:
        lines.append("- no CUDA device: the GPU half was not run")
    elif "error" in fit:
        lines.append(f"- fit, score and formats on CUDA FAILED: {fit['error']}")
    else:
        lines.append(f"- fit and score on CUDA: {json.dumps(fit['fit_on_cuda'])}")
        for name, r in fit["loaded_on_cpu"].items():
            lines.append(f"- CUDA model via {name}, loaded without a GPU: {json.dumps(r)}")
    lines += _table(
        "rows",
        "device",
        "fit (default) s",
        "one epoch, all rows s",
        "score rows/s",
        "float64 CPU / tensor GPU rows/s",
    )
    for r in report["timings"]:
        if "error" in r:
            lines.append(f"| {r['n']:,} | {r['device']} | FAILED: {r['error']} | | | |")
            continue
        extra = r.get("score_float64_rows_per_s", r.get("score_tensor_rows_per_s"))
        lines.append(
            f"| {r['n']:,} | {r['device']} | {r['fit_default_s']:.2f} | "
            f"{r['fit_one_epoch_all_rows_s']:.2f} | {r['score_rows_per_s']:,.0f} | {extra:,.0f} |"
        )
    if report.get("training"):
        lines += _table("training, one epoch", "device", "threads", "rows", "rows/s", "x best CPU")
        for r in report["training"]:
            rate = f"{r['rows_per_s']:,.0f}" if "rows_per_s" in r else f"FAILED: {r['error']}"
            ratio = f"{r['x_best_cpu']:.1f}" if "x_best_cpu" in r else ""
            lines.append(
                f"| {r['method']} | {r['device']} | {r['threads']} | {r['rows']:,} | {rate} | "
                f"{ratio} |"
            )
    if report.get("latency"):
        lines += _table("score_samples rows", "device", "array s", "device tensor s")
        for r in report["latency"]:
            lines.append(
                f"| {r['rows']:,} | {r['device']} | {r['array_s']:.4f} | {r['tensor_s']:.4f} |"
            )
    experiments = report.get("step_experiments")
    if experiments:
        lines += _table(
            "training step", "eager ms", "CUDA graph ms", "eager / graph", "max param diff"
        )
        for r in experiments["training_step"]:
            if "error" in r:
                lines.append(f"| {r['network']} | FAILED: {r['error']} | | | |")
                continue
            graph = f"{r['graph_ms']:.3f}" if "graph_ms" in r else "needs CUDA"
            ratio = f"{r['eager_over_graph']:.2f}" if "eager_over_graph" in r else ""
            diff = f"{r['max_param_diff']:.1e}" if "max_param_diff" in r else ""
            lines.append(f"| {r['network']} | {r['eager_ms']:.3f} | {graph} | {ratio} | {diff} |")
        lines += _table("rows per pass", "10,000-row tensor call s")
        for r in experiments["small_call"]:
            lines.append(f"| {r['chunk_rows']:,} | {r['tensor_s']:.4f} |")
    if report.get("chunk_sweep"):
        lines += _table(
            "rows per pass",
            "score rows/s (array)",
            "score rows/s (device tensor)",
            "max rel. diff to the first",
        )
        for r in report["chunk_sweep"]:
            lines.append(
                f"| {r['chunk_rows']:,} | {r['array_rows_per_s']:,.0f} | "
                f"{r['tensor_rows_per_s']:,.0f} | {r['max_rel_diff_to_first']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -k cuda")
    parser.add_argument(
        "--train-rows", type=int, default=1_000_000, help="rows of stage 6 on the GPU"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    args.out.mkdir(parents=True, exist_ok=True)

    def write(report: dict) -> None:
        # after every stage, so a run stopped by a machine's time limit keeps what it
        # measured; each file replaced whole, never left half written
        for name, text in [
            ("cuda_check.json", json.dumps(report, indent=1)),
            ("cuda_check.md", markdown(report)),
        ]:
            partial = args.out / f".{name}.partial"
            partial.write_text(text)
            os.replace(partial, args.out / name)

    report = {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU only ({platform.processor()})",
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }
    report["cuda_tests"] = (
        {"summary": "skipped (--skip-tests)"}
        if args.skip_tests
        else run_cuda_tests(args.out / "cuda_tests.log")
    )
    print(report["cuda_tests"], flush=True)
    report["timings"] = []
    write(report)
    if cuda:
        with tempfile.TemporaryDirectory() as folder:
            try:
                report["cuda_fit"] = cuda_fit_and_formats(Path(folder))
            except Exception as exc:  # keep the timings of a scarce GPU session
                report["cuda_fit"] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc().splitlines()[-30:],
                }
        print(report["cuda_fit"], flush=True)
        write(report)
    for stage, run in (
        ("training", lambda: training_rates(args.train_rows, cuda)),
        ("latency", lambda: scoring_latency(cuda)),
        ("step_experiments", lambda: step_experiments(cuda, 200 if cuda else 20)),
    ):
        try:
            report[stage] = run()
        except Exception as exc:  # keep what the other stages measure
            report[stage + "_error"] = f"{type(exc).__name__}: {exc}"
            print(report[stage + "_error"], flush=True)
        write(report)
    # written as each size finishes
    report["timings"] = timings(args.sizes, cuda, lambda rows: write({**report, "timings": rows}))
    report["chunk_sweep"] = chunk_sweep(max(args.sizes), "cuda" if cuda else "cpu")
    write(report)
    print(markdown(report))


if __name__ == "__main__":
    main()
