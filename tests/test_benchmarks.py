"""The scripts behind benchmarks/RESULTS.md keep running: each runs here on the smallest
input it takes and must write what RESULTS is made from (cuda_check.py its CPU half: the
GPU half runs on a GPU machine, where the same script is the recorded check). The
figures themselves come from the full runs, not from these; the README's headline table
must match those recorded runs."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skvae import VAEOutlierDetector

pytestmark = pytest.mark.slow  # each runs a whole script

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# the ODDS and ADBench sets shipped beside the repository (../shared/data), or higher up
SHARED = next(
    (
        parent / "shared" / "data"
        for parent in ROOT.parents
        if (parent / "shared" / "data" / "adbench").is_dir()
        and (parent / "shared" / "data" / "odds").is_dir()
    ),
    None,
)
needs_shared = pytest.mark.skipif(
    SHARED is None, reason="the ODDS and ADBench sets of ../shared/data are not here"
)


def load(script: str):
    """A benchmark script imported as a module (its main does not run)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@needs_shared
def test_adbench_and_odds_benchmarks_and_their_summary(tmp_path):
    run(
        "adbench_benchmark.py",
        *("--datasets", "42_WBC", "--seeds", "1", "--detectors", "skvae", "iforest"),
        *("--data-dir", str(SHARED / "adbench"), "--out", str(tmp_path / "adbench")),
    )
    rows = json.loads((tmp_path / "adbench" / "results.json").read_text())["rows"]
    assert {(r["dataset"], r["detector"]) for r in rows} == {
        ("42_WBC", "skvae"),
        ("42_WBC", "iforest"),
    }
    assert all(0.5 < r["roc_auc"] <= 1.0 for r in rows)  # WBC's anomalies are easy
    assert "| 42_WBC |" in (tmp_path / "adbench" / "table.md").read_text()

    params = '{"decoder_df": null}'
    for name, extra in (("odds", []), ("ablation", ["--skvae-params", params])):
        run(
            "odds_benchmark.py",
            *("--datasets", "wbc", "--seeds", "0", "--detectors", "skvae", "iforest"),
            *("--data-dir", str(SHARED / "odds"), "--out", str(tmp_path / name), *extra),
        )
    summary = run("summarize.py", str(tmp_path / "odds"), str(tmp_path / "ablation"))
    lines = [line for line in summary.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| defaults |")
    assert lines[2].startswith('| {"decoder_df": null} |')


@pytest.mark.parametrize("protocol", ["holdout", "adbench"])
def test_holdout_benchmark(tmp_path, protocol):
    run(
        "holdout_benchmark.py",
        *("--seeds", "0", "--detectors", "skvae", "--protocol", protocol),
        *("--out", str(tmp_path)),
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["protocol"] == protocol
    rows = results["rows"]
    names = ["cancer", "wine", "digits", "synthetic-local", "synthetic-cluster", "synthetic-noise"]
    assert [r["dataset"] for r in rows] == names
    assert all(r["detector"] == "skvae" and 0.0 <= r["roc_auc"] <= 1.0 for r in rows)
    assert rows[names.index("synthetic-cluster")]["roc_auc"] > 0.9  # a far, tight cluster


def test_scaling_benchmark(tmp_path):
    out = tmp_path / "scaling.json"
    run(
        "scaling_benchmark.py",
        *("--sizes", "2048", "--skip-pyod", "--cases", "score_skvae", "share"),
        *("--out", str(out)),
    )
    rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"score_skvae", "share"}, rows  # a failed case has "error"
    assert rows["score_skvae"]["rows_per_second"] > 0
    assert 0 < rows["share"]["share_of_gemm_rate"] < 1
    assert rows["share"]["flops_per_row"] == 71_360  # the default network for d = 20
    assert 0 < rows["share"]["floor_share_of_gemm_rate"] < 1
    assert 0 < rows["share"]["products_share_of_gemm_rate"] < 1


@pytest.mark.parametrize("decoder_df", [5.0, None])
def test_scaling_floor_pass_computes_the_scores(decoder_df):
    # the floor's rate is a bound on the scoring path only if it does all of its work
    from skvae import VAEOutlierDetector
    from skvae._network import CHUNK_ROWS

    bench = load("scaling_benchmark.py")
    X = bench.make_data(CHUNK_ROWS + 100)
    X[:10] += 40.0  # beyond the encoder's clip
    det = VAEOutlierDetector(epochs=3, decoder_df=decoder_df, device="cpu", random_state=0)
    det.fit(X[100:])
    floor = bench.floor_pass(det.module_)
    with torch.inference_mode():
        scaled = det.module_.scale_input(torch.from_numpy(X[:CHUNK_ROWS])).float()
        scores = floor(scaled).double().numpy()
    np.testing.assert_allclose(scores, det.score_samples(X[:CHUNK_ROWS]), rtol=1e-5, atol=1e-4)


def test_explain_benchmark(tmp_path):
    out = tmp_path / "explain.json"
    run(
        "explain_benchmark.py",
        *("--seeds", "0", "--real-seeds", "--cost-rows", "4096", "--out", str(out)),
    )
    report = json.loads(out.read_text())
    assert report["synthetic"]["rows"] and report["real"]["rows"] == []
    assert report["cost"]["rows"] == 4096 and report["cost"]["ratio_contributions"] > 0


def test_out_of_core_benchmark(tmp_path):
    out = tmp_path / "ooc.json"
    run(
        "out_of_core_benchmark.py",
        *("--gib", "0.002", "--features", "10", "--path", str(tmp_path / "X.h5")),
        *("--out", str(out)),
    )
    report = json.loads(out.read_text())
    assert report["scores_finite"] and report["outlier_auc"] > 0.9
    assert not (tmp_path / "X.h5").exists()  # removed without --keep


def test_migration_check(tmp_path):
    out = tmp_path / "migration.json"
    run("migration_check.py", "--n-steps", "1000", "--epochs", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 * 4  # five OOD sets, four models
    old, matched = (r for r in rows[:4] if r["model"] in ("old file", "retrained, matched"))
    assert matched["thr"] == old["thr"] and matched["std"] == old["std"]
    assert {"tanh", "linear", "inverse", "tanh_reg"} <= set(rows[0])


def test_compile_benchmark_steps_run_eagerly():
    """The eager half of compile_benchmark.py: the training step and the scoring it
    times are the ones fit and score_samples run (compiling needs a C++ toolchain and
    half a minute, so the compiled half runs only in the benchmark)."""
    bench = load("compile_benchmark.py")
    with contextlib.ExitStack() as stack:
        steps, _, module = bench.train_steps(False, 3, stack)
        before = [p.detach().clone() for p in module.parameters()]
        steps()
        assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    score, _ = bench.score_all(False, torch.float32, 2 * bench.CHUNK)
    score()


def test_cuda_check_cpu_half(tmp_path):
    run("cuda_check.py", str(tmp_path), "--sizes", "2000", "--skip-tests", "--train-rows", "4096")
    report = json.loads((tmp_path / "cuda_check.json").read_text())
    training = report["training"]  # every method at one thread and all cores
    assert len(training) == 6 and all(r["rows_per_s"] > 0 for r in training)
    assert [r["rows"] for r in report["latency"]] == [10, 1_000, 10_000, 100_000]
    assert all(r["array_s"] > 0 and r["tensor_s"] > 0 for r in report["latency"])
    text = (tmp_path / "cuda_check.md").read_text()
    assert "| plain PyTorch loop | cpu | 1 | 4,096 |" in text and "| 10 | cpu |" in text
    (row,) = [r for r in report["timings"] if r["device"] == "cpu"]
    assert row["n"] == 2000 and row["score_rows_per_s"] > 0
    assert "| 2,000 | cpu |" in (tmp_path / "cuda_check.md").read_text()
    sweep = report["chunk_sweep"]  # rows per pass, two sizes without a GPU
    assert [r["chunk_rows"] for r in sweep] == [1024, 2048]
    assert all(r["tensor_rows_per_s"] > 0 and r["max_rel_diff_to_first"] < 1e-5 for r in sweep)
    assert "| 1,024 |" in (tmp_path / "cuda_check.md").read_text()
    steps = report["step_experiments"]  # eager steps only, and two CPU pass sizes
    assert [r["network"] for r in steps["training_step"]] == list(
        load("cuda_check.py").STEP_CONFIGS
    )
    assert all(r["eager_ms"] > 0 and "graph_ms" not in r for r in steps["training_step"])
    assert [r["chunk_rows"] for r in steps["small_call"]] == [256, 2048]
    assert "| defaults, 20 features |" in text and "needs CUDA" in text


def test_cuda_check_formats_half_on_cpu(tmp_path):
    """The GPU half's fit, formats and no-GPU loads, run on the CPU: every file loads in
    a process without CUDA and scores as the fitted model did."""
    result = load("cuda_check.py").cuda_fit_and_formats(tmp_path, device="cpu")
    fit = result["fit_on_cuda"]
    assert fit["device"] == "cpu" and fit["scores_finite"] and fit["tensor_stays_on_gpu"]
    assert fit["tensor_vs_array_max_rel"] < 1e-5 and fit["pvalues_and_contributions"]
    loads = result["loaded_on_cpu"]
    assert set(loads) == {"skvae.save", "joblib", "compat save_model", "skvae train"}
    assert all(r["ok"] for r in loads.values()), loads


@pytest.mark.parametrize(
    "row_start, quality, fit",
    [
        ("| ADBench, 21 sets", "adbench", "adbench_fit"),
        ("| ODDS, 9 sets", "odds", "odds"),
        ("| 6 sets not used", "holdout", "holdout"),
    ],
)
def test_readme_headline_table_is_the_recorded_runs(row_start, quality, fit):
    """The README's headline numbers are those of benchmarks/results, to the digit, as
    the benchmarks' own per-set summary averages them."""
    summarise = load("odds_benchmark.py").summarise

    def means(name: str) -> dict[str, tuple[float, float, float]]:
        """Per detector: mean ROC AUC and AP over the sets, and the summed fit seconds
        (of one seed per set: every detector has the same seeds)."""
        rows = json.loads((BENCHMARKS / "results" / f"{name}.json").read_text())["rows"]
        rows = [r for r in rows if "roc_auc" in r]
        datasets = sorted({r["dataset"] for r in rows})
        table = summarise(rows, datasets, sorted({r["detector"] for r in rows}))
        return {
            detector: tuple(
                f([table[ds, detector][k] for ds in datasets])
                for f, k in (
                    (np.mean, "roc_auc"),
                    (np.mean, "average_precision"),
                    (sum, "fit_seconds"),
                )
            )
            for (_, detector) in table
        }

    readme = (ROOT / "README.md").read_text().splitlines()
    (line,) = [x for x in readme if x.startswith(row_start)]
    cells = [c.strip() for c in line.strip("|").split("|")]
    scores = means(quality)
    for cell, detector in ((cells[1], "skvae"), (cells[2], "iforest")):
        auc, ap = (float(v) for v in cell.split(" / "))
        assert (auc, ap) == (round(scores[detector][0], 3), round(scores[detector][1], 3))
    timing = means(fit)
    assert float(cells[4]) == round(timing["skvae"][2] / timing["pyod_vae"][2], 3)
    for name, value in re.findall(r"(PyOD VAE|ECOD|PyOD AutoEncoder) (0\.\d{3})", cells[3]):
        detector = {"PyOD VAE": "pyod_vae", "ECOD": "ecod", "PyOD AutoEncoder": "pyod_ae"}[name]
        source = timing if detector == "pyod_vae" and quality == "adbench" else scores
        assert float(value) == round(source[detector][0], 3), name


def test_training_benchmark(tmp_path):
    out = tmp_path / "training.json"
    run("training_benchmark.py", "--quick", "--out", str(out))
    parts = json.loads(out.read_text())["parts"]
    modes = parts["busy"]["modes"]
    assert modes["busy"]["busy_processes"] > 0 and modes["idle"]["busy_processes"] == 0
    assert len(modes["busy"]["seconds"]["skvae n_jobs=None (1 thread)"]) == 1
    rl = parts["rl"]
    assert rl["gemm_flops_per_s_1_thread"] > 0 and rl["flops_per_row"] > 0
    assert set(rl["validation_loss"]) == {"skvae.compat (1 thread)", "plain loop (1 thread)"}
    for terms in rl["validation_loss"].values():
        assert set(terms) == {"negative_elbo", "squared_error", "kl", "old_loss"}
        assert np.isfinite(list(terms.values())).all()
        assert terms["old_loss"] == pytest.approx(terms["squared_error"] + terms["kl"], rel=1e-4)
    shapes = parts["shapes"]
    assert [(f["rows"], f["features"]) for f in shapes["fits"]] == [(300, 6), (300, 50)]
    assert shapes["total_seconds"]["IsolationForest"] > 0
    floor = parts["floor"]
    fit = floor["fits"][0]
    assert (fit["rows"], fit["features"]) == (300, 6)
    assert sum(fit["phase_seconds"].values()) == pytest.approx(fit["fit_seconds"])
    # 100 steps of each member's 128 rows: forward, weight and input gradients but the
    # first layer's input gradient; 2,048 scored rows (one padded pass)
    net = VAEOutlierDetector().fit(np.random.RandomState(0).normal(size=(300, 6))).module_
    macs, first = net.row_macs(), net.encoder_layers[0].weight.numel()
    assert fit["multiply_adds"]["training steps (loss and gradient)"] == 100 * 128 * (
        3 * macs - first
    )
    assert fit["multiply_adds"]["scoring the training rows"] == 2048 * macs
    assert fit["multiply_adds"]["validation checks"] == 5 * 30 * macs
    assert fit["gemm_floor_seconds"] == pytest.approx(
        2 * sum(fit["multiply_adds"].values()) / floor["gemm_flops_per_s_1_thread"]
    )


def test_training_benchmark_against_a_git_revision(tmp_path):
    """The before/after part: default fits with a revision's source and this tree's,
    each in its own process (here the revision is HEAD itself)."""
    out = tmp_path / "training.json"
    stdout = run(
        "training_benchmark.py", "--quick", "--parts", "baseline", "--baseline", "HEAD",
        "--out", str(out),
    )  # fmt: skip
    baseline = json.loads(out.read_text())["parts"]["baseline"]
    assert baseline["revision"] == "HEAD"
    assert [(f["rows"], f["features"]) for f in baseline["fits"]] == [(300, 6)]
    assert all(t > 0 for t in baseline["total_seconds"].values())
    assert "baseline: in total HEAD" in stdout


@needs_shared
def test_missing_benchmark(tmp_path):
    out = tmp_path / "missing"
    methods = ["skvae", "skvae + median", "IsolationForest + iterative"]
    run(
        "missing_benchmark.py",
        *("--data-dir", str(SHARED), "--datasets", "adbench/42_WBC"),
        *("--levels", "complete", "mcar-20", "mnar-20", "--methods", *methods),
        *("--out", str(out)),
    )
    report = json.loads((out / "results.json").read_text())
    rows = report["rows"]
    assert {(r["level"], r["method"]) for r in rows} == {("complete", "skvae")} | {
        (level, m) for level in ("mcar-20", "mnar-20") for m in methods
    }
    assert all(0 <= r["auc"] <= 1 and r["seconds"] > 0 for r in rows)
    assert report["means"]["mcar-20"]["skvae"]["n"] == 1
    assert "| skvae |" in (out / "table.md").read_text() and (out / "auc.png").stat().st_size


def test_missing_benchmark_blanks_as_it_says():
    mb = load("missing_benchmark.py")
    X = np.ones((4000, 5))
    y = np.r_[np.zeros(3000), np.ones(1000)]
    rng = np.random.RandomState(0)
    mcar = mb.blank(X, y, "mcar-20", rng)
    assert abs(np.isnan(mcar).mean() - 0.2) < 0.02 and not np.isnan(mcar).all(1).any()
    mnar = mb.blank(X, y, "mnar-20", rng)
    inliers, anomalies = np.isnan(mnar[:3000]).mean(), np.isnan(mnar[3000:]).mean()
    assert abs(inliers - 0.2) < 0.02 and abs(anomalies - 0.4) < 0.03
    assert mb.blank(X, y, "complete", rng) is X


def test_statistics_rank_and_wilcoxon_over_sets():
    stats = load("odds_benchmark.py").statistics
    datasets, names = ["a", "b", "c", "d", "e", "f"], ["skvae", "peer", "tied"]
    auc = {"skvae": [0.9, 0.8, 0.7, 0.9, 0.6, 0.8], "peer": [0.8, 0.7, 0.6, 0.8, 0.5, 0.7]}
    auc["tied"] = auc["skvae"]
    table = {
        (ds, n): {"roc_auc": auc[n][i], "average_precision": auc[n][i] / 2}
        for i, ds in enumerate(datasets)
        for n in names
    }
    out = stats(table, datasets, names)
    assert out["skvae"]["average_rank"] == out["tied"]["average_rank"] == 1.5
    assert out["peer"]["average_rank"] == 3.0
    assert out["peer"]["roc_auc_wins"] == 6 and out["peer"]["roc_auc_wilcoxon_p"] == pytest.approx(
        0.03125
    )
    assert out["tied"]["roc_auc_wilcoxon_p"] == 1.0 and out["tied"]["roc_auc_wins"] == 0


@pytest.mark.parametrize(
    "row_start, name",
    [("| ADBench, 20 sets", "adbench_peers"), ("| ODDS (9 sets)", "odds_peers"),
     ("| 6 held-out sets", "holdout_peers")],
)  # fmt: skip
def test_readme_peer_table_is_the_recorded_runs(row_start, name):
    module = load("odds_benchmark.py")
    rows = json.loads((BENCHMARKS / "results" / f"{name}.json").read_text())["rows"]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    names = list(dict.fromkeys(r["detector"] for r in rows))
    s = module.statistics(module.summarise(rows, datasets, names), datasets, names)
    (line,) = [x for x in (ROOT / "README.md").read_text().splitlines() if x.startswith(row_start)]
    cells = [c.strip() for c in line.strip("|").split("|")]
    for cell, detector in zip(cells[1:5], ["skvae", "eif", "mcd", "iforest"]):
        expected = (
            f"{s[detector]['roc_auc']:.3f} / {s[detector]['average_precision']:.3f} "
            f"({s[detector]['average_rank']:.2f})"
        )
        assert cell == expected, (detector, cell, expected)
    p = [float(v) for v in cells[5].split(" / ")]
    assert p == pytest.approx(
        [s["eif"]["roc_auc_wilcoxon_p"], s["mcd"]["roc_auc_wilcoxon_p"]], abs=0.006
    )


@pytest.mark.parametrize(
    "candidate",
    [
        *("scores", "capacity", "selection", "concentration", "linear_path"),
        *("exclusion", "trim_anew", "peer_ensembles", "streams", "params"),
    ],
)
def test_candidates_benchmark(tmp_path, candidate):
    out = tmp_path / "candidates.json"
    extra = ("--params", '{"beta": 2.0}') if candidate == "params" else ()
    run(
        "candidates_benchmark.py",
        *(candidate, "--benchmark", "holdout-adbench", "--datasets", "wine", "--seeds", "0"),
        *extra,
        *("--out", str(out)),
    )
    record = json.loads(out.read_text())
    peers = load("odds_benchmark.py").available(load("odds_benchmark.py").PEERS)
    names = {
        "scores": ["defaults", "reconstruction_term", "latent_term", "standardised_terms"]
        + ["iwae", "aggregate_posterior", "latent_mixture", "aggregate_posterior_kde"]
        + ["gaussian_member", "members_min", "members_median", "members_mixture"]
        + ["gaussian_tails", "max_feature"],
        "linear_path": ["defaults", "autograd_control", "linear_path"],
        "exclusion": ["defaults", "exclude_10", "exclude_30", "freeze"],
        "trim_anew": [f"{n}_{k}" for k in range(3) for n in ("defaults", "anew")],
        "peer_ensembles": ["defaults", *peers, *(f"with_{p}" for p in peers), "with_all"],
        "capacity": ["defaults", "other_stream", "five_single_fits", "latent_range"]
        + ["width_range", "width_and_latent_range", "width_range_batched"],
        "selection": ["average", "pick", "stack", "weighted"],
        "streams": [f"stream_{k}" for k in range(5)],
        "concentration": [f"{n}_{k}" for k in range(3) for n in ("defaults", "refit")]
        + ["refit_after_full_fit"],
        "params": ["defaults", "params"],
    }[candidate]
    assert list(record["summary"]) == names
    for summary in record["summary"].values():
        assert 0.0 <= summary["roc_auc"] <= 1.0
        assert list(summary["per_set_roc_auc"]) == ["wine"]
    if candidate == "params":
        assert record["params"] == {"beta": 2.0}
    if candidate == "peer_ensembles":
        best = max(record["summary"][p]["roc_auc"] for p in peers)  # one set, one seed
        assert record["best_peer_per_set_roc_auc"] == pytest.approx(best)
    if candidate == "linear_path":  # autograd's gradient trains the defaults as the hand's
        row = record["rows"][0]
        assert row["autograd_control"] == pytest.approx(row["defaults"], abs=1e-3)
    if candidate in ("streams", "concentration", "trim_anew"):
        first = "stream_0" if candidate == "streams" else "defaults_0"
        record["rows"][0]["defaults"] = record["rows"][0][first]
    if candidate == "selection":
        weights = record["rows"][0]["weights"]
        assert len(weights) == 5 and sum(weights) == pytest.approx(1.0)
        return
    # every candidate's defaults are the estimator's own
    X_tr, X_te, y_te = load("candidates_benchmark.py")._holdout_adbench_split(None, "wine", 0)
    scores = VAEOutlierDetector(random_state=0).fit(X_tr).score_samples(X_te)
    from sklearn.metrics import roc_auc_score

    assert record["rows"][0]["defaults"] == pytest.approx(roc_auc_score(y_te, -scores))


def test_candidates_width_range_keeps_each_members_width():
    candidates = load("candidates_benchmark.py")
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 8))
    with candidates.width_range():
        det = VAEOutlierDetector(random_state=0, epochs=30).fit(X)
    layer = det.module_.encoder_layers[0]  # 64 hidden units; members keep 16, 24, 32, 48, 64
    for member, keep in enumerate([16, 24, 32, 48, 64]):
        assert torch.all(layer.weight[member, :, keep:] == 0)
        assert torch.all(layer.weight[member, :, :keep] != 0)
    assert np.isfinite(det.score_samples(X)).all()


