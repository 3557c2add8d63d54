"""Does ``torch.compile`` pay off for skvae's network? Eager against compiled, one run.

Two measurements on the default network for d = 20 features (five members, hidden
(64, 32), latent 5), each eager and with ``torch.compile`` (inductor), side by side:

- ``train step``: one optimisation step of a default fit at its shapes (5 members x 128
  rows, float32, the Student-t decoder): the loss and its hand-written gradient
  (``VAEEnsemble.loss_gradient``) and one fused Adam update of the flat parameter, as
  ``fit`` runs it, in milliseconds; compiled, ``loss_gradient`` is what is compiled;
- ``score``: rows/second of the posterior-mean ELBO in 2,048-row chunks (the chunk
  ``score_samples`` uses), in float32 (the default) and float64.

Eager and compiled runs alternate (medians of ``--repeats`` rounds); compilation time
is reported separately; the ratios are what decide.

Example::

    python benchmarks/compile_benchmark.py --out benchmarks/output/compile.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from pathlib import Path

import torch

from skvae._estimator import default_hidden_dims, default_latent_dim
from skvae._network import VAEEnsemble, flat_parameters

D = 20
MEMBERS = 5
ROWS = 128
CHUNK = 2048


def make_module(dtype: torch.dtype) -> VAEEnsemble:
    module = VAEEnsemble(
        D, default_latent_dim(D), default_hidden_dims(D), n_members=MEMBERS, decoder_df=5.0
    )
    module.reset_parameters(torch.Generator().manual_seed(0))
    return module.to(dtype)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each of ``fns``, timed in turn (eager, compiled, eager, ...)
    so that drifts in the machine's speed hit both alike."""
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def first_call_seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_steps(compiled: bool, steps: int, stack: contextlib.ExitStack):
    """A callable running ``steps`` optimisation steps as ``fit`` does, its first
    step's seconds (which includes compiling) and the module it trains. The flat
    parameter lives as long as ``stack``."""
    module = make_module(torch.float32).train()
    flat = stack.enter_context(flat_parameters(module))
    optimizer = torch.optim.Adam([flat], lr=1e-2, fused=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(MEMBERS, ROWS, D, generator=gen)
    noise = torch.randn(MEMBERS, ROWS, module.latent_dim, generator=gen)
    if compiled:  # inductor cannot trace inference tensors: the step, under no_grad
        body = torch.compile(functools.partial(VAEEnsemble.loss_gradient.__wrapped__, module))

        def fn(*args):
            with torch.no_grad():
                return body(*args)
    else:
        fn = module.loss_gradient

    def step():
        fn(x, noise, 1.0, 0.1)
        optimizer.step()

    first = first_call_seconds(step)
    return (lambda: [step() for _ in range(steps)]), first, module


def score_all(compiled: bool, dtype: torch.dtype, n: int):
    """A callable scoring ``n`` rows chunk by chunk, and its first chunk's seconds."""
    module = make_module(dtype).eval()
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(2), dtype=dtype)

    def chunk_scores(z):
        return module.scores(z, "elbo")

    fn = torch.compile(chunk_scores) if compiled else chunk_scores

    def run():
        with torch.inference_mode():
            for start in range(0, n, CHUNK):
                fn(x[start : start + CHUNK])

    def first_chunk():
        with torch.inference_mode():
            fn(x[:CHUNK])

    first = first_call_seconds(first_chunk)
    return run, first


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/output/compile.json")
    args = parser.parse_args(argv)

    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with contextlib.ExitStack() as stack:
        eager, _, _ = train_steps(False, args.steps, stack)
        compiled, compile_s, _ = train_steps(True, args.steps, stack)
        t = interleaved({"eager": eager, "compiled": compiled}, args.repeats)
    eager_ms, compiled_ms = (1e3 * t[k] / args.steps for k in ("eager", "compiled"))
    results["train_step"] = dict(
        eager_ms=eager_ms,
        compiled_ms=compiled_ms,
        speedup=eager_ms / compiled_ms,
        compile_seconds=compile_s,
    )
    print(
        f"train step: eager {eager_ms:.3f} ms, compiled {compiled_ms:.3f} ms "
        f"({eager_ms / compiled_ms:.2f}x; compiling took {compile_s:.1f} s)",
        flush=True,
    )
    for name, dtype in [("float32", torch.float32), ("float64", torch.float64)]:
        eager, _ = score_all(False, dtype, args.n)
        compiled, compile_s = score_all(True, dtype, args.n)
        t = interleaved({"eager": eager, "compiled": compiled}, args.repeats)
        eager_rate, compiled_rate = args.n / t["eager"], args.n / t["compiled"]
        results[f"score_{name}"] = dict(
            eager_rows_per_s=eager_rate,
            compiled_rows_per_s=compiled_rate,
            speedup=compiled_rate / eager_rate,
            compile_seconds=compile_s,
        )
        print(
            f"score {name}: eager {eager_rate:,.0f} rows/s, compiled {compiled_rate:,.0f} "
            f"rows/s ({compiled_rate / eager_rate:.2f}x; compiling took {compile_s:.1f} s)",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
