"""nncore.datasets: the stable public facade over nncore.data.

The behaviour of each loader is tested beside its implementation module
(test_data_*.py); here: the public names exist, are the implementation's
objects (not copies that could drift), and nothing else leaks out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import nncore.datasets as ds
from nncore.data import digits, download, errors, idx, mnist_idx, mnist_pickle, splits

REPO = Path(__file__).resolve().parents[2]

#: The public API of nncore.datasets before the split into nncore.data, name -> implementing module.
PUBLIC = {
    "MNIST_FILES": download,
    "Dataset": splits,
    "DatasetError": errors,
    "Split": splits,
    "download_mnist": download,
    "load_digits": digits,
    "load_mnist": mnist_idx,
    "load_mnist_download": mnist_idx,
    "load_mnist_idx": mnist_idx,
    "load_mnist_pkl": mnist_pickle,
    "make_splits": splits,
    "one_hot": splits,
    "read_idx": idx,
    "sha256_file": download,
}


def test_all_lists_exactly_the_public_names():
    assert sorted(ds.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_is_the_implementation_object(name):
    assert getattr(ds, name) is getattr(PUBLIC[name], name)


def _facade_uses() -> dict[str, list[str]]:
    """Every name the repository takes from nncore.datasets (``from nncore.datasets import X`` and ``alias.X``
    where the module is imported as ``alias``) -> where."""
    uses: dict[str, list[str]] = {}
    for folder in ("nncore", "sweeps", "benchmarks", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            aliases = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "nncore":
                    aliases |= {a.asname or a.name for a in node.names if a.name == "datasets"}
                elif isinstance(node, ast.Import):
                    aliases |= {a.asname for a in node.names if a.name == "nncore.datasets" and a.asname}
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "nncore.datasets":
                    names = [a.name for a in node.names]
                elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id in aliases and not node.attr.startswith("__")):
                    names = [node.attr]
                for name in names:
                    uses.setdefault(name, []).append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}")
    return uses


def test_names_imported_elsewhere_in_the_repository():
    """sweeps/, benchmarks/, nncore/cli.py and the tests take only public names from the facade: a name
    dropped from ``__all__`` (or a private one reached through it) fails here, naming the line."""
    uses = _facade_uses()
    assert {"Dataset", "DatasetError", "load_digits", "load_mnist", "load_mnist_download"} <= set(uses)
    not_public = {name: where for name, where in uses.items() if name not in ds.__all__}
    assert not_public == {}


def test_facade_one_hot_raises_dataset_error_and_encodes():
    np.testing.assert_array_equal(ds.one_hot([1, 0], 2), [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ds.DatasetError, match=r"expected values in \[0, 2\), got 2 at index 0"):
        ds.one_hot([2], 2)