def test_candidates_em_weights_find_the_generating_mixture():
    candidates = load("candidates_benchmark.py")
    rng = np.random.RandomState(0)
    from scipy.stats import norm

    # samples from 0.8 N(0, 1) + 0.2 N(4, 1), judged by the two components' densities
    x = np.where(rng.rand(20_000) < 0.8, rng.normal(0, 1, 20_000), rng.normal(4, 1, 20_000))
    weights = candidates.em_weights(np.array([norm.logpdf(x, 0, 1), norm.logpdf(x, 4, 1)]))
    assert weights == pytest.approx([0.8, 0.2], abs=0.01)


def test_candidates_autograd_gradient_is_the_hand_written_one():
    candidates = load("candidates_benchmark.py")
    from skvae._network import VAEEnsemble

    x = torch.randn(3, 40, 6, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 40, 2, generator=torch.Generator().manual_seed(1))
    grads = []
    for cls in (VAEEnsemble, candidates.AutogradVAE, candidates.LinearPathVAE):
        net = cls(6, 2, (8, 4), n_members=3, decoder_df=5.0)
        net.reset_parameters(torch.Generator().manual_seed(2))
        for param in net.parameters():
            param.grad = torch.zeros_like(param)
        kept = torch.rand(3, 40, generator=torch.Generator().manual_seed(3)) > 0.2
        loss, _, _ = net.loss_gradient(x, noise, 1.0, 0.1)
        grads.append((loss, {n: p.grad.clone() for n, p in net.named_parameters()}))
        loss, _, _ = net.loss_gradient(x, noise, 1.0, 0.1, kept=kept)  # after the check
        grads.append((loss, {n: p.grad.clone() for n, p in net.named_parameters()}))
    (hand_loss, hand), (hand_kept_loss, hand_kept) = grads[0:2]
    (auto_loss, auto), (auto_kept_loss, auto_kept) = grads[2:4]
    (linear_loss, linear) = grads[4]
    assert torch.allclose(auto_loss, hand_loss, atol=1e-5)
    assert torch.allclose(auto_kept_loss, hand_kept_loss, atol=1e-5)
    for name, grad in hand.items():
        assert torch.allclose(auto[name], grad, atol=1e-4, rtol=1e-4), name
        assert torch.allclose(auto_kept[name], hand_kept[name], atol=1e-4, rtol=1e-4), name
    # the linear path starts at zero: the same loss, and a gradient that moves it
    assert torch.allclose(linear_loss, hand_loss, atol=1e-5)
    assert linear["decoder_linear"].abs().sum() > 0 and linear["encoder_linear"].abs().sum() > 0


