"""Attacks: files are untrusted input, and every bad input gets one clear line.

A regression corpus built here: pickle payloads that create a marker file, offered at
every entry point that reads a file; a zip bomb; absurd architectures; tampered
metadata fields (with consistent checksums, as an attacker would write them); truncated
and bit-flipped files; bad command-line input. A hypothesis test mutates valid ``.skvae``
files: every outcome is a load with identical scores or a ValueError, never another
exception, never the payload running, never unbounded memory. Corruption (checksums
left as they were) loads with identical scores or fails; a consistent edit (checksums
rewritten, as an attacker can) loads as a valid model or fails.
"""

import hashlib
import io
import json
import pickle
import resource
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skvae
from skvae.cli import main
from skvae.compat import VAE
from skvae.datasets import load_dataset, load_transitions, split_indices

MARKER = "skvae-payload-ran"


class Payload:
    """Unpickling this creates the marker file (stands for arbitrary code)."""

    def __init__(self, folder):
        self.path = str(folder / MARKER)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    X = np.random.RandomState(0).normal(size=(200, 4))
    det = skvae.VAEOutlierDetector(epochs=3, hidden_dims=(8, 4), random_state=0).fit(X)
    return det, det.save(folder / "good.skvae"), X


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members, resum=True):
    """Write members as a .skvae archive, with matching checksums when ``resum`` (an
    attacker's consistent edit; the checksums catch corruption, not tampering)."""
    members = dict(members)
    if resum:
        members["SHA256SUMS"] = "".join(
            f"{hashlib.sha256(members[n]).hexdigest()}  {n}\n"
            for n in ("metadata.json", "weights.pt")
            if n in members
        ).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _with_meta(model, tmp_path, edit, name="edited.skvae"):
    _, good, _ = model
    members = _members(good)
    meta = json.loads(members["metadata.json"])
    edit(meta)
    members["metadata.json"] = json.dumps(meta).encode()
    return _write(tmp_path / name, members)


# ------------------------------------------------------------- code execution
ENTRY_POINTS = [
    "skvae.load(.joblib)",
    "skvae.load(pair)",
    "compat.VAE.load_model(pair)",
    "skvae score (.joblib)",
    "skvae score (pair)",
    "datasets.load_transitions(.pkl)",
    "datasets.load_dataset(data_path=.pkl)",
    "skvae train --data-path .pkl",
    "skvae score (data .pkl)",
    "torch payload in .skvae weights",
]


def _payload_files(tmp_path, model):
    payload = Payload(tmp_path)
    (tmp_path / "evil.joblib").write_bytes(pickle.dumps(payload))
    (tmp_path / "evil_meta_data.pkl").write_bytes(pickle.dumps({"input_dim": payload}))
    torch.save({}, tmp_path / "evil_model.pth")
    (tmp_path / "data.pkl").write_bytes(
        pickle.dumps({"observations": payload, "actions": np.zeros((5, 1))})
    )
    buffer = io.BytesIO()
    torch.save({"center": payload}, buffer)  # a pickle inside the weights member
    members = _members(model[1])
    members["weights.pt"] = buffer.getvalue()
    _write(tmp_path / "evil.skvae", members)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_no_file_runs_code(entry, model, tmp_path, capsys):
    _payload_files(tmp_path, model)
    good = str(model[1])
    calls = {
        "skvae.load(.joblib)": lambda: skvae.load(tmp_path / "evil.joblib"),
        "skvae.load(pair)": lambda: skvae.load(tmp_path / "evil"),
        "compat.VAE.load_model(pair)": lambda: VAE.load_model(str(tmp_path / "evil")),
        "skvae score (.joblib)": lambda: main(["score", str(tmp_path / "evil.joblib"), "x.npy"]),
        "skvae score (pair)": lambda: main(["score", str(tmp_path / "evil"), "x.npy"]),
        "datasets.load_transitions(.pkl)": lambda: load_transitions(tmp_path / "data.pkl"),
        "datasets.load_dataset(data_path=.pkl)": lambda: load_dataset(
            data_path=tmp_path / "data.pkl"
        ),
        "skvae train --data-path .pkl": lambda: main(
            ["train", "--data-path", str(tmp_path / "data.pkl"), "--quiet"]
        ),
        "skvae score (data .pkl)": lambda: main(["score", good, str(tmp_path / "data.pkl")]),
        "torch payload in .skvae weights": lambda: skvae.load(tmp_path / "evil.skvae"),
    }
    try:
        result = calls[entry]()
    except ValueError as exc:
        assert (
            "allow_code_execution" in str(exc) or "weights" in str(exc) or "checksum" in str(exc)
        ), exc
    else:
        assert result == 2  # the command line: one line, exit 2
        err = capsys.readouterr().err
        assert err.startswith("skvae: error:") and err.count("\n") == 1
    assert not (tmp_path / MARKER).exists(), entry


