"""Property-based tests (Hypothesis) of the sweep YAML loader (``sweeps.config``, issue #16).

Whatever the document, :func:`load_config` returns a :class:`SweepConfig` or raises :class:`ConfigError`,
never another exception; the error names the file, and for a mapping it names the field (dotted path); its
text has no traceback or ``repr`` noise; a valid config has a stable fingerprint, survives the trip through
``model_dump(mode="json")`` that the launcher sends its workers, and builds Optuna distributions. Building a
config creates no file.

Documents come from two strategies: arbitrary text (random unicode or bytes, and YAML-ish lines made of
nasty fragments: tabs, anchors and aliases, merge keys, duplicate keys, explicit tags, huge numbers, ``.nan``,
booleans, multi-document streams), and structurally plausible documents: a valid config (every file in
``examples/`` and a minimal one) with one to three mutations (a key dropped, an unknown key added at any
level, a value replaced by a wrong type or an out-of-range number, a search-space spec or a sampler/pruner
name replaced by a generated one).

Fast lane, reproducible: every test runs a bounded number of examples (about 3 s for the module) with
``derandomize=True`` (the examples are a function of the test, so CI and every laptop run the same ones) and
``database=None`` (no example database is read or written, so a failure found on one machine is not
silently replayed on another; Hypothesis still caches Unicode tables in a git-ignored ``.hypothesis/``);
``deadline=None`` because the first example of a test pays for imports and pydantic's first validations.
The regression tests at the end pin the inputs that found the bugs fixed in ``sweeps/config.py``.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from sweeps.config import (
    PRUNERS,
    SAMPLERS,
    SEARCHABLE,
    ConfigError,
    SweepConfig,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

#: A small valid config written here (the examples are the others).
MINIMAL: dict[str, Any] = {
    "name": "props",
    "data": {"source": "digits", "n_train": 200, "n_eval": 50},
    "network": {"hidden": [8]},
    "training": {"epochs": 2, "eta": 0.5, "batch_size": 10},
    "search_space": {
        "eta": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 4, "step": 1},
        "n_train": {"type": "categorical", "choices": [100, 200]},
        "hidden": {"type": "categorical", "choices": [[8], [16, 8]]},
    },
    "study": {"n_trials": 3, "sampler": {"name": "random", "options": {}}, "pruner": {"name": "none"}},
}

#: Text that is never in an error message: a traceback or the repr of a class or an object.
NOISE = ("Traceback", "<class", "object at 0x", 'File "', "<built-in", "<function")

#: The valid configs that mutations start from.
SEEDS = [MINIMAL] + [yaml.safe_load(p.read_text()) for p in EXAMPLES]


def _fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None)


# -- strategies ---------------------------------------------------------------------------------------------------

_ints = st.one_of(st.sampled_from([0, 1, -1, 2, 3, 10, 200, 1024, 1025, 1797, 1798, 3600, 86400, 10**20, -10**20]),
                  st.integers(-10**6, 10**6))
_floats = st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 1e308, math.nan, math.inf, -math.inf]),
                    st.floats(allow_nan=True, allow_infinity=True))
_strings = st.one_of(st.sampled_from(["", "yes", "no", "on", "null", "~", "1e-3", "ten", "NaN", "eval/f1", "tpe",
                                      "grid", "float", "int", "categorical", "per_trial", "layer3/weight_rms",
                                      "a b", "x" * 300]),
                     st.text(max_size=12))
_scalars = st.one_of(st.none(), st.booleans(), _ints, _floats, _strings)
#: Any value YAML can hold, including nested junk.
_junk = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.one_of(_strings, _ints), inner,
                                                                       max_size=3)),
                     max_leaves=8)
_unknown_keys = st.one_of(st.sampled_from(["bogus", "int", "float", "categorical", "type", "low", "options", "eta",
                                           "name", "Name", " name", "1", "a.b"]),
                          st.text(min_size=1, max_size=8), st.integers(-3, 3), st.booleans(), st.none())

_param_specs = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["float", "int", "categorical", "uniform", "loguniform", "Float"]),
                       _scalars)},
    optional={"low": st.one_of(_ints, _floats, _scalars), "high": st.one_of(_ints, _floats, _scalars),
              "log": st.one_of(st.booleans(), _scalars), "step": st.one_of(_ints, _floats, st.none()),
              "choices": st.one_of(st.lists(_junk, max_size=4), _junk), "q": _scalars})


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path into a document (keys of mappings, indices of lists), the root excluded."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _parent(doc: dict, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _tweaks(value: Any) -> st.SearchStrategy:
    """A plausible value of the same type as ``value`` (valid configs near their limits, not only errors)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(0, 2 * abs(value) + 2)
    if isinstance(value, float):
        return st.floats(0.0, 2 * abs(value) + 1.0)
    if isinstance(value, str):
        return st.sampled_from(["tpe", "random", "grid", "median", "none", "digits", "mnist", "relu", "l1",
                                "per_trial", "minimize", "eval/data_loss", "layer2/weight_rms", "train/accuracy",
                                "float", "int", "categorical", value])
    if isinstance(value, list):
        return st.lists(st.one_of(st.integers(1, 300), st.lists(st.integers(1, 50), min_size=1, max_size=2)),
                        max_size=3)
    return st.just(value)


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[dict, list[tuple]]:
    """A valid config with one to three mutations; also the paths mutated."""
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    mutated: list[tuple] = []
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        kind = draw(st.sampled_from(["drop", "add", "replace", "spec", "name", "number", "tweak", "tweak"]))
        if kind == "spec":
            key = draw(st.one_of(st.sampled_from(SEARCHABLE), st.sampled_from(["learning_rate", "seed"])))
            doc.setdefault("search_space", {})
            if not isinstance(doc["search_space"], dict):
                doc["search_space"] = {}
            doc["search_space"][key] = draw(_param_specs)
            mutated.append(("search_space", key))
            continue
        if kind == "name":
            section = draw(st.sampled_from(["sampler", "pruner"]))
            name = draw(st.one_of(st.sampled_from(SAMPLERS + PRUNERS + ("bayes", "TPE", "")), _scalars))
            if not isinstance(doc.get("study"), dict):
                doc["study"] = {}
            doc["study"][section] = {"name": name}
            mutated.append(("study", section, "name"))
            continue
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if kind == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "add":
            target = parent if isinstance(parent, dict) else doc
            key = draw(_unknown_keys)
            path = (*path[:-1], key) if target is parent else (key,)
            target[key] = draw(_junk)
        elif kind == "number":
            parent[path[-1]] = draw(st.one_of(_ints, _floats))
        elif kind == "tweak":  # a plausible value of the same type: mostly valid configs, near the limits
            parent[path[-1]] = draw(_tweaks(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(_junk)
        mutated.append(path)
    return doc, mutated


_fragments = st.sampled_from([
    "name: a", "name: digits-quick", "seed: 0", "seed: -1", "data:", "training:", "study:", "search_space:",
    "  eta: {type: float, low: 0.1, high: 1.0, log: true}", "  eta: 0.5", "  eta: .nan", "  eta: -.inf",
    "  epochs: yes", "  n_trials: 0x" + "f" * 4000, "  n_trials: " + "9" * 5000, "  n_train: 1e400",
    "  sampler: {name: bayes}", "  pruner: {name: none, options: {x: .inf}}", "base: &b {epochs: 2}",
    "  <<: *b", "  <<: 1", "x: *b", "x: *missing", "y: &r [*r]", "  - 1", "- a", "---", "...", "\t- tab",
    "? [a, b]\n: 1", "{[1]: 2}", "name: !!float abc", "name: !!bool maybe", "name: !!timestamp x", "name: !!int abc",
    "name: !!binary '!!'", "name: !!set {a}", "name: !!python/object:os.system x", "name: !!omap [a: 1]",
    "name: [", "name: {", "name: 'unterminated", "name: \"\\x\"", "%YAML 1.1", "%TAG ! tag:x,", "!!null", "a: b: c",
    "name: a\nname: b", "~: 1", ".nan: 1", "1: 2", "  - ", "\x00", "\ufeff", "name: \x85",
])


@st.composite
def yamlish_texts(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.tuples(st.sampled_from(["", " ", "  ", "    ", "\t"]), _fragments), max_size=8))
    return "\n".join(indent + frag for indent, frag in lines) + draw(st.sampled_from(["", "\n"]))


_documents = st.one_of(st.text(max_size=80), st.binary(max_size=80), yamlish_texts(), yamlish_texts())


# -- checks --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty working directory for the module: a default store (``optuna.db``, ``mlruns``) would show there."""
    path = tmp_path_factory.mktemp("config_properties")
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def _load(workdir: Path, text: str | bytes) -> SweepConfig | ConfigError:
    """Write the document, load it; only ``SweepConfig`` or ``ConfigError`` may come out, and no file."""
    path = workdir / "sweep.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        result: SweepConfig | ConfigError = load_config(path)
    except ConfigError as err:
        result = err
    assert sorted(p.name for p in workdir.iterdir()) == ["sweep.yaml"], "building a config created files"
    if isinstance(result, ConfigError):
        _check_message(str(result), str(path))
    if currently_in_test_context():  # the outcomes' shares: pytest --hypothesis-show-statistics
        event("valid" if isinstance(result, SweepConfig) else " ".join(str(result).split()[:3]))
    return result


def _check_message(msg: str, source: str) -> None:
    first = msg.splitlines()[0]
    assert source in first, f"the first line does not name {source}: {msg}"
    assert first.startswith(("invalid sweep config", "invalid YAML in", "cannot read sweep config")), msg
    assert not any(noise in msg for noise in NOISE), msg
    assert all(len(line) <= 600 for line in msg.splitlines()), msg


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _names_a_field(msg: str, mutated: list[tuple]) -> bool:
    """The message names one of the mutated paths, or a prefix of it two keys long at least (``search_space.eta``
    for a bad ``search_space.eta.low``; ``study.sampler`` for the grid sampler's cross-check)."""
    body = msg.split("\n", 1)[-1] if "\n" in msg else msg
    return any(_dotted(path[:k]) in body for path in mutated for k in range(len(path), min(len(path), 2) - 1, -1))


def _check_valid(cfg: SweepConfig) -> None:
    """A valid config: a stable fingerprint, the same config after the launcher -> worker trip and after
    ``with_overrides``, and a search space Optuna accepts."""
    import optuna

    from sweeps.study import space

    fingerprint = cfg.fingerprint()
    assert fingerprint == cfg.fingerprint()
    worker = parse_config(cfg.model_dump(mode="json"), source="worker")  # as sweeps.engine.runner sends it
    assert worker == cfg and worker.fingerprint() == fingerprint
    again = cfg.with_overrides(n_trials=cfg.study.n_trials + 1)
    assert again.fingerprint() == fingerprint and again.study.n_trials == cfg.study.n_trials + 1
    for spec in cfg.search_space.values():
        if spec.type == "float":
            optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        elif spec.type == "int":
            optuna.distributions.IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            optuna.distributions.CategoricalDistribution([space._encode(c) for c in spec.choices])
    if cfg.study.sampler.name == "grid":
        assert set(space.grid(cfg)) == set(cfg.search_space)


# -- properties ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_are_valid_and_stable(example: Path) -> None:
    first, second = load_config(example), load_config(example)
    assert first.fingerprint() == second.fingerprint()
    _check_valid(first)


def test_the_minimal_config_is_valid(workdir: Path) -> None:
    cfg = _load(workdir, yaml.safe_dump(MINIMAL))
    assert isinstance(cfg, SweepConfig) and cfg == parse_config(MINIMAL)
    _check_valid(cfg)


@_fast(200)
@given(text=_documents)
def test_any_text_gives_a_config_or_a_config_error(workdir: Path, text: str | bytes) -> None:
    result = _load(workdir, text)
    if isinstance(result, SweepConfig):
        again = _load(workdir, text)
        assert isinstance(again, SweepConfig) and again.fingerprint() == result.fingerprint()
        _check_valid(result)


@_fast(40)
@given(top=_junk.filter(lambda v: not isinstance(v, dict)))
def test_a_top_level_that_is_not_a_mapping_says_so(workdir: Path, top: Any) -> None:
    err = _load(workdir, yaml.safe_dump(top))
    assert isinstance(err, ConfigError), err
    assert "the top level must be a mapping" in str(err), err
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        parse_config(top)


@_fast(150)
@given(case=mutated_configs())
def test_a_mutated_config_is_valid_or_names_the_field(workdir: Path, case: tuple[dict, list[tuple]]) -> None:
    doc, mutated = case
    # the dict itself, as sweeps.cli / the worker pass one
    try:
        cfg: SweepConfig | None = parse_config(copy.deepcopy(doc), source="<dict>")
    except ConfigError as err:
        cfg = None
        _check_message(str(err), "<dict>")
        assert _names_a_field(str(err), mutated), f"{err}\nmutated: {mutated}"
    if cfg is not None:
        _check_valid(cfg)
    # the same document as a file
    result = _load(workdir, yaml.safe_dump(doc, sort_keys=False))
    if isinstance(result, SweepConfig):
        again = _load(workdir, yaml.safe_dump(doc, sort_keys=False))
        assert isinstance(again, SweepConfig) and again.fingerprint() == result.fingerprint()
        _check_valid(result)
    elif str(result).startswith("invalid sweep config"):
        assert _names_a_field(str(result), mutated), f"{result}\nmutated: {mutated}"


_study_fields = st.sampled_from(["n_trials", "workers", "population", "timeout", "heartbeat_interval",
                                 "heartbeat_grace", "max_retries", "storage", "bogus"])


@_fast(100)
@given(overrides=st.dictionaries(_study_fields, _junk, min_size=1, max_size=3))
def test_command_line_overrides_are_validated_again(overrides: dict[str, Any]) -> None:
    cfg = parse_config(MINIMAL)
    try:
        new = cfg.with_overrides(**overrides)
    except ConfigError as err:
        _check_message(str(err), "command line")
        assert _names_a_field(str(err), [("study", k) for k, v in overrides.items() if v is not None]), err
        return
    assert new.fingerprint() == cfg.fingerprint()
    for key, value in overrides.items():
        if value is not None and key != "timeout":
            assert getattr(new.study, key) == value


# -- regressions: the inputs that found each bug ------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    # UnicodeDecodeError
    (b"name: \xff\xfe\n", ["not UTF-8 text"]),
    # TypeError: unhashable type: 'list' (the duplicate-key check)
    ("name: a\n? [a, b]\n: 1\n", ["found unhashable key", "line 2"]),
    ("{[1]: 2}\n", ["found unhashable key"]),
    # RecursionError (PyYAML's composer)
    ("[" * 1000, ["nested too deeply"]),
    ("{a: " * 1000, ["nested too deeply"]),
    # ValueError: Exceeds the limit (4300 digits) for integer string conversion
    ("name: a\nseed: " + "9" * 5000 + "\n", ["cannot read", "as 'int'", "line 2"]),
    # a 0x literal has no digit limit: a valid config whose fingerprint raised ValueError
    ("name: a\nseed: 0x" + "f" * 5000 + "\n", ["integer too large", "line 2"]),
    # ValueError / KeyError / AttributeError from PyYAML's constructors
    ("name: a\ntraining: {eta: !!float abc}\n", ["cannot read 'abc' as 'float'", "line 2"]),
    ("name: !!bool maybe\n", ["cannot read 'maybe' as 'bool'"]),
    ("name: !!timestamp x\n", ["cannot read 'x' as 'timestamp'"]),
    ("name: !!int abc\n", ["cannot read 'abc' as 'int'"]),
    # the duplicate-key error did not name the file
    ("name: a\nname: b\n", ["duplicate key 'name' at line 2"]),
])
def test_unreadable_yaml_is_a_config_error_naming_the_file(workdir: Path, text: str | bytes, words: list[str]) -> None:
    err = _load(workdir, text)
    assert isinstance(err, ConfigError), err
    assert all(w in str(err) for w in words), err


