"""Tests for nncore.io: the project's .npz format and Nielsen's network2.py JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import nncore
from nncore.io import export_network2, import_network2, load, load_with_metadata, save
from nncore.network import Network
from nncore.regularizers import Regularizer

SIZES = [6, 5, 4, 3]


def make_net(cost: str = "cross_entropy", activation: str = "sigmoid", dtype: Any = np.float64,
             sizes: list[int] = SIZES, init: str = "default", seed: int = 0) -> Network:
    return Network(sizes, activation=activation, cost=cost, init=init, dtype=dtype,
                   rng=np.random.default_rng(seed))


def inputs(n_in: int, n: int = 7, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, n_in))


def assert_same_network(a: Network, b: Network) -> None:
    """Same config and bit-identical parameters (same dtype, same bytes)."""
    assert a.config() == b.config()
    assert len(a.weights) == len(b.weights) and len(a.biases) == len(b.biases)
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def network2_file(path: Path, sizes: list[int], cost: str = "CrossEntropyCost",
                  seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Create a file exactly the way network2.py's ``Network.save`` does; return its arrays.

    network2's ``default_weight_initializer``: biases ``randn(y, 1)`` (column vectors),
    weights ``randn(y, x) / sqrt(x)``.
    """
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]
    weights = [rng.standard_normal((y, x)) / np.sqrt(x) for x, y in zip(sizes[:-1], sizes[1:])]
    data = {"sizes": sizes,
            "weights": [w.tolist() for w in weights],
            "biases": [b.tolist() for b in biases],
            "cost": str(cost)}
    f = open(path, "w")
    json.dump(data, f)
    f.close()
    return weights, biases