def test_code_runs_only_with_the_explicit_opt_in(model, tmp_path):
    _payload_files(tmp_path, model)
    with pytest.raises(ValueError, match="not a detector"):
        skvae.load(tmp_path / "evil.joblib", allow_code_execution=True)
    assert (tmp_path / MARKER).exists()  # the opt-in's name says what it does


# ------------------------------------------------------------- .skvae files trusted too far
TAMPERED = {
    "offset NaN": lambda m: m["fitted"].update(offset=float("nan")),
    "offset 1e308": lambda m: m["fitted"].update(offset=1e308),
    "offset 9000 sd out": lambda m: m["fitted"].update(
        offset=m["fitted"]["score_mean"] - 9000 * m["fitted"]["score_std"]
    ),
    "offset a string": lambda m: m["fitted"].update(offset="0"),
    "score_std negative": lambda m: m["fitted"].update(score_std=-1.0),
    "score_mean infinite": lambda m: m["fitted"].update(score_mean=float("inf")),
    "n_features_in off by one": lambda m: m["fitted"].update(n_features_in=5),
    "feature names too short": lambda m: m["fitted"].update(feature_names_in=["a"]),
    "history of strings": lambda m: m["fitted"].update(history={"train_loss": ["x"]}),
    "device unknown": lambda m: m["fitted"].update(device="tpu"),
    "fitted missing": lambda m: m.pop("fitted"),
    "params out of range": lambda m: m["params"].update(lr=-1.0),
    "params unknown": lambda m: m["params"].update(exploit=1),
    "params not a dict": lambda m: m.update(params=[1, 2]),
    "network 10^6 members": lambda m: m["network"].update(n_members=10**6),
    "network 1000 score samples": lambda m: m["network"].update(n_score_samples=1000),
    "network huge width": lambda m: m["network"].update(hidden_dims=[10**9]),
    "network extra key": lambda m: m["network"].update(exploit=1),
    "network wrong latent": lambda m: m["network"].update(latent_dim=3),
    "candidates NaN": lambda m: m["info"].update(threshold_candidates={"5": float("nan")}),
    "feature names repeated": lambda m: m["fitted"].update(feature_names_in=["a", "a", "b", "c"]),
    "feature names not strings": lambda m: m["fitted"].update(feature_names_in=[1, 2, 3, 4]),
    "info names too few": lambda m: m["info"].update(feature_names=["a"]),
    "candidates far out": lambda m: m["info"].update(threshold_candidates={"5": 3e299}),
    "candidates beyond float": lambda m: m["info"].update(threshold_candidates={"5": 10**400}),
    "candidate key 10**300": lambda m: m["info"].update(threshold_candidates={"1" + "0" * 300: 1}),
    "candidate key 0": lambda m: m["info"].update(threshold_candidates={"0": 1}),
    "info not a dict": lambda m: m.update(info=[1]),
    "newer format": lambda m: m.update(format_version=99),
    "not a skvae file": lambda m: m.update(format="other"),
}
# What each refusal says (a regular expression), so that a case cannot pass on the
# wrong error.
TAMPERED_MESSAGES = {
    "offset NaN": r"'fitted.offset' is missing or not finite",
    "offset 1e308": r"'fitted.offset' lies more than 1000 standard deviations",
    "offset 9000 sd out": r"'fitted.offset' lies more than 1000 standard deviations",
    "offset a string": r"'fitted.offset' is missing or not finite",
    "score_std negative": r"'fitted.score_std' is negative",
    "score_mean infinite": r"'fitted.score_mean' is missing or not finite",
    "n_features_in off by one": r"'fitted.n_features_in' does not match the network",
    "feature names too short": r"'fitted.feature_names_in' must be 4 unique strings",
    "history of strings": r"'fitted.history' is invalid",
    "device unknown": r"'fitted.device' is invalid",
    "fitted missing": r"'fitted' is missing or not a dict",
    "params out of range": r"invalid hyperparameters .* 'lr' parameter",
    "params unknown": r"invalid hyperparameters .* unexpected keyword argument 'exploit'",
    "params not a dict": r"'params' is missing or not a dict",
    "network 10^6 members": r"'network.n_members' is invalid",
    "network 1000 score samples": r"do not fit the architecture: score_noise",
    "network huge width": r"'network.hidden_dims' is invalid",
    "network extra key": r"'network' must have exactly",
    "network wrong latent": r"do not fit the architecture: decoder_layers.0.weight",
    "candidates NaN": r"threshold_candidates\[5\] must be a finite number",
    "feature names repeated": r"'fitted.feature_names_in' must be 4 unique strings",
    "feature names not strings": r"'fitted.feature_names_in' must be 4 unique strings",
    "info names too few": r"info field 'feature_names' must be 4 unique strings",
    "candidates far out": r"threshold_candidates\[5\] lies more than 1000 standard",
    "candidates beyond float": r"threshold_candidates\[5\] must be a finite number",
    "candidate key 10**300": r"percentiles in \(0, 100\)",
    "candidate key 0": r"percentiles in \(0, 100\)",
    "info not a dict": r"'info' must be a mapping",
    "newer format": r"uses model format 99, newer than this skvae",
    "not a skvae file": r"not a skvae model file",
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_metadata_is_refused(case, model, tmp_path):
    path = _with_meta(model, tmp_path, TAMPERED[case])
    with pytest.raises(ValueError, match=TAMPERED_MESSAGES[case]):
        skvae.load(path)


@pytest.mark.parametrize(
    "metadata", [b"[1, 2]", b"null", b"{}", b'"text"', b"{" * 100_000, b"\xff\xfe"]
)
def test_metadata_that_is_not_an_object(metadata, model, tmp_path):
    members = _members(model[1])
    members["metadata.json"] = metadata
    with pytest.raises(ValueError, match="not a skvae model file|corrupted skvae model file"):
        skvae.load(_write(tmp_path / "m.skvae", members))


TAMPERED_WEIGHTS = {
    "center NaN": lambda s: s["center"].fill_(float("nan")),
    "scale zero": lambda s: s["scale"].zero_(),
    "center of length 1": lambda s: s.update(center=torch.zeros(1, dtype=torch.float64)),
    "a weight missing": lambda s: s.pop("decoder_head.bias"),
    "an extra weight": lambda s: s.update(extra=torch.zeros(3)),
    "integer weights": lambda s: s.update(scale=torch.ones(4, dtype=torch.int64)),
    "infinite weight": lambda s: s["encoder_head.weight"].fill_(float("inf")),
    "training scores 2D": lambda s: s.update(__decision_scores__=torch.zeros(2, 2)),
    "training scores NaN": lambda s: s["__decision_scores__"].fill_(float("nan")),
    "not a dict": lambda s: None,
}
TAMPERED_WEIGHTS_MESSAGES = {
    "center NaN": r"weight 'center' is not a finite float tensor",
    "scale zero": r"weight 'scale' must be positive",
    "center of length 1": r"do not fit the architecture: center is \(1,\)",
    "a weight missing": r"decoder_head.bias is missing",
    "an extra weight": r"extra is \(3,\), expected absent",
    "integer weights": r"weight 'scale' is not a finite float tensor",
    "infinite weight": r"weight 'encoder_head.weight' is not a finite float tensor",
    "training scores 2D": r"training scores are not a finite 1D array",
    "training scores NaN": r"training scores are not a finite 1D array",
    "not a dict": r"not a state dict of tensors",
}


@pytest.mark.parametrize("case", list(TAMPERED_WEIGHTS))
def test_tampered_weights_are_refused(case, model, tmp_path):
    members = _members(model[1])
    state = torch.load(io.BytesIO(members["weights.pt"]), weights_only=True)
    TAMPERED_WEIGHTS[case](state)
    buffer = io.BytesIO()
    torch.save([1, 2] if case == "not a dict" else state, buffer)
    members["weights.pt"] = buffer.getvalue()
    with pytest.raises(ValueError, match=TAMPERED_WEIGHTS_MESSAGES[case]):
        skvae.load(_write(tmp_path / "w.skvae", members))


@pytest.mark.slow
def test_zip_bomb_is_refused_before_it_inflates(model, tmp_path):
    members = _members(model[1])
    meta = json.loads(members["metadata.json"])
    meta["info"]["padding"] = " " * (600 * 2**20)  # 600 MB of JSON, ~0.6 MB zipped
    members["metadata.json"] = json.dumps(meta).encode()
    path = _write(tmp_path / "bomb.skvae", members)
    del members, meta
    assert path.stat().st_size < 2 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="over the limit"):
        skvae.load(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


def test_absurd_architecture_is_refused_before_allocating(model, tmp_path):
    def huge(meta):
        meta["network"].update(n_members=4000, n_score_samples=60000, latent_dim=60000)

    path = _with_meta(model, tmp_path, huge)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="parameters, over the limit"):
        skvae.load(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.99])