@pytest.mark.parametrize("doc, words", [
    # ZeroDivisionError in n_train_values
    ({"name": "a", "search_space": {"n_train": {"type": "int", "low": 1, "high": 10, "step": 0}}},
     ["search_space.n_train.step", "greater than or equal to 1", "(got 0)"]),
    # valid configs Optuna refuses when the study starts
    ({"name": "a", "search_space": {"epochs": {"type": "int", "low": 1, "high": 10, "step": -2}}},
     ["search_space.epochs.step", "(got -2)"]),
    ({"name": "a", "search_space": {"epochs": {"type": "int", "low": 1, "high": 10, "step": 2, "log": True}}},
     ["search_space.epochs", "log=true needs step 1", "step=2"]),
    ({"name": "a", "search_space": {"eta": {"type": "float", "low": 0.1, "high": 1.0, "step": 0.0}}},
     ["search_space.eta.step", "greater than 0"]),
    ({"name": "a", "search_space": {"eta": {"type": "float", "low": 0.1, "high": 1.0, "step": math.nan}}},
     ["search_space.eta.step", "(got nan)"]),
    ({"name": "a", "search_space": {"eta": {"type": "float", "low": 0.1, "high": 1.0, "step": math.inf}}},
     ["search_space.eta.step", "finite", "(got inf)"]),
    # a key named like a search-space type vanished from the dotted path
    ({"name": "a", "training": {"int": 1}}, ["training.int: unknown key"]),
    ({"name": "a", "float": 1}, ["  float: unknown key"]),
    # a key that is not a string was shown as 0 (false) or as its value's field
    ({"name": "a", "data": {False: 1}}, ["data.False: keys must be strings", "(got False)"]),
    ({"name": "a", "search_space": {None: {"type": "categorical", "choices": [1]}}},
     ["search_space.None: keys must be strings"]),
    # messages that named the field without its dotted path (n_train, n_eval)
    ({"name": "a", "search_space": {"n_train": {"type": "categorical", "choices": [None, 200]}}},
     ["search_space.n_train choices must be integers >= 1"]),
    ({"name": "a", "data": {"n_train": 1500, "n_eval": 298}},
     ["data.n_eval", "data.source 'digits'", "got 1798"]),
    # a boolean was read as 1 (one epoch) or 1.0
    ({"name": "a", "training": {"epochs": True}}, ["training.epochs", "not a boolean", "(got True)"]),
    ({"name": "a", "training": {"eta": True}}, ["training.eta", "not a boolean"]),
    ({"name": "a", "network": {"hidden": [True]}}, ["network.hidden.0", "not a boolean"]),
    ({"name": "a", "search_space": {"eta": {"type": "float", "low": False, "high": 1.0}}},
     ["search_space.eta.low", "not a boolean"]),
    # choices / options that are not JSON: a valid config whose worker copy (model_dump(mode="json")) differed
    # (nan -> None) or whose fingerprint raised (a recursive list), or a set (its order varies between processes)
    ({"name": "a", "search_space": {"eta": {"type": "categorical", "choices": [math.nan, 0.5]}}},
     ["search_space.eta.choices", "JSON values", "got nan"]),
    ({"name": "a", "search_space": {"activation": {"type": "categorical", "choices": {"relu", "tanh"}}}},
     ["search_space.activation.choices", "JSON values"]),
    ({"name": "a", "study": {"sampler": {"name": "tpe", "options": {"gamma": math.inf}}}},
     ["study.sampler.options", "JSON values", "got inf"]),
    # a mapping with an int and a str key: the fingerprint's json.dumps(sort_keys=True) raised TypeError
    ({"name": "a", "search_space": {"hidden": {"type": "categorical", "choices": [{"": None, 0: None}, [16]]}}},
     ["search_space.hidden.choices", "mappings with string keys", "got 0"]),
    # a non-ASCII digit passed as a layer number (layer1٣ read as layer 13, a metric no record has)
    ({"name": "a", "objective": {"metric": "layer1\u0663/weight_rms"},
      "search_space": {"hidden": {"type": "categorical", "choices": [[3]]}}}, ["objective.metric"]),
    # ValueError (int_max_str_digits) in the cross-check, reported at <root>
    ({"name": "a", "objective": {"metric": "layer1" + "0" * 5000 + "/weight_rms"}}, ["objective.metric"]),
])
def test_bad_values_name_the_field(doc: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    msg = str(info.value)
    _check_message(msg, "<dict>")
    assert all(w in msg for w in words), msg


def test_a_recursive_choice_list_is_a_config_error(workdir: Path) -> None:
    """``&a [sigmoid, *a]`` gave a valid config whose fingerprint raised ``ValueError: Circular reference``."""
    err = _load(workdir, "name: a\nsearch_space: {activation: {type: categorical, choices: &a [sigmoid, *a]}}\n")
    assert isinstance(err, ConfigError) and "search_space.activation.choices" in str(err), err


def test_an_alias_bomb_gives_a_short_message(workdir: Path) -> None:
    """The value got is cut: 100 000 aliased ints made a 680 kB message (name, and a..e as unknown keys)."""
    text = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcd", "bcde")) + "name: *e\n"
    err = _load(workdir, text)
    assert isinstance(err, ConfigError) and "name: Input should be a valid string" in str(err), err
    assert max(len(line) for line in str(err).splitlines()) < 400 and len(str(err)) < 3000, str(err)


def test_merge_keys_work(workdir: Path) -> None:
    """``<<: *base`` was refused ("could not determine a constructor for the tag ...merge"); a merged key may be
    overridden, an explicit duplicate is still an error."""
    cfg = _load(workdir, "name: a\nsearch_space:\n  eta: &f {type: float, low: 0.1, high: 1.0}\n"
                         "  lmbda: {<<: *f, low: 0.01}\n")
    assert isinstance(cfg, SweepConfig), cfg
    assert (cfg.search_space["lmbda"].low, cfg.search_space["lmbda"].high) == (0.01, 1.0)
    cfg = _load(workdir, "name: a\ntraining:\n  <<: {epochs: 2, eta: 0.1}\n  eta: 0.2\n")
    assert isinstance(cfg, SweepConfig) and (cfg.training.epochs, cfg.training.eta) == (2, 0.2), cfg
    err = _load(workdir, "name: a\ntraining:\n  <<: {epochs: 2}\n  eta: 0.2\n  eta: 0.3\n")
    assert isinstance(err, ConfigError) and "duplicate key 'eta' at line 5" in str(err), err


def test_an_empty_file_says_so(workdir: Path) -> None:
    err = _load(workdir, "")
    assert isinstance(err, ConfigError) and "got an empty document" in str(err), err