def book_feedforward(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """network2.py's ``feedforward``: column vector ``a`` of shape (n_in, 1), ``a = sigmoid(W a + b)``."""
    a = x.reshape(-1, 1)
    for w, b in zip(weights, biases):
        a = sigmoid(np.dot(w, a) + b)
    return a


# -- project format: round trips --------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy", "log_likelihood"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_roundtrip_bit_identical(tmp_path: Path, dtype: str, cost: str, activation: str) -> None:
    net = make_net(cost, activation, dtype, init="xavier" if activation == "tanh" else "he")
    net.biases[0] += 0.25  # he/xavier biases are 0: make them non-trivial
    written = save(net, tmp_path / "net.npz")
    assert written == tmp_path / "net.npz" and written.is_file()
    back = load(written)
    assert back is not net
    assert_same_network(net, back)
    assert back.dtype == np.dtype(dtype)
    X = inputs(SIZES[0])
    out, out_back = net.feedforward(X), back.feedforward(X)
    assert out_back.dtype == np.dtype(dtype)
    assert np.array_equal(out, out_back)
    # the loaded arrays are independent of the file and of the saved network
    back.weights[0][0, 0] += 1.0
    assert load(written).weights[0][0, 0] == net.weights[0][0, 0]


def test_file_layout_plain_npz_without_pickle(tmp_path: Path) -> None:
    net = make_net()
    path = save(net, tmp_path / "net.npz", extra={"lmbda": 5.0})
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["W1", "W2", "W3", "b1", "b2", "b3", "metadata"]
        meta_arr = z["metadata"]
        assert meta_arr.ndim == 0 and meta_arr.dtype.kind == "U"
        meta = json.loads(meta_arr.item())
        assert meta == {"format": "nncore", "format_version": 1, "sizes": SIZES, "activation": "sigmoid",
                        "cost": "cross_entropy", "init": "default", "dtype": "float64", "extra": {"lmbda": 5.0}}
        assert z["W2"].shape == (4, 5) and z["b2"].shape == (4,)
        assert np.array_equal(z["W3"], net.weights[2])


def test_metadata_extra_roundtrips(tmp_path: Path) -> None:
    net = make_net("quadratic", "tanh", np.float32)
    extra = {"regularizer": Regularizer("l2", 5.0, "per_batch").to_dict(), "n_train": 500, "batch_size": 10,
             "history": [0.5, 0.25, None], "note": "épsilon ✓", "flags": {"momentum": False}}
    path = save(net, tmp_path / "run.npz", extra=extra)
    back, meta = load_with_metadata(path)
    assert meta["extra"] == extra
    assert meta["extra"]["regularizer"] == {"penalty": "l2", "lmbda": 5.0, "convention": "per_batch"}
    assert {k: meta[k] for k in ("sizes", "activation", "cost", "init", "dtype")} == net.config()
    assert (meta["format"], meta["format_version"]) == ("nncore", 1)
    assert_same_network(net, back)
    # no extra -> {}
    _, meta2 = load_with_metadata(save(net, tmp_path / "plain.npz"))
    assert meta2["extra"] == {}


def test_save_appends_npz_suffix_creates_folders_and_overwrites(tmp_path: Path) -> None:
    path = save(make_net(seed=1), tmp_path / "a" / "b" / "model")
    assert path == tmp_path / "a" / "b" / "model.npz" and path.is_file()
    net2 = make_net(seed=2)
    assert save(net2, path) == path
    assert_same_network(load(path), net2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz"]  # no temp files left


@pytest.mark.parametrize("extra, match", [
    ({"x": object()}, "JSON-serializable"),
    ({1: "a"}, "strings"),
    (["lmbda", 5.0], "dict"),
])
def test_save_rejects_bad_extra(tmp_path: Path, extra: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        save(make_net(), tmp_path / "net.npz", extra=extra)
    assert not list(tmp_path.iterdir())


def test_save_rejects_non_network(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Network"):
        save({"weights": []}, tmp_path / "x.npz")  # type: ignore[arg-type]


# -- project format: invalid files --------------------------------------------------
Mutation = Callable[[dict[str, np.ndarray], dict[str, Any]], None]


def _drop(key: str) -> Mutation:
    return lambda arrays, meta: arrays.pop(key)


def _set_meta(key: str, value: Any) -> Mutation:
    return lambda arrays, meta: meta.__setitem__(key, value)


def _del_meta(key: str) -> Mutation:
    return lambda arrays, meta: meta.pop(key)


def _set_array(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    return lambda arrays, meta: arrays.__setitem__(key, fn(arrays[key]))


def _raw_metadata(value: np.ndarray) -> Mutation:
    def mutate(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        meta.clear()
        arrays["metadata"] = value
    return mutate


CORRUPTIONS: dict[str, tuple[Mutation, str]] = {
    "missing metadata": (lambda arrays, meta: (arrays.pop("metadata"), meta.clear()), "missing 'metadata'"),
    "metadata not json": (_raw_metadata(np.array("{not json")), "'metadata' is not valid JSON"),
    "metadata not object": (_raw_metadata(np.array("[1, 2]")), "'metadata' must be a JSON object"),
    "metadata is array": (_raw_metadata(np.arange(3.0)), "'metadata' must be a 0-d string array"),
    "wrong format": (_set_meta("format", "keras"), "'format'"),
    "wrong version": (_set_meta("format_version", 2), "'format_version' 2"),
    "version as string": (_set_meta("format_version", "1"), "'format_version'"),
    "missing sizes": (_del_meta("sizes"), r"missing field\(s\) \['sizes'\]"),
    "missing extra": (_del_meta("extra"), r"missing field\(s\) \['extra'\]"),
    "bad sizes": (_set_meta("sizes", [6, 0, 4, 3]), "'sizes'"),
    "sizes mismatch": (_set_meta("sizes", [6, 7, 4, 3]), r"W1 has shape \(5, 6\), expected \(7, 6\)"),
    "fewer sizes than arrays": (_set_meta("sizes", [6, 5, 4]), r"unexpected array\(s\) \['W3', 'b3'\]"),
    "missing W3": (_drop("W3"), r"missing array\(s\) \['W3'\]"),
    "transposed W2": (_set_array("W2", lambda w: w.T.copy()), r"W2 has shape \(5, 4\), expected \(4, 5\)"),
    "bias as column": (_set_array("b1", lambda b: b.reshape(-1, 1)), r"b1 has shape \(5, 1\)"),
    "short bias": (_set_array("b3", lambda b: b[:2]), "b3 has shape"),
    "dtype mismatch": (_set_array("W1", lambda w: w.astype(np.float32)), "W1 has dtype float32.*'dtype'"),
    "unknown activation": (_set_meta("activation", "swish"), "'activation' parameter of Network must be a str among"),
    "unknown cost": (_set_meta("cost", "hinge"), "'cost' parameter of Network must be a str among"),
    "unknown dtype": (_set_meta("dtype", "float16"), "'dtype'"),
    "init not string": (_set_meta("init", 3), "'init' must be a string"),
    "extra not object": (_set_meta("extra", [1]), "'extra' must be a JSON object"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_invalid_files_raise_valueerror_naming_file_and_field(tmp_path: Path, name: str) -> None:
    mutate, match = CORRUPTIONS[name]
    path = save(make_net(), tmp_path / "good.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["metadata"].item())
    mutate(arrays, meta)
    if meta:
        arrays["metadata"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=match) as info:
        load(bad)
    assert str(info.value).startswith(str(bad))


def test_pickled_metadata_is_refused_not_unpickled(tmp_path: Path) -> None:
    bad = tmp_path / "pickled.npz"
    np.savez(bad, metadata=np.array({"format": "nncore"}, dtype=object), W1=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="pickle") as info:
        load(bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"hello, not a zip", b"PK\x03\x04truncated garbage"])
def test_non_npz_files_raise_valueerror(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "junk.npz"
    bad.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load(bad)
    assert str(info.value).startswith(str(bad))


def test_missing_file_raises_filenotfound(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


# -- network2.py JSON ----------------------------------------------------------------
@pytest.mark.parametrize("cost_name, cost", [("CrossEntropyCost", "cross_entropy"), ("QuadraticCost", "quadratic")])
def test_book_network2_file_loads_and_matches_column_vector_feedforward(tmp_path: Path, cost_name: str,
                                                                        cost: str) -> None:
    sizes = [6, 5, 4, 3]
    path = tmp_path / "book.json"
    weights, biases = network2_file(path, sizes, cost_name, seed=3)
    net = import_network2(path)
    assert net.config() == {"sizes": sizes, "activation": "sigmoid", "cost": cost, "init": "default",
                            "dtype": "float64"}
    for w, w2, b, b2 in zip(weights, net.weights, biases, net.biases):
        assert np.array_equal(w, w2) and np.array_equal(b[:, 0], b2)
    X = inputs(sizes[0], n=9, seed=4) * 3.0
    out = net.feedforward(X)
    expected = np.hstack([book_feedforward(weights, biases, x) for x in X]).T
    assert out.shape == (9, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)


def test_import_network2_float32(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    weights, _ = network2_file(path, [4, 3, 2])
    net = import_network2(path, dtype=np.float32)
    assert net.dtype == np.float32 and all(w.dtype == np.float32 for w in net.weights + net.biases)
    assert np.array_equal(net.weights[0], weights[0].astype(np.float32))


@pytest.mark.parametrize("cost", ["cross_entropy", "quadratic"])
def test_export_network2_structure_matches_network2(tmp_path: Path, cost: str) -> None:
    net = make_net(cost)
    path = export_network2(net, tmp_path / "net.json")
    assert path == tmp_path / "net.json"
    data = json.loads(path.read_text())
    assert list(data) == ["sizes", "weights", "biases", "cost"]
    assert data["sizes"] == SIZES
    assert data["cost"] == {"cross_entropy": "CrossEntropyCost", "quadratic": "QuadraticCost"}[cost]
    assert len(data["weights"]) == len(data["biases"]) == len(SIZES) - 1
    for l, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        w, b = data["weights"][l], data["biases"][l]
        assert len(w) == n_out and all(isinstance(row, list) and len(row) == n_in for row in w)
        assert len(b) == n_out and all(isinstance(row, list) and len(row) == 1 for row in b)  # (out, 1)
        assert all(isinstance(v, float) for row in w + b for v in row)
        assert np.array(b).shape == (n_out, 1) and np.array(w).shape == (n_out, n_in)
        assert np.array_equal(np.array(w), net.weights[l]) and np.array_equal(np.array(b)[:, 0], net.biases[l])
    # what network2.load + feedforward would compute from this file
    w2 = [np.array(w) for w in data["weights"]]
    b2 = [np.array(b) for b in data["biases"]]
    X = inputs(SIZES[0])
    expected = np.hstack([book_feedforward(w2, b2, x) for x in X]).T
    np.testing.assert_allclose(net.feedforward(X), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cost", ["cross_entropy", "quadratic"])
def test_network2_roundtrip_is_exact(tmp_path: Path, dtype: Any, cost: str) -> None:
    net = make_net(cost, dtype=dtype)
    back = import_network2(export_network2(net, tmp_path / "net.json"), dtype=dtype)
    assert_same_network(net, back)
    X = inputs(SIZES[0])
    assert np.array_equal(net.feedforward(X), back.feedforward(X))


def test_export_network2_without_hidden_layers_ignores_activation(tmp_path: Path) -> None:
    net = make_net(activation="relu", sizes=[4, 3])
    back = import_network2(export_network2(net, tmp_path / "net.json"))
    assert back.activation == "sigmoid"
    X = inputs(4)
    assert np.array_equal(net.feedforward(X), back.feedforward(X))


@pytest.mark.parametrize("kwargs, match", [
    ({"cost": "log_likelihood", "activation": "sigmoid"}, "log_likelihood"),
    ({"cost": "log_likelihood", "activation": "relu"}, "log_likelihood"),
    ({"cost": "cross_entropy", "activation": "tanh"}, "hidden activation 'tanh'"),
    ({"cost": "quadratic", "activation": "relu"}, "hidden activation 'relu'"),
])
def test_export_network2_rejects_unrepresentable(tmp_path: Path, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        export_network2(make_net(**kwargs), tmp_path / "net.json")
    assert not list(tmp_path.iterdir())


def _book_dict(sizes: list[int] = [4, 3, 2]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"sizes": sizes,
            "weights": [rng.standard_normal((y, x)).tolist() for x, y in zip(sizes[:-1], sizes[1:])],
            "biases": [rng.standard_normal((y, 1)).tolist() for y in sizes[1:]],
            "cost": "CrossEntropyCost"}


def _edit(**changes: Any) -> Callable[[dict[str, Any]], Any]:
    def apply(d: dict[str, Any]) -> dict[str, Any]:
        for k, v in changes.items():
            if v is KeyError:
                d.pop(k)
            else:
                d[k] = v(d) if callable(v) else v
        return d
    return apply


NETWORK2_CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "unknown cost": (_edit(cost="LogLikelihoodCost"), r"'cost' must be one of \['CrossEntropyCost', 'QuadraticCost'\]"),
    "cost as nncore name": (_edit(cost="cross_entropy"), "CrossEntropyCost"),
    "missing cost": (_edit(cost=KeyError), r"missing key\(s\) \['cost'\]"),
    "missing weights": (_edit(weights=KeyError), r"missing key\(s\) \['weights'\]"),
    "biases flat (out,)": (_edit(biases=lambda d: [[r[0] for r in b] for b in d["biases"]]),
                           r"biases\[0\] has shape \(3,\), expected \(3, 1\)"),
    "biases as row (1,out)": (_edit(biases=lambda d: [[[r[0] for r in b]] for b in d["biases"]]),
                              r"biases\[0\] has shape \(1, 3\)"),
    "weights transposed": (_edit(weights=lambda d: [np.array(w).T.tolist() for w in d["weights"]]),
                           r"weights\[0\] has shape \(4, 3\), expected \(3, 4\)"),
    "sizes inconsistent": (_edit(sizes=[4, 5, 2]), r"weights\[0\] has shape \(3, 4\), expected \(5, 4\)"),
    "too few weights": (_edit(weights=lambda d: d["weights"][:1]), r"'weights' must be a list of 2 arrays"),
    "too many biases": (_edit(biases=lambda d: d["biases"] * 2), r"'biases' must be a list of 2 arrays"),
    "bad sizes": (_edit(sizes=[4, "3", 2]), "'sizes'"),
    "one layer sizes": (_edit(sizes=[4]), "'sizes'"),
    "ragged weights": (_edit(weights=lambda d: [d["weights"][0][:2] + [[1.0]], d["weights"][1]]),
                       r"weights\[0\]"),
    "non-numeric": (_edit(weights=lambda d: [[["a"] * 4] * 3, d["weights"][1]]), r"weights\[0\]"),
    "top-level list": (lambda d: [d], "expected a JSON object"),
}


@pytest.mark.parametrize("name", list(NETWORK2_CORRUPTIONS))
def test_import_network2_invalid_files(tmp_path: Path, name: str) -> None:
    edit, match = NETWORK2_CORRUPTIONS[name]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(edit(_book_dict())))
    with pytest.raises(ValueError, match=match) as info:
        import_network2(path)
    assert str(info.value).startswith(str(path))


def test_import_network2_not_json_and_bad_dtype(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{'sizes': [1, 2]}")
    with pytest.raises(ValueError, match="not valid JSON") as info:
        import_network2(path)
    assert str(info.value).startswith(str(path))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_book_dict()))
    dtype_error = r"'dtype' parameter of Network must be a NumPy dtype among \{'float64', 'float32'\}"
    with pytest.raises(ValueError, match=dtype_error) as info:
        import_network2(good, dtype=np.float16)
    assert str(info.value).startswith(str(good))


def test_network2_file_continues_training_and_reexports(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data[:500] / 16.0
    y = digits.target[:500]
    path = tmp_path / "digits_net.json"
    weights0, _ = network2_file(path, [64, 20, 10], "CrossEntropyCost", seed=7)
    net = import_network2(path)
    before = net.copy()
    result = nncore.train(net, X, y, nncore.TrainConfig(eta=0.5, epochs=3, batch_size=10, lmbda=1.0,
                                                          track_gradients=False), rng=0)
    assert result.network is net and [r.epoch for r in result.records] == [0, 1, 2, 3]
    train_loss = [r.train.data for r in result.records]
    initial = before.data_loss(X, np.eye(10)[y])
    assert train_loss[0] == pytest.approx(initial, rel=1e-12)  # epoch 0: the imported network, before any step
    assert initial > train_loss[1] > train_loss[2] > train_loss[3]
    assert result.records[-1].train.accuracy > 0.5
    assert not np.array_equal(net.weights[0], weights0[0])  # it actually trained
    again = import_network2(export_network2(net, tmp_path / "trained.json"))
    assert_same_network(net, again)
    assert np.array_equal(again.feedforward(X), net.feedforward(X))
