"""Saving and loading networks: the project's ``.npz`` format and Nielsen's ``network2.py`` JSON.

Project format (:func:`save` / :func:`load`)
--------------------------------------------
One ``.npz`` archive written with :func:`numpy.savez` (no pickled objects, read
back with ``allow_pickle=False``) holding

* ``W1 .. WL``: weight matrices, shape ``(sizes[l], sizes[l-1])`` (Nielsen's ``(out, in)``),
* ``b1 .. bL``: bias vectors, shape ``(sizes[l],)``,
* ``metadata``: a JSON string stored as a 0-d unicode array::

      {"format": "nncore", "format_version": 1,
       "sizes": [64, 20, 10], "activation": "sigmoid", "cost": "cross_entropy",
       "init": "default", "dtype": "float64",
       "extra": {...}}

Arrays are stored in the network's dtype, so a round trip is bit-identical.

``extra`` is a JSON-serializable dict chosen by the caller and returned
unchanged by :func:`load_with_metadata`. Trackers store the training context
there, in particular **the regularization convention together with lambda**,
because the same number means different decay rates under different
conventions (see :mod:`nncore.regularizers`), e.g.::

    save(net, "run.npz", extra={"regularizer": config.regularizer.to_dict(),  # penalty, lmbda, convention
                                "n_train": 50_000, "batch_size": 10, "epoch": 30})

network2.py JSON (:func:`export_network2` / :func:`import_network2`)
--------------------------------------------------------------------
Exactly what ``network2.Network.save`` writes (``json.dump`` of)::

    {"sizes": [...], "weights": [w.tolist() ...], "biases": [b.tolist() ...], "cost": "CrossEntropyCost"}

with weights as ``(out, in)`` nested lists, biases as ``(out, 1)`` nested lists
(column vectors) and the cost class name ``"CrossEntropyCost"`` or
``"QuadraticCost"``. That format can only describe sigmoid networks with those
two costs, so it records neither the initializer, the dtype nor any metadata.

Imports only NumPy and the standard library.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import numpy as np

from nncore.checks import check_instance, is_int
from nncore.network import Network

__all__ = [
    "FORMAT", "FORMAT_VERSION", "NETWORK2_COSTS", "export_network2", "import_network2", "load",
    "load_with_metadata", "save",
]

#: Value of the ``format`` field of the project format's metadata.
FORMAT = "nncore"
#: Version of the project format written by :func:`save` (the only one :func:`load` reads).
FORMAT_VERSION = 1
#: network2.py cost class name -> nncore cost name.
NETWORK2_COSTS = {"CrossEntropyCost": "cross_entropy", "QuadraticCost": "quadratic"}
_NNCORE_TO_NETWORK2 = {v: k for k, v in NETWORK2_COSTS.items()}

_METADATA_KEY = "metadata"
_METADATA_FIELDS = ("format", "format_version", "sizes", "activation", "cost", "init", "dtype", "extra")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a non-empty / an empty zip archive


# -- helpers ---------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    A crash (or an exception in ``write``) never leaves a truncated file at ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "xb") rather than tempfile.mkstemp: the file gets the usual umask permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _check_network(network: object, owner: str) -> Network:
    return check_instance(network, "network", owner, Network, what="an nncore.Network", error=TypeError)


def _check_sizes(sizes: object, where: str) -> list[int]:
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(is_int(s) and s >= 1 for s in sizes)):
        raise ValueError(f"{where}: 'sizes' must be a list of at least two positive integers, got {sizes!r}")
    return list(sizes)


def _build(where: str, sizes: list[int], **kwargs: Any) -> Network:
    """``Network(sizes, **kwargs)`` with its validation errors prefixed by ``where``."""
    try:
        return Network(sizes, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


# -- project format ----------------------------------------------------------
def save(network: Network, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``network`` to the project's ``.npz`` format (see the module docstring).

    ``path``: the file to write; ``.npz`` is appended when it has another suffix
    (as :func:`numpy.savez` does). Parent folders are created; an existing file
    is replaced atomically.
    ``extra``: a JSON-serializable dict stored under ``metadata["extra"]`` (``{}`` when
    ``None``), e.g. the regularization convention, ``lmbda`` and ``n_train``.
    Keys must be strings so that the dict round-trips unchanged.

    Returns the path actually written. Raises ``ValueError`` if ``extra`` is not a
    dict with string keys or cannot be written as JSON.
    """
    net = _check_network(network, "save")
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise ValueError(f"extra must be a dict, got {type(extra).__name__}")
    extra = dict(extra)
    bad_keys = [k for k in extra if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"extra keys must be strings (JSON object keys), got {bad_keys!r}")
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **net.config(), "extra": extra}
    try:
        text = json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must be JSON-serializable: {exc}") from exc

    arrays: dict[str, np.ndarray] = {_METADATA_KEY: np.array(text)}  # 0-d unicode array
    for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
        arrays[f"W{l}"] = np.ascontiguousarray(w)
        arrays[f"b{l}"] = np.ascontiguousarray(b)

    out = Path(path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    _atomic_write(out, lambda f: np.savez(f, **arrays))
    return out


def _read_metadata(where: str, archive: Mapping[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    if _METADATA_KEY not in names:
        raise ValueError(f"{where}: missing 'metadata' entry (not a file written by nncore.io.save)")
    raw = archive[_METADATA_KEY]
    if raw.ndim != 0 or raw.dtype.kind not in "US":
        raise ValueError(f"{where}: 'metadata' must be a 0-d string array holding JSON, "
                         f"got dtype {raw.dtype} with shape {raw.shape}")
    text = raw.item()
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: 'metadata' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: 'metadata' must be a JSON object, got {type(meta).__name__}")
    missing = [k for k in _METADATA_FIELDS if k not in meta]
    if missing:
        raise ValueError(f"{where}: metadata is missing field(s) {missing}")
    if meta["format"] != FORMAT:
        raise ValueError(f"{where}: metadata 'format' must be {FORMAT!r}, got {meta['format']!r}")
    if not is_int(meta["format_version"]) or meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{where}: unsupported 'format_version' {meta['format_version']!r} "
                         f"(this version of nncore reads {FORMAT_VERSION})")
    _check_sizes(meta["sizes"], where)
    for key in ("activation", "cost", "init", "dtype"):
        if not isinstance(meta[key], str):
            raise ValueError(f"{where}: metadata '{key}' must be a string, got {meta[key]!r}")
    if not isinstance(meta["extra"], dict):
        raise ValueError(f"{where}: metadata 'extra' must be a JSON object, got {meta['extra']!r}")
    return meta


def load_with_metadata(path: str | os.PathLike[str]) -> tuple[Network, dict[str, Any]]:
    """Load a network saved by :func:`save` together with its metadata dict.

    The metadata has the fields listed in the module docstring; the caller's
    dict is ``metadata["extra"]``. Raises ``FileNotFoundError`` if ``path`` does
    not exist and ``ValueError`` (message starting with the file name and naming
    the offending field) if it is not a valid file: not an ``.npz`` archive,
    missing or malformed metadata, another ``format``/``format_version``,
    missing or unexpected arrays, arrays whose shape does not match ``sizes`` or
    whose dtype is not the recorded one, pickled objects, or an unknown
    activation/cost/dtype (Network's own error, prefixed with the file name).
    """
    p = Path(path)
    where = str(p)
    with open(p, "rb") as f:
        if f.read(4) not in _ZIP_MAGIC:
            raise ValueError(f"{where}: not an .npz archive (no zip signature)")
    try:
        with np.load(p, allow_pickle=False) as archive:
            names = list(archive.files)
            meta = _read_metadata(where, archive, names)
            sizes = meta["sizes"]
            L = len(sizes) - 1
            expected = {f"{k}{l}" for l in range(1, L + 1) for k in "Wb"}
            missing = sorted(expected - set(names))
            if missing:
                raise ValueError(f"{where}: missing array(s) {missing} for sizes {sizes}")
            unexpected = sorted(set(names) - expected - {_METADATA_KEY})
            if unexpected:
                raise ValueError(f"{where}: unexpected array(s) {unexpected} for sizes {sizes} ({L} layers)")
            weights, biases = [], []
            for l in range(1, L + 1):
                w, b = archive[f"W{l}"], archive[f"b{l}"]
                for name, arr, shape in ((f"W{l}", w, (sizes[l], sizes[l - 1])), (f"b{l}", b, (sizes[l],))):
                    if arr.shape != shape:
                        raise ValueError(f"{where}: {name} has shape {arr.shape}, expected {shape} "
                                         f"from sizes {sizes}")
                    if arr.dtype.name != meta["dtype"]:
                        raise ValueError(f"{where}: {name} has dtype {arr.dtype}, but metadata 'dtype' "
                                         f"is {meta['dtype']!r}")
                weights.append(w)
                biases.append(b)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{where}: corrupted .npz archive ({exc})") from exc
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        # e.g. numpy refusing a pickled (object) array under allow_pickle=False
        raise ValueError(f"{where}: {exc}") from exc
    net = _build(where, sizes, activation=meta["activation"], cost=meta["cost"], init=meta["init"],
                 dtype=meta["dtype"], weights=weights, biases=biases)
    return net, meta


def load(path: str | os.PathLike[str]) -> Network:
    """Load a network saved by :func:`save` (see :func:`load_with_metadata` for the errors)."""
    return load_with_metadata(path)[0]


# -- network2.py JSON ------------------------------------------------------------
def export_network2(network: Network, path: str | os.PathLike[str]) -> Path:
    """Write ``network`` as the JSON file ``network2.Network.save`` writes (loadable by ``network2.load``).

    Biases are written as ``(out, 1)`` nested lists, the cost as its network2 class
    name (``cross_entropy`` -> ``"CrossEntropyCost"``, ``quadratic`` -> ``"QuadraticCost"``).
    Values are written as Python floats (``w.tolist()``), which JSON keeps exactly,
    so :func:`import_network2` with the same dtype returns identical weights.

    Raises ``ValueError`` for networks network2.py cannot represent: the
    ``log_likelihood`` cost (softmax output layer) or a non-sigmoid hidden
    activation (a network without hidden layers has none, so its ``activation``
    setting is irrelevant and it is exported). ``init`` and ``dtype`` are not recorded.
    Returns the path written (exactly ``path``; no suffix is added).
    """
    net = _check_network(network, "export_network2")
    if net.cost not in _NNCORE_TO_NETWORK2:
        raise ValueError(f"network2.py cannot represent cost {net.cost!r} (its costs are "
                         f"{sorted(_NNCORE_TO_NETWORK2)} with sigmoid output)")
    if net.n_layers > 1 and net.activation != "sigmoid":
        raise ValueError(f"network2.py cannot represent hidden activation {net.activation!r} "
                         f"(it only has sigmoid)")
    data = {
        "sizes": list(net.sizes),
        "weights": [w.tolist() for w in net.weights],
        "biases": [b.reshape(-1, 1).tolist() for b in net.biases],
        "cost": _NNCORE_TO_NETWORK2[net.cost],
    }
    text = json.dumps(data).encode("utf-8")
    out = Path(path)
    _atomic_write(out, lambda f: f.write(text))
    return out


def _as_matrix(where: str, name: str, value: object, shape: tuple[int, int]) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {name} is not a nested list of numbers of shape {shape} ({exc})") from exc
    if arr.shape != shape:
        raise ValueError(f"{where}: {name} has shape {arr.shape}, expected {shape}")
    return arr


def import_network2(path: str | os.PathLike[str], *, dtype: object = np.float64) -> Network:
    """Read a network saved by Nielsen's ``network2.Network.save`` (or :func:`export_network2`).

    The result has ``activation="sigmoid"``, ``init="default"`` (network2's
    initializer; the file does not record it) and the given ``dtype``; the
    cost is mapped ``"CrossEntropyCost"`` -> ``cross_entropy``, ``"QuadraticCost"``
    -> ``quadratic``. Other keys in the file are ignored.

    Raises ``ValueError`` naming the file and the problem for: invalid JSON, a
    missing key, ``sizes`` that are not positive integers, a number of weight or
    bias arrays other than ``len(sizes) - 1``, ``weights[l]`` not of shape
    ``(sizes[l+1], sizes[l])`` or ``biases[l]`` not of shape ``(sizes[l+1], 1)``,
    an unknown cost name, or an unsupported ``dtype``.
    """
    p = Path(path)
    where = str(p)
    with open(p, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object with keys sizes, weights, biases, cost; "
                         f"got {type(data).__name__}")
    missing = [k for k in ("sizes", "weights", "biases", "cost") if k not in data]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing} (network2.py files have sizes, weights, "
                         f"biases, cost)")
    sizes = _check_sizes(data["sizes"], where)
    cost_name = data["cost"]
    if not isinstance(cost_name, str) or cost_name not in NETWORK2_COSTS:
        raise ValueError(f"{where}: 'cost' must be one of {sorted(NETWORK2_COSTS)}, got {cost_name!r}")
    L = len(sizes) - 1
    for key in ("weights", "biases"):
        if not isinstance(data[key], list) or len(data[key]) != L:
            got = len(data[key]) if isinstance(data[key], list) else type(data[key]).__name__
            raise ValueError(f"{where}: '{key}' must be a list of {L} arrays for sizes {sizes}, got {got}")
    weights = [_as_matrix(where, f"weights[{l}]", data["weights"][l], (sizes[l + 1], sizes[l]))
               for l in range(L)]
    biases = [_as_matrix(where, f"biases[{l}]", data["biases"][l], (sizes[l + 1], 1)) for l in range(L)]
    return _build(where, sizes, activation="sigmoid", cost=NETWORK2_COSTS[cost_name], init="default",
                  dtype=dtype, weights=weights, biases=[b[:, 0] for b in biases])