def test_truncated_files(cut, model, tmp_path):
    data = model[1].read_bytes()
    (tmp_path / "t.skvae").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match=r"not a skvae model file \(not a zip archive\)"):
        skvae.load(tmp_path / "t.skvae")


def test_unexpected_members_are_refused(model, tmp_path):
    members = _members(model[1])
    with pytest.raises(ValueError, match="unexpected"):
        skvae.load(_write(tmp_path / "x.skvae", {**members, "../../evil.py": b"x"}, False))
    no_sums = {k: v for k, v in members.items() if k != "SHA256SUMS"}
    with pytest.raises(ValueError, match="SHA256SUMS"):
        skvae.load(_write(tmp_path / "y.skvae", no_sums, resum=False))


# ------------------------------------------------------------- hypothesis: mutated files
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)


def _paths(meta, prefix=()):
    for key, value in meta.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


# a mutated "versions" field is a consistent edit that loads with this warning
@pytest.mark.filterwarnings("ignore:.* was written by .*; this is skvae:UserWarning")
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_files_load_identically_or_fail_with_valueerror(model, tmp_path_factory, data):
    det, good, X = model
    members = _members(good)
    kind = data.draw(st.sampled_from(["bytes", "json field", "member", "weights bytes"]))
    resum = True
    if kind == "bytes":
        raw = bytearray(good.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        path = tmp_path_factory.mktemp("m") / "m.skvae"
        path.write_bytes(bytes(raw))
    else:
        if kind == "json field":
            meta = json.loads(members["metadata.json"])
            where = data.draw(st.sampled_from(sorted(_paths(meta))))
            target = meta
            for key in where[:-1]:
                target = target[key]
            target[where[-1]] = data.draw(JSON_VALUES)
            members["metadata.json"] = json.dumps(meta).encode()
        elif kind == "member":
            name = data.draw(st.sampled_from(sorted(members)))
            action = data.draw(st.sampled_from(["drop", "empty", "random"]))
            if action == "drop":
                del members[name]
            else:
                members[name] = b"" if action == "empty" else data.draw(st.binary(max_size=64))
            resum = data.draw(st.booleans())
        else:
            w = bytearray(members["weights.pt"])
            i = data.draw(st.integers(0, len(w) - 1))
            w[i] ^= data.draw(st.integers(1, 255))
            members["weights.pt"] = bytes(w)
            resum = data.draw(st.booleans())
        path = _write(tmp_path_factory.mktemp("m") / "m.skvae", members, resum=resum)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = skvae.load(path)
    except ValueError:
        return
    except FileNotFoundError:
        pytest.fail("a file that exists was reported missing")
    finally:  # torch never gets to warn about a file skvae has not checked
        torch_warnings = [str(w.message) for w in caught if "torch" in Path(w.filename).parts]
        assert not torch_warnings, torch_warnings
    scores = loaded.score_samples(X)
    if kind == "bytes" or not resum:  # corruption: caught, or it did not matter
        np.testing.assert_array_equal(scores, det.score_samples(X))
    else:  # a consistent edit (checksums rewritten): a valid model, finite scores
        assert scores.shape == (200,) and np.isfinite(scores).all()


def test_mutation_runs_stayed_bounded():
    # the whole process, after every test above: no mutation allocated gigabytes
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 < 6


# ------------------------------------------------------------- saving never loses work
@pytest.mark.parametrize("hidden_dims", [(8, np.int64(4)), np.array([8, 4]), [np.int32(8)], (8,)])
def test_whatever_the_parameter_check_accepts_can_be_saved(hidden_dims, tmp_path):
    X = np.random.RandomState(0).normal(size=(60, 3))
    det = skvae.VAEOutlierDetector(hidden_dims=hidden_dims, epochs=2, random_state=0).fit(X)
    det.save(tmp_path / "m.skvae")
    np.testing.assert_array_equal(
        skvae.load(tmp_path / "m.skvae").score_samples(X), det.score_samples(X)
    )


def test_unsaveable_detector_leaves_the_previous_file(model, tmp_path):
    det, good, X = model
    path = tmp_path / "keep.skvae"
    path.write_bytes(good.read_bytes())
    bad = skvae.load(good)
    bad.history_ = {"train_loss": [object()]}  # cannot be stored
    with pytest.raises(TypeError, match="history"):
        bad.save(path)
    assert path.read_bytes() == good.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.skvae"]


def test_interrupted_command_line_exits_130_and_leaves_nothing(
    model, tmp_path, monkeypatch, capsys
):
    det, good, X = model
    np.save(tmp_path / "x.npy", X)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    out = tmp_path / "scores.npy"
    assert main(["score", str(good), str(tmp_path / "x.npy"), "--output", str(out)]) == 130
    assert capsys.readouterr().err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# ------------------------------------------------------------- loaders and edges
def test_split_and_penalty_edges():
    empty = {"terminals": np.zeros(0, bool), "timeouts": np.zeros(0, bool)}
    with pytest.raises(ValueError, match="no transitions"):
        split_indices(empty)
    some = {"terminals": np.zeros(10, bool), "timeouts": np.zeros(10, bool)}
    with pytest.raises(ValueError, match="finite"):
        split_indices(some, val_ratio=float("nan"))


@pytest.mark.slow
def test_score_of_int64_input_is_not_copied_whole(model):
    import tracemalloc

    det, _, _ = model
    X = np.random.RandomState(0).randint(-3, 3, size=(2_000_000, 4))  # 64 MB of int64
    tracemalloc.start()
    scores = det.score_samples(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert scores.shape == (2_000_000,)
    assert peak < 40 * 2**20  # the float64 output (16 MB) and chunks, not a 64 MB copy


def test_tensors_that_require_grad(model):
    det, _, X = model
    t = torch.tensor(X, requires_grad=True)
    fitted = skvae.VAEOutlierDetector(epochs=2, random_state=0).fit(t)
    mu, logvar = fitted.encode(t)
    assert mu.shape == (200, fitted.latent_dim_)
    assert fitted.score_samples(t).requires_grad is False


def test_scores_do_not_depend_on_the_batch(model):
    det, _, X = model
    full = det.score_samples(X)
    alone = np.array([det.score_samples(X[i : i + 1])[0] for i in range(0, 200, 7)])
    np.testing.assert_array_equal(alone, full[::7])  # fixed-shape chunks: bit for bit


def test_huge_values_scale_instead_of_collapsing():
    X = np.random.RandomState(0).normal(size=(200, 3))
    big = skvae.VAEOutlierDetector(epochs=3, random_state=0).fit(X * 1e300)
    small = skvae.VAEOutlierDetector(epochs=3, random_state=0).fit(X)
    s = big.score_samples(X * 1e300)
    assert np.unique(s).size == 200
    np.testing.assert_allclose(s, small.score_samples(X), rtol=1e-6)


# ------------------------------------------------------------- memory follows the file
def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_expanded_weights_are_refused_before_they_cost_memory(model, tmp_path):
    """A small file whose tensors claim many values they do not store (stride 0)."""

    def wide(meta):
        meta["network"]["hidden_dims"] = [4096, 4096]  # 100M parameters, under the limit

    path = _with_meta(model, tmp_path, wide)
    members = _members(path)
    meta = json.loads(members["metadata.json"])
    from skvae._network import state_shapes

    state = {
        k: torch.zeros(
            1, dtype=torch.float64 if k in ("center", "scale") else torch.float32
        ).expand(*shape)
        for k, shape in state_shapes(meta["network"]).items()
    }
    state["scale"] = torch.ones(1, dtype=torch.float64).expand(meta["network"]["n_features"])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    members["weights.pt"] = buffer.getvalue()
    file = _write(tmp_path / "expanded.skvae", members)
    before = _rss_mib()
    with pytest.raises(ValueError, match="not a dense, contiguous tensor"):
        skvae.load(file)
    assert _rss_mib() - before < 10 * file.stat().st_size / 2**20 + 50


def test_a_member_inflating_past_ten_times_its_size_is_refused(model, tmp_path):
    members = _members(model[1])
    members["metadata.json"] = members["metadata.json"] + b" " * (40 * 2**20)  # 40 MiB
    file = _write(tmp_path / "inflating.skvae", members)
    assert file.stat().st_size < 2**20
    with pytest.raises(ValueError, match="inflates past the limit|over the limit"):
        skvae.load(file)


def test_weights_beyond_float32_are_refused_not_blamed_on_x(model, tmp_path):
    members = _members(model[1])
    state = torch.load(io.BytesIO(members["weights.pt"]), weights_only=True)
    state["encoder_head.weight"] = state["encoder_head.weight"].double().fill_(1e300)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    members["weights.pt"] = buffer.getvalue()
    with pytest.raises(ValueError, match=r"'encoder_head.weight' is not a finite float tensor"):
        skvae.load(_write(tmp_path / "big.skvae", members))


def test_the_plain_data_unpickler_allocates_only_what_the_file_holds(tmp_path):
    from skvae._persistence import load_plain_pickle

    class Reconstructed:  # 300 bytes that would ask NumPy for 16 GiB
        def __reduce__(self):
            core = np._core if hasattr(np, "_core") else np.core
            return (core.multiarray._reconstruct, (np.ndarray, (2**34,), b"b"))

    (tmp_path / "huge.pkl").write_bytes(pickle.dumps({"observations": Reconstructed()}, 4))
    before = _rss_mib()
    with pytest.raises(ValueError, match="reconstructed with a shape"):
        load_plain_pickle(tmp_path / "huge.pkl")
    assert _rss_mib() - before < 50
    data = {"a": np.arange(5.0), "b": np.ones((2, 3), np.float32)}
    for protocol in (2, 4, 5):  # plain arrays still load, whatever the protocol
        (tmp_path / "ok.pkl").write_bytes(pickle.dumps(data, protocol))
        back = load_plain_pickle(tmp_path / "ok.pkl")
        np.testing.assert_array_equal(back["b"], data["b"])


def test_numbers_beyond_float_range_and_deep_nesting_in_a_model_file(model, tmp_path):
    path = _with_meta(model, tmp_path, lambda m: m["fitted"].update(score_std=10**400))
    with pytest.raises(ValueError, match="'fitted.score_std' is missing or not finite"):
        skvae.load(path)
    members = _members(model[1])
    members["metadata.json"] = b"[" * 2000 + b"]" * 2000
    with pytest.raises(ValueError, match="nested too deeply|not a skvae model file"):
        skvae.load(_write(tmp_path / "deep.skvae", members))


# ------------------------------------------------------------- pickles of plain data
class _Reduce:
    """Pickles as ``func(*args)``, then BUILD with ``state`` when given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _opcodes(*parts: bytes) -> bytes:
    return b"\x80\x04" + b"".join(parts) + b"."


def _nested_codecs(depth: int):
    import _codecs

    value = "ab" * 50
    for _ in range(depth):
        value = _Reduce(_codecs.encode, (value, "hex_codec"))
    return value


_CORE = np._core if hasattr(np, "_core") else np.core
HOSTILE_PICKLES = {
    # NumPy internals: a dtype whose state declares an object field at an offset (NumPy
    # would dereference an attacker-chosen pointer), object scalars and arrays
    "dtype with an object field": lambda: pickle.dumps(
        {
            "threshold": _Reduce(
                np.dtype,
                ("f8", False, True),
                (3, "|", None, ("a",), {"a": (np.dtype("O"), 8)}, 16, 1, 63),
            )
        },
        2,
    ),
    "object scalar": lambda: pickle.dumps({"threshold": np.array([None], object)[0:1]}, 4),
    "object dtype scalar call": lambda: pickle.dumps(
        {"threshold": _Reduce(_CORE.multiarray.scalar, (np.dtype("O"), b"\0" * 8))}, 4
    ),
    "structured array": lambda: pickle.dumps({"t": np.zeros(2, "f8,O")}, 4),
    "V0 array": lambda: pickle.dumps({"t": np.zeros(3, "V0")}, 4),
    "array shape beyond its bytes": lambda: pickle.dumps(
        {"t": _Reduce(_CORE.multiarray._reconstruct, (np.ndarray, (3 * 10**8, 1), b"b"))}, 4
    ),
    "frombuffer shape beyond its bytes": lambda: pickle.dumps(
        {"t": _Reduce(_CORE.numeric._frombuffer, (b"\0" * 8, np.dtype("f8"), (10**9,), "C"))}, 4
    ),
    # memory from nothing
    "memo index 2**27": lambda: _opcodes(b"N", b"r" + (2**27).to_bytes(4, "little")),
    "FRAME of 2**40": lambda: _opcodes(b"\x95" + (2**40).to_bytes(8, "little"), b"N"),
    "BINBYTES8 of 2**40": lambda: _opcodes(b"\x8e" + (2**40).to_bytes(8, "little")),
    "BINUNICODE8 of 2**40": lambda: _opcodes(b"\x8d" + (2**40).to_bytes(8, "little")),
    "BYTEARRAY8 of 2**40": lambda: _opcodes(b"\x96" + (2**40).to_bytes(8, "little")),
    "nested _codecs.encode": lambda: pickle.dumps({"t": _nested_codecs(20)}, 4),
    "deep lists": lambda: _opcodes(b"]" * 5_000, b"a" * 4_999),
    "deep tuples": lambda: _opcodes(b"N", b"\x85" * 50_000),
    "200,000 empty lists": lambda: _opcodes(b"](", b"]" * 200_000, b"e"),
    "a list in itself": lambda: _opcodes(b"]\x94h\x00a"),
    "DUP": lambda: _opcodes(b"]2a"),
    "memo read never written": lambda: _opcodes(b"h\x07"),
    "code": lambda: pickle.dumps({"t": _Reduce(eval, ("1",))}, 4),
}


def _hostile_entries(tmp_path, model, payload: bytes):
    """Every loader that reaches the plain-data reader, given ``payload``."""
    from skvae._plainpickle import load_plain_pickle
    from skvae.compat import VAE

    _, good, X = model
    beside = tmp_path / "m.skvae"
    beside.write_bytes(good.read_bytes())
    (tmp_path / "m_meta_data.pkl").write_bytes(payload)
    (tmp_path / "old_meta_data.pkl").write_bytes(payload)
    torch.save({}, tmp_path / "old_model.pth")
    (tmp_path / "data.pkl").write_bytes(payload)
    np.save(tmp_path / "X.npy", X[:5])
    return {
        "load_plain_pickle": lambda: load_plain_pickle(tmp_path / "data.pkl"),
        "skvae.load (threshold file beside .skvae)": lambda: skvae.load(beside),
        "skvae.load (old pair)": lambda: skvae.load(tmp_path / "old"),
        "compat.VAE.load_model": lambda: VAE.load_model(str(tmp_path / "old")),
        "load_transitions(.pkl)": lambda: load_transitions(tmp_path / "data.pkl"),
        "skvae score (threshold file)": lambda: main(
            ["score", str(beside), str(tmp_path / "X.npy")]
        ),
    }


@pytest.mark.parametrize("case", list(HOSTILE_PICKLES))
def test_hostile_pickles_are_refused_within_memory_at_every_loader(case, model, tmp_path, capsys):
    """No crash, no code, no memory beyond 10x the file plus the reader's allowance:
    a ValueError naming the file, or (the command line) one line and exit 2."""
    import tracemalloc

    from skvae._plainpickle import MEMORY_ALLOWANCE

    payload = HOSTILE_PICKLES[case]()
    for entry, call in _hostile_entries(tmp_path, model, payload).items():
        tracemalloc.start()
        try:
            result = call()
        except ValueError as exc:
            assert "pickle" in str(exc) or "plain data" in str(exc), (entry, exc)
            result = None
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        err = capsys.readouterr().err
        if case == "memo index 2**27":  # a valid pickle, of None: no threshold file
            assert result in (None, 0) or isinstance(result, skvae.VAEOutlierDetector), entry
        elif entry.startswith("skvae score"):
            assert result == 2 and err.count("\n") == 1, (entry, err)
        else:
            assert result is None, entry
        assert peak < 10 * len(payload) + MEMORY_ALLOWANCE + 48 * 2**20, (entry, peak)
    assert not (tmp_path / MARKER).exists()


def test_plain_data_reads_as_the_pickle_module_wrote_it():
    """Every protocol, every plain type the old module's files and datasets use."""
    import collections

    from skvae._plainpickle import loads_plain

    data = {
        "threshold": np.float64(-1.5),
        "n": np.int64(3),
        "flags": np.array([True, False]),
        "obs": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(3, dtype=">f8"),
        "hidden_dims": [256, 128],
        "pair": (1, "x", None),
        "bytes": b"\x00\xff",
        "set": {1, 2},
        "frozen": frozenset({3}),
        "ordered": collections.OrderedDict(a=1),
        "complex": 1 + 2j,
        "huge_int": 2**100,
        "text": "été",
    }
    for protocol in range(6):
        back = loads_plain(pickle.dumps(data, protocol))
        assert back.keys() == data.keys()
        for key, value in data.items():
            if isinstance(value, np.ndarray):
                assert back[key].dtype == value.dtype and back[key].shape == value.shape
                np.testing.assert_array_equal(back[key], value)
                assert back[key].flags.writeable
            else:
                assert back[key] == value and type(back[key]) is type(value), (protocol, key)


# ------------------------------------------------------------- values that pass validation work
def test_every_value_that_passes_validation_works(model, tmp_path):
    from skvae._thresholds import conformal_offset
    from skvae.compat import VAE
    from skvae.penalty import RewardPenalty

    det, good, X = model
    # alpha just below 1: the largest calibration score, not an IndexError
    cal = np.sort(np.random.RandomState(0).normal(size=50))
    assert conformal_offset(cal, 1 - 1e-12) == cal[-1]
    flagged = skvae.VAEOutlierDetector(epochs=3, alpha=1 - 1e-12, random_state=0).fit(X)
    assert np.isin(flagged.predict(X), (-1, 1)).all()
    # penalties: thresholds beyond float range refused up front, huge shapes finite
    with pytest.raises(ValueError, match="thr must be a finite number"):
        RewardPenalty(det, thr=10**400)
    for kind in ("hinge", "softplus", "hinge_tanh", "nll", "inverse", "linear"):
        pen = RewardPenalty(det, kind=kind, scale=1e308, coef=1e308, thr=1e300)
        assert np.isfinite(pen.penalty(X[:5] * 100)).all(), kind
        assert np.isfinite(pen.penalize(np.ones(5), X[:5] * 100)).all(), kind
        tensor = pen.penalize(torch.ones(5), torch.as_tensor(X[:5] * 100, dtype=torch.float32))
        assert torch.isfinite(tensor).all(), kind
    low = RewardPenalty(det, kind="inverse").penalize(np.ones(5, np.float16), X[:5] * 100)
    assert low.dtype == np.float16 and np.isfinite(low).all()
    # match_penalty_scale's dict: every field checked, one ValueError
    vae = VAE.load_model(str(good))
    ref = VAE.load_model(str(good))
    for bad, match in (
        ({"thr": float("nan")}, "finite"),
        ({"std": -1.0}, ">= 0"),
        ({"mean": float("inf")}, "finite"),
        ({"thr": 1e6}, "standard deviations"),
        ({"threshold_candidates": {5: float("nan")}}, "finite"),
        ({"threshold_candidates": {"x": 1.0}}, "percentiles"),
    ):
        with pytest.raises(ValueError, match=match):
            vae["model"].match_penalty_scale({**ref, **bad})
    with pytest.raises(ValueError, match="lacks"):
        vae["model"].match_penalty_scale({"model": ref["model"]})
    # the outlier scorer with one class is an error, not NaN
    with pytest.raises(ValueError, match="both classes"):
        skvae.outlier_scorer()(det, X[:10], -np.ones(10))
    # n_jobs=0 is refused when fitting and in a model file
    with pytest.raises(ValueError, match="n_jobs"):
        skvae.VAEOutlierDetector(n_jobs=0).fit(X)
    path = _with_meta(model, tmp_path, lambda m: m["params"].update(n_jobs=0))
    with pytest.raises(ValueError, match="n_jobs"):
        skvae.load(path)


def test_a_huge_scaling_samples_and_reconstructs_finite_values(model, tmp_path):
    det, good, X = model
    members = _members(good)
    state = torch.load(io.BytesIO(members["weights.pt"]), weights_only=True)
    state["center"] = torch.full_like(state["center"], 1e300)
    state["scale"] = torch.full_like(state["scale"], 1e300)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    members["weights.pt"] = buffer.getvalue()
    loaded = skvae.load(_write(tmp_path / "huge.skvae", members))
    assert np.isfinite(loaded.sample(20, random_state=0)).all()
    assert np.isfinite(loaded.reconstruct(X[:5] * 1e300)).all()


# ------------------------------------------------------------- rows in, scores out, files that lie
@pytest.mark.parametrize(
    "head, cell",
    [("\ufeff", "1.0"), ("0,1,2,3\n", "1.0"), ("", "NaN"), ("", "NA"), ("", ""),
     ("# exported\n", "1.0"), (",0,1,2,3\n", "1.0")],
)  # fmt: skip
def test_one_csv_row_in_one_score_out_in_order(head, cell, model, tmp_path, capsys):
    """The first-row cases that used to drop or add a row: 10 rows in, 10 scores out."""
    det, good, X = model
    rows = X[:10].copy()
    missing = cell != "1.0"
    if missing:
        rows[0, 0] = np.nan
    lines = [
        ",".join(cell if missing and (i, j) == (0, 0) else repr(v) for j, v in enumerate(r))
        for i, r in enumerate(rows.tolist())
    ]
    if head.startswith(","):  # pandas' index column under its integer header
        lines = [f"{i},{line}" for i, line in enumerate(lines)]
    (tmp_path / "x.csv").write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "s.csv"
    assert main(["score", str(good), str(tmp_path / "x.csv"), "--output", str(out)]) == 0
    scores = np.genfromtxt(out, delimiter=",", names=True)["score"]
    np.testing.assert_array_equal(scores, det.score_samples(rows))  # 10 rows, in order


def test_files_that_claim_what_they_do_not_hold_fail_fast_at_every_command(model, tmp_path, capsys):
    import os

    from numpy.lib import format as fmt

    _, good, _ = model
    with open(tmp_path / "hollow.npy", "wb") as fh:  # 128 bytes claiming 10**9 rows
        fmt.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 0)}
        )
    os.mkfifo(tmp_path / "fifo.csv")
    os.symlink("/dev/zero", tmp_path / "zero.csv")
    for name in ("hollow.npy", "fifo.csv", "zero.csv"):
        data = str(tmp_path / name)
        for argv in (
            ["train", "--data-path", data, "--quiet", "--model-save-path", str(tmp_path / "m")],
            ["score", str(good), data],
            ["thresholds", str(good), data],
        ):
            before = _rss_mib()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and ("regular file" in err or "claims" in err), err
            assert _rss_mib() - before < 100
