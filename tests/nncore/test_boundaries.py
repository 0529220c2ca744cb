"""nncore depends on NumPy and the standard library only (heavy packages stay out of its imports)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

NNCORE_DIR = Path(__file__).resolve().parents[2] / "nncore"
FORBIDDEN = ("optuna", "mlflow", "pandas", "sklearn", "matplotlib")
ALLOWED_THIRD_PARTY = {"numpy"}


def _modules_to_import() -> list[str]:
    """Every nncore module (nncore.data.digits included: it must import scikit-learn lazily)."""
    names = []
    for p in NNCORE_DIR.rglob("*.py"):
        parts = ["nncore", *p.relative_to(NNCORE_DIR).with_suffix("").parts]
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


@pytest.mark.slow  # starts a Python subprocess
def test_importing_nncore_loads_no_heavy_package():
    mods = _modules_to_import()
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {list(FORBIDDEN)!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=NNCORE_DIR.parent)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {mods} loaded {loaded}"


@pytest.mark.slow  # starts a Python subprocess
def test_subprocess_check_detects_a_heavy_import():
    """Guard for the test above: the same probe does see a package that is imported."""
    code = ("import json, sys, email.message\n"
            "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] == 'email')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout) != []


def _module_level_imports(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(line, top-level module name, relative level) of imports executed when the module is imported.

    Imports inside function bodies (lazy imports) are skipped; class bodies, ``if``/``try``
    blocks at module level are included.
    """
    found: list[tuple[int, str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name.split(".")[0], 0) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append((child.lineno, (child.module or "").split(".")[0], child.level))
            else:
                visit(child)

    visit(tree)
    return found


def _bad_imports(source: str) -> list[str]:
    bad = []
    for line, name, level in _module_level_imports(ast.parse(source)):
        if level > 0 or name == "nncore" or name == "__future__":
            continue
        if name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY:
            continue
        bad.append(f"line {line}: {name}")
    return bad


SOURCES = sorted(NNCORE_DIR.rglob("*.py"))  # subpackages (nncore/data/) included


@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(NNCORE_DIR).as_posix() for p in SOURCES])
def test_module_level_imports_are_numpy_stdlib_or_nncore(path):
    bad = _bad_imports(path.read_text(encoding="utf-8"))
    assert bad == [], f"{path.name} imports non-stdlib packages at module level: {bad}"


def test_import_scan_detects_third_party_imports():
    source = (
        "import os\nimport numpy as np\nfrom nncore import train\nfrom . import costs\n"
        "import pandas\n"
        "try:\n    import sklearn.datasets\nexcept ImportError:\n    pass\n"
        "class A:\n    from matplotlib import pyplot\n"
        "def lazy():\n    import optuna\n"
    )
    assert _bad_imports(source) == ["line 5: pandas", "line 7: sklearn", "line 11: matplotlib"]


#: nncore never imports sweeps (nothing flows back up), and only sweeps/ imports Optuna and MLflow: not even
#: lazily inside an nncore function.
NEVER_IN_NNCORE = ("sweeps", "optuna", "mlflow")


def _every_import(source: str) -> list[tuple[int, str]]:
    """(line, top-level module name) of every absolute import: function bodies and ``if TYPE_CHECKING`` too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return sorted(found)


def test_no_nncore_module_imports_sweeps_optuna_or_mlflow_even_lazily():
    bad = [f"{p.relative_to(NNCORE_DIR).as_posix()}:{line}: {name}" for p in SOURCES
           for line, name in _every_import(p.read_text(encoding="utf-8")) if name in NEVER_IN_NNCORE]
    assert bad == [], f"nncore imports none of {NEVER_IN_NNCORE}: {bad}"


def test_the_full_scan_sees_lazy_and_type_checking_imports():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mlflow.entities import Run\n"
              "def f():\n    import optuna.trial\nfrom . import costs\n")
    assert _every_import(source) == [(1, "typing"), (3, "mlflow"), (5, "optuna")]


def test_nncore_sources_found():
    names = {p.relative_to(NNCORE_DIR).as_posix() for p in SOURCES}
    assert {"__init__.py", "network.py", "train.py", "datasets.py", "checks.py", "encoding.py",
            "data/__init__.py", "data/idx.py", "data/splits.py"} <= names


def test_every_nncore_module_has_a_test_module():
    """One test module per source module: tests/nncore/test_<name>.py, test_data_<name>.py for nncore/data/."""
    tests_dir = Path(__file__).resolve().parent
    exempt = {"__init__.py", "__main__.py", "data/__init__.py"}  # package markers and the ``python -m`` hook
    missing = []
    for p in SOURCES:
        rel = p.relative_to(NNCORE_DIR).as_posix()
        if rel in exempt:
            continue
        expected = "test_" + rel.removesuffix(".py").replace("/", "_") + ".py"
        if not (tests_dir / expected).is_file():
            missing.append(f"{rel} -> {expected}")
    # modules whose tests keep an older name: train.py (test_training.py, test_sgd.py)
    missing = [m for m in missing if not m.startswith("train.py")]
    assert missing == []