def test_candidates_training_exclusion_drops_rows_for_good():
    candidates = load("candidates_benchmark.py")
    from skvae._network import VAEEnsemble

    net = VAEEnsemble(4, 2, (8,), n_members=2)
    values = torch.rand(2, 50, generator=torch.Generator().manual_seed(0))
    default = VAEEnsemble.trim_weights
    with candidates.training_exclusion(step=3, fraction=0.2):
        net._in_step = True
        for _ in range(2):  # before the step: the defaults' trimming
            assert torch.equal(net.trim_weights(values, 0.1), default(values, 0.1))
        net.trim_weights(values, 0.1)  # the step: the 10 highest of each member go
        dropped = torch.topk(values, 10, dim=1).indices
        later = torch.rand(2, 50, generator=torch.Generator().manual_seed(1))
        later.scatter_(1, dropped, 0.0)  # now the lowest losses, and still dropped
        weights = net.trim_weights(later, 0.1)
        assert torch.all(weights.gather(1, dropped) == 0)
        assert torch.all((weights > 0).sum(1) == 36)  # 90 % of the 40 left
        assert torch.allclose(weights.sum(1), torch.ones(2))
    assert VAEEnsemble.trim_weights(values, 0.1).shape == values.shape  # restored
    from skvae import _training

    assert _training.concentrate.__name__ == "concentrate"
    X = np.random.RandomState(0).normal(size=(200, 4))
    before = VAEOutlierDetector(random_state=0, epochs=30).fit(X).score_samples(X)
    with candidates.training_exclusion(step=20, fraction=0.1):
        changed = VAEOutlierDetector(random_state=0, epochs=30).fit(X).score_samples(X)
    after = VAEOutlierDetector(random_state=0, epochs=30).fit(X).score_samples(X)
    assert not np.allclose(changed, before) and np.array_equal(after, before)


def test_candidates_aggregate_posterior_is_the_mixture_density():
    candidates = load("candidates_benchmark.py")
    from scipy.stats import multivariate_normal

    rng = np.random.RandomState(0)
    mu, mu_ref, logvar_ref = (
        rng.normal(size=(2, 5, 3)),
        rng.normal(size=(2, 7, 3)),
        rng.normal(size=(2, 7, 3)),
    )
    out = candidates.aggregate_posterior(mu, mu_ref, logvar_ref)
    for m in range(2):
        densities = [
            multivariate_normal(mu_ref[m, i], np.diag(np.exp(logvar_ref[m, i]))).pdf(mu[m])
            for i in range(7)
        ]
        assert out[m] == pytest.approx(np.log(np.mean(densities, 0)))
