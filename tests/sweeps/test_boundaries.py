"""The rooms of ``sweeps/`` and who may import whom (docs/architecture.md, "Import rules").

Every import of every module under ``sweeps/`` is read with ``ast``: at module level, inside
functions and under ``if TYPE_CHECKING``, relative ones resolved, ``importlib.import_module`` of a
literal name included. A module may import a module of its own room or of a room of a lower rank,
nothing else; the imports form no cycle; a writer never reaches a reader. ``RANKS`` places every
module: a new module or subpackage fails here until it is given a rank. There is no exceptions list.

Also here: no module of nncore or sweeps draws from a global random state, and every source module of
sweeps has its test module (``tests/sweeps/`` mirrors ``sweeps/``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SWEEPS_DIR = REPO / "sweeps"
TESTS_DIR = REPO / "tests" / "sweeps"

#: The rooms of sweeps/ and their ranks. A key is a module or a subpackage (which then holds all its
#: modules); ``sweeps`` itself is only ``sweeps/__init__.py``. A module may import its own room and
#: rooms of a lower rank: never a higher rank, never another room of its own rank.
RANKS: dict[str, float] = {
    # the foundation: the leaves import nothing from sweeps ...
    "sweeps": 0,  # sweeps/__init__.py (empty)
    "sweeps.names": 0,  # every Optuna attribute and MLflow tag name
    "sweeps.config": 0,  # SweepConfig, the YAML, the fingerprint
    "sweeps.compat": 0,  # every use of an Optuna or MLflow internal
    "sweeps.redaction": 0,  # secrets masked in everything shown
    # ... and where the stores live, which may import the leaves only
    "sweeps.stores": 0.5,
    # 1: pure, no store access
    "sweeps.analysis": 1,  # a trial's findings, explanations, rendering
    "sweeps.plots": 1,  # matplotlib figures of a run, Optuna's plots of a study
    # 2: the stores' writers and their reader
    "sweeps.study": 2,  # writer: the Optuna side
    "sweeps.tracking": 2,  # writer: the MLflow side
    "sweeps.query": 2,  # the reader
    # 3: reads through query, draws through plots, logs to a tracker
    "sweeps.report": 3,
    # 4: the launcher, the workers, one trial
    "sweeps.engine": 4,
    # 5: the command line, and its ``python -m sweeps`` hook above it
    "sweeps.cli": 5,
    "sweeps.__main__": 6,
}
#: The rooms that write the stores, and the room that reads them: a writer never imports the reader,
#: not even through other modules.
WRITERS = ("sweeps.study", "sweeps.tracking")
READERS = ("sweeps.query",)
ROOT = "sweeps"


@dataclass(frozen=True)
class Import:
    path: str  # the importing module's file, relative to the repository
    line: int
    importer: str
    imported: str  # the sweeps module imported (a submodule where ``from pkg import sub`` names one)


def module_name(rel: str) -> str:
    """``sweeps/a/b.py`` -> ``sweeps.a.b``; ``sweeps/a/__init__.py`` -> ``sweeps.a``."""
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, tuple[str, str]]:
    """Every module under sweeps/: {module name: (path relative to the repository, source)}."""
    out = {}
    for p in sorted(SWEEPS_DIR.rglob("*.py")):
        rel = p.relative_to(REPO).as_posix()
        out[module_name(rel)] = (rel, p.read_text(encoding="utf-8"))
    return out


def _resolve(name: str, known: Iterable[str]) -> str:
    """``name`` if it is a module, else the longest module it starts with (``sweeps.x.f`` -> ``sweeps.x``)."""
    known = set(known)
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return name


def parse_imports(modules: Mapping[str, tuple[str, str]]) -> list[Import]:
    """Every import of a sweeps module by a module of ``modules`` ({name: (path, source)}), wherever it
    stands in the module (function bodies and ``if TYPE_CHECKING`` included)."""
    found: list[Import] = []
    for importer, (path, source) in modules.items():
        package = importer if path.endswith("__init__.py") else importer.rpartition(".")[0]
        names: list[tuple[int, str]] = []  # (line, module named) of every import statement
        for node in ast.walk(ast.parse(source, filename=path)):
            if isinstance(node, ast.Import):
                names += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    base = ".".join(base_parts[:len(base_parts) - (node.level - 1)])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                names += [(node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
                          for alias in node.names]  # ``from pkg import sub``: the submodule where there is one
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
                  in ("import_module", "__import__")):
                names.append((node.lineno, node.args[0].value))
        for line, name in names:
            if name == ROOT or name.startswith(ROOT + "."):
                imported = _resolve(name, modules)
                if imported != importer:
                    found.append(Import(path, line, importer, imported))
    return sorted(set(found), key=lambda i: (i.path, i.line, i.imported))


def room_of(module: str, ranks: Mapping[str, float] = RANKS) -> str | None:
    """The key of ``ranks`` that places ``module``: itself, else its innermost subpackage listed."""
    if module in ranks:
        return module
    parts = module.split(".")
    for n in range(len(parts) - 1, 1, -1):  # never the root: it is only sweeps/__init__.py
        if ".".join(parts[:n]) in ranks:
            return ".".join(parts[:n])
    return None


def _rank_text(rank: float | None) -> str:
    if rank is None:
        return "no rank"
    return f"rank {int(rank) if float(rank).is_integer() else rank}"


def rank_violations(imports: Iterable[Import], ranks: Mapping[str, float] = RANKS) -> list[str]:
    """Each import of a higher rank, of another room of the same rank, or of a module without a rank."""
    bad = []
    for i in imports:
        mine, theirs = room_of(i.importer, ranks), room_of(i.imported, ranks)
        if mine is None:
            continue  # unplaced_modules reports it
        r, s = ranks[mine], (ranks[theirs] if theirs is not None else None)
        if theirs == mine:
            continue
        if s is None:
            why = "a module no room places"
        elif s > r:
            why = "a higher rank"
        elif s == r:
            why = f"another room of {_rank_text(r)}"
        else:
            continue
        bad.append(f"{i.path}:{i.line}: {i.importer} ({_rank_text(r)}) imports {i.imported} ({_rank_text(s)}): {why}")
    return bad


def _graph(imports: Iterable[Import]) -> dict[str, dict[str, list[Import]]]:
    graph: dict[str, dict[str, list[Import]]] = {}
    for i in imports:
        graph.setdefault(i.importer, {}).setdefault(i.imported, []).append(i)
        graph.setdefault(i.imported, {})
    return graph


def import_cycles(imports: Iterable[Import]) -> list[str]:
    """One entry per strongly connected set of modules: the modules and every import line among them."""
    graph = _graph(imports)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for component in sorted(components):
        lines = [f"{i.path}:{i.line}: {i.importer} imports {i.imported}"
                 for v in component for w in sorted(graph[v]) if w in component for i in graph[v][w]]
        out.append(f"cycle between {', '.join(component)}:\n    " + "\n    ".join(lines))
    return out


def _in(module: str, rooms: Iterable[str]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rooms)


def writer_reader_violations(imports: Iterable[Import]) -> list[str]:
    """Each writer module that reaches a reader module, directly or through other modules, with the path."""
    graph = _graph(imports)
    bad = []
    for start in sorted(m for m in graph if _in(m, WRITERS)):
        seen = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w in seen:
                    continue
                seen[w] = [*seen[v], w]
                if _in(w, READERS):
                    first = graph[start][seen[w][1]][0]
                    bad.append(f"{first.path}:{first.line}: the writer {start} reaches the reader {w}: "
                               + " -> ".join(seen[w]))
                else:
                    queue.append(w)
    return bad


def unplaced_modules(modules: Mapping[str, tuple[str, str]], ranks: Mapping[str, float] = RANKS) -> list[str]:
    return [f"{path}: {name} is in no room of RANKS (give its package a rank)"
            for name, (path, _) in sorted(modules.items()) if room_of(name, ranks) is None]


MODULES = source_modules()
IMPORTS = parse_imports(MODULES)


# -- the tree ------------------------------------------------------------------------------------------


def test_every_module_and_subpackage_has_a_rank():
    assert unplaced_modules(MODULES) == []


def test_every_room_of_the_table_exists():
    """A room left in RANKS after its package is gone would place a new module by accident."""
    assert sorted(r for r in RANKS if r not in MODULES) == []


def test_no_import_goes_up_or_sideways():
    """Rank r imports its own room and ranks below r only; the foundation's leaves (names, config,
    compat) import nothing from sweeps, stores only the leaves; study, tracking and query never
    import each other, nor analysis and plots."""
    bad = rank_violations(IMPORTS)
    assert not bad, "imports against the ranks (docs/architecture.md):\n" + "\n".join(bad)


def test_no_import_cycle():
    bad = import_cycles(IMPORTS)
    assert not bad, "import cycles between sweeps modules:\n" + "\n".join(bad)


def test_no_writer_imports_the_reader():
    """sweeps.study and sweeps.tracking write the stores; sweeps.query reads them: a writer that imports
    the reader, even through another module, reads what it may be in the middle of writing."""
    bad = writer_reader_violations(IMPORTS)
    assert not bad, "writers reaching the reader:\n" + "\n".join(bad)


def test_the_scan_reads_the_real_tree():
    """Guard for the checks above: the parsed tree is the real one and its imports were read."""
    importers = {i.importer for i in IMPORTS}
    assert {"sweeps.cli.commands", "sweeps.engine.runner", "sweeps.engine.worker", "sweeps.query"} <= importers


# -- the checker on small module sets --------------------------------------------------------------------


def _modules(**sources: str) -> dict[str, tuple[str, str]]:
    """Synthetic modules: ``sweeps__study__a="..."`` -> sweeps.study.a in sweeps/study/a.py
    (``__init__`` names a package)."""
    out = {}
    for key, source in sources.items():
        parts = key.split("__")
        if parts[-1] == "":  # sweeps__query__ -> the package sweeps.query
            parts = [*parts[:-1], "__init__"]
        out[module_name("/".join(parts) + ".py")] = ("/".join(parts) + ".py", source)
    return out


def test_every_kind_of_import_is_read():
    mods = _modules(
        sweeps__engine__a=(
            "from typing import TYPE_CHECKING\n"
            "import sweeps.names\n"
            "from sweeps import config\n"
            "from . import b\n"
            "from .b import thing\n"
            "from ..study.c import f\n"
            "if TYPE_CHECKING:\n    from sweeps.query import client\n"
            "def lazy():\n    import sweeps.plots.figures as figs\n"
            "class K:\n    def m(self):\n        from sweeps.tracking import tracker\n"
            "def dyn():\n    import importlib\n    return importlib.import_module('sweeps.report.closing')\n"
            "import optuna\n"
        ),
        sweeps__engine__b="", sweeps__study__c="", sweeps__names="", sweeps__config="",
        sweeps__query__="", sweeps__query__client="", sweeps__plots__figures="", sweeps__tracking__tracker="",
        sweeps__report__closing="",
    )
    got = [(i.line, i.imported) for i in parse_imports(mods)]
    assert got == [(2, "sweeps.names"), (3, "sweeps.config"), (4, "sweeps.engine.b"), (5, "sweeps.engine.b"),
                   (6, "sweeps.study.c"), (8, "sweeps.query.client"), (10, "sweeps.plots.figures"),
                   (13, "sweeps.tracking.tracker"), (16, "sweeps.report.closing")]


def test_a_relative_import_in_a_package_init_is_relative_to_the_package():
    mods = _modules(sweeps__query__="from . import client\nfrom .client import x\n", sweeps__query__client="")
    assert [i.imported for i in parse_imports(mods)] == ["sweeps.query.client", "sweeps.query.client"]


def test_an_upward_import_is_caught_with_its_line():
    mods = _modules(sweeps__plots__a="import math\n\ndef f():\n    from sweeps.engine import runner\n",
                    sweeps__engine__runner="from sweeps.plots import a\n")
    assert rank_violations(parse_imports(mods)) == [
        "sweeps/plots/a.py:4: sweeps.plots.a (rank 1) imports sweeps.engine.runner (rank 4): a higher rank"]


def test_a_sideways_import_is_caught_and_a_downward_one_is_not():
    mods = _modules(sweeps__analysis__a="from sweeps.plots import b\nfrom sweeps import names\n",
                    sweeps__plots__b="", sweeps__names="from sweeps import config\n", sweeps__config="",
                    sweeps__stores="from sweeps import names, config\n")
    assert rank_violations(parse_imports(mods)) == [
        "sweeps/analysis/a.py:1: sweeps.analysis.a (rank 1) imports sweeps.plots.b (rank 1): another room of rank 1",
        "sweeps/names.py:1: sweeps.names (rank 0) imports sweeps.config (rank 0): another room of rank 0"]


def test_the_foundation_imports_nothing_above_it():
    mods = _modules(sweeps__stores="from sweeps.study.storage import open_storage\n", sweeps__study__storage="",
                    sweeps__config="from sweeps.stores import Locations\n")
    assert rank_violations(parse_imports(mods)) == [
        "sweeps/config.py:1: sweeps.config (rank 0) imports sweeps.stores (rank 0.5): a higher rank",
        "sweeps/stores.py:1: sweeps.stores (rank 0.5) imports sweeps.study.storage (rank 2): a higher rank"]


def test_a_cycle_is_caught_with_its_modules_and_lines():
    mods = _modules(sweeps__study__a="from sweeps.study import b\n",
                    sweeps__study__b="import os\n\ndef f():\n    from sweeps.study.c import g\n",
                    sweeps__study__c="from sweeps.study.a import h\n", sweeps__study__d="from sweeps.study import a\n")
    imports = parse_imports(mods)
    assert rank_violations(imports) == []  # one room: only the cycle is wrong
    assert import_cycles(imports) == [
        ("cycle between sweeps.study.a, sweeps.study.b, sweeps.study.c:\n"
         "    sweeps/study/a.py:1: sweeps.study.a imports sweeps.study.b\n"
         "    sweeps/study/b.py:4: sweeps.study.b imports sweeps.study.c\n"
         "    sweeps/study/c.py:1: sweeps.study.c imports sweeps.study.a")]
    assert import_cycles(parse_imports({k: v for k, v in mods.items() if k != "sweeps.study.c"})) == []


def test_a_writer_importing_the_reader_is_caught_directly_and_through_another_module():
    mods = _modules(sweeps__tracking__t="from sweeps.query import frames\n", sweeps__query__frames="",
                    sweeps__study__s="def f():\n    from sweeps.analysis import a\n",
                    sweeps__analysis__a="from sweeps.query.base import X\n", sweeps__query__base="",
                    sweeps__query__r="from sweeps.study import s\n")
    imports = parse_imports(mods)
    assert writer_reader_violations(imports) == [
        ("sweeps/study/s.py:2: the writer sweeps.study.s reaches the reader sweeps.query.base: "
         "sweeps.study.s -> sweeps.analysis.a -> sweeps.query.base"),
        ("sweeps/tracking/t.py:1: the writer sweeps.tracking.t reaches the reader sweeps.query.frames: "
         "sweeps.tracking.t -> sweeps.query.frames")]
    # the reader importing a writer is against the ranks (same rank), not a writer reading
    assert "sweeps/query/r.py:1: sweeps.query.r (rank 2) imports sweeps.study.s (rank 2): another room of rank 2" \
        in rank_violations(imports)


def test_a_module_or_package_without_a_rank_is_caught():
    mods = _modules(sweeps__newroom__x="", sweeps__helpers="", sweeps__study__y="from sweeps.newroom import x\n")
    assert unplaced_modules(mods) == [
        "sweeps/helpers.py: sweeps.helpers is in no room of RANKS (give its package a rank)",
        "sweeps/newroom/x.py: sweeps.newroom.x is in no room of RANKS (give its package a rank)"]
    assert rank_violations(parse_imports(mods)) == [
        "sweeps/study/y.py:1: sweeps.study.y (rank 2) imports sweeps.newroom.x (no rank): a module no room places"]


# -- no global random state -----------------------------------------------------------------------------

#: What nncore and sweeps may take from numpy.random: Generators and their seeding, never the global state.
NUMPY_RANDOM_ALLOWED = {"default_rng", "Generator", "SeedSequence", "BitGenerator", "PCG64", "PCG64DXSM", "Philox",
                        "SFC64", "MT19937"}


def global_random_uses(source: str, path: str) -> list[str]:
    """Each draw from (or seeding of) numpy's or Python's global random state: ``np.random.rand``,
    ``from numpy.random import shuffle``, ``random.random``, ``import random``."""
    numpy_names = {"numpy", "np"}
    bad = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            bad += [f"{path}:{node.lineno}: import {a.name}" for a in node.names if a.name == "random"]
            numpy_names |= {a.asname for a in node.names if a.name == "numpy" and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "random":
                bad.append(f"{path}:{node.lineno}: from random import ...")
            elif node.module == "numpy.random":
                bad += [f"{path}:{node.lineno}: numpy.random.{a.name}" for a in node.names
                        if a.name not in NUMPY_RANDOM_ALLOWED]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "random" and isinstance(node.value.value, ast.Name)
              and node.value.value.id in numpy_names and node.attr not in NUMPY_RANDOM_ALLOWED):
            bad.append(f"{path}:{node.lineno}: numpy.random.{node.attr}")
    return bad


def test_no_module_draws_from_a_global_random_state():
    """Every draw in nncore and sweeps comes from a Generator passed in (docs/architecture.md, invariant 6)."""
    bad = []
    for package in ("nncore", "sweeps"):
        for p in sorted((REPO / package).rglob("*.py")):
            bad += global_random_uses(p.read_text(encoding="utf-8"), p.relative_to(REPO).as_posix())
    assert bad == [], "draws from a global random state:\n" + "\n".join(bad)


def test_the_random_scan_sees_each_kind_of_global_draw():
    source = ("import numpy as np\nimport numpy\nimport random\nfrom numpy.random import default_rng, shuffle\n"
              "def f(rng):\n    np.random.seed(0)\n    x = numpy.random.rand(3)\n    g = np.random.default_rng(1)\n"
              "    return rng.normal(), np.random.Generator, random.random()\n")
    assert global_random_uses(source, "m.py") == ["m.py:3: import random", "m.py:4: numpy.random.shuffle",
                                                  "m.py:6: numpy.random.seed", "m.py:7: numpy.random.rand"]


# -- tests mirror the tree ---------------------------------------------------------------------------------


def expected_test_module(rel: str, source: str) -> str | None:
    """The test module of a source file (``rel`` relative to sweeps/, ``source`` its text):
    ``<pkg>/<mod>.py`` -> ``<pkg>/test_<mod>.py``, ``<mod>.py`` -> ``test_<mod>.py``, a package's
    ``__init__.py`` with code of its own (a function or class) -> ``<pkg>/test_<pkg>.py``
    (``query/__init__.py`` -> ``query/test_query.py``). None for the ``python -m sweeps`` hook (run by
    every CLI subprocess test) and for an ``__init__.py`` without code (empty, or re-exporting names)."""
    folder, _, name = rel.rpartition("/")
    if name == "__main__.py":
        return None
    if name == "__init__.py":
        if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in ast.parse(source).body):
            return None
        name = f"{folder.rpartition('/')[2] or 'sweeps'}.py"
    return f"{folder + '/' if folder else ''}test_{name}"


def test_every_sweeps_module_has_its_test_module():
    missing = []
    for p in sorted(SWEEPS_DIR.rglob("*.py")):
        rel = p.relative_to(SWEEPS_DIR).as_posix()
        expected = expected_test_module(rel, p.read_text(encoding="utf-8"))
        if expected is not None and not (TESTS_DIR / expected).is_file():
            missing.append(f"sweeps/{rel} -> tests/sweeps/{expected}")
    assert missing == [], "source modules without their test module:\n" + "\n".join(missing)


@pytest.mark.parametrize("rel, source, expected", [
    ("study/claims.py", "", "study/test_claims.py"), ("stores.py", "", "test_stores.py"),
    ("query/__init__.py", "from .x import y\n\ndef trials():\n    pass\n", "query/test_query.py"),
    ("query/__init__.py", "from sweeps.query.reading import history, trials\n", None),
    ("analysis/__init__.py", "", None), ("__init__.py", "", None), ("__main__.py", "main()\n", None)])
def test_the_test_module_of_a_source_module(rel, source, expected):
    assert expected_test_module(rel, source) == expected
