"""Sweep configuration: one YAML file = one study, parsed once into validated objects.

Every error is raised here, before a study, an experiment or a file exists, as a
:class:`ConfigError` that names the field (``study.sampler.name``), the allowed
values and the value got. Unknown keys and duplicate keys are errors, and
``1e-3`` is read as a number (PyYAML alone would read it as a string).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from nncore.activations import ACTIVATIONS
from nncore.costs import COSTS
from nncore.initializers import INITIALIZERS
from nncore.records import metric_names
from nncore.regularizers import CONVENTIONS, PENALTIES

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "nsga2", "gp")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")

#: Defaults of ``study.heartbeat_interval`` / ``study.heartbeat_grace`` (seconds), also those of
#: :func:`sweeps.study.storage.open_storage`.
HEARTBEAT_INTERVAL = 20
HEARTBEAT_GRACE = 120

#: Fields of ``training`` a search space may vary.
TRAINING_PARAMS = ("eta", "lmbda", "batch_size", "epochs", "momentum", "penalty", "convention")
#: Fields of ``network`` a search space may vary.
NETWORK_PARAMS = ("hidden", "activation", "cost", "init", "dtype")
#: Fields of ``data`` a search space may vary. ``n_train``: each trial trains on the first ``n_train``
#: rows of the ``data.n_train`` rows loaded (nested subsets; the same evaluation set for every trial).
DATA_PARAMS = ("n_train",)
SEARCHABLE = TRAINING_PARAMS + NETWORK_PARAMS + DATA_PARAMS


class ConfigError(ValueError):
    """A sweep configuration is invalid; the message names every offending field."""


def _not_bool(v: Any) -> Any:
    # pydantic reads true as 1 in a number field; ``epochs: yes`` is a mistake, not one epoch
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")  # noqa: TRY004 - pydantic reports only ValueError
    return v


#: ``int`` and ``float`` for config fields: a boolean is refused, not read as 1 or 0.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


def _non_json(v: Any, done: set[int], stack: set[int]) -> tuple[Any] | None:
    """``(the first value in v that is not plain JSON,)``: null, a boolean, an int, a finite float, a string,
    or a list / string-keyed mapping of them, not recursive; ``None`` if there is none. Shared containers
    (YAML aliases) are checked once."""
    if v is None or isinstance(v, (bool, int, str)):
        return None
    if isinstance(v, float):
        return None if math.isfinite(v) else (v,)
    if not isinstance(v, (list, dict)):
        return (v,)
    if id(v) in stack:
        return (v,)
    if id(v) in done:
        return None
    stack.add(id(v))
    items = v.items() if isinstance(v, dict) else ((None, x) for x in v)
    for key, x in items:
        if isinstance(v, dict) and not isinstance(key, str):
            return (key,)
        bad = _non_json(x, done, stack)
        if bad is not None:
            return bad
    stack.discard(id(v))
    done.add(id(v))
    return None


def _check_json(v: Any) -> Any:
    """Categorical choices and sampler/pruner options reach Optuna, its storage and the workers as JSON."""
    bad = _non_json(v, set(), set())
    if bad is not None:
        raise ValueError(f"must hold only JSON values (null, booleans, numbers (finite), strings, lists, "
                         f"mappings with string keys; not recursive), got {_short(bad[0])}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Which data set and how it is split (``n_eval`` rows are the evaluation set).

    ``n_train`` rows are loaded for training. A ``search_space`` entry ``n_train`` picks, per trial,
    how many of them it trains on: the first ``n_train`` (a smaller training set is a prefix of a
    larger one); every value it allows must be in ``[1, data.n_train]``.
    """

    source: Literal["digits", "mnist"] = "digits"
    path: str | None = Field(None, description="mnist: directory holding the IDX files")
    url: str | None = Field(None, description="mnist: base URL to download the IDX files from")
    checksums: dict[str, str] = Field(default_factory=dict, description="mnist download: file -> sha256")
    cache_dir: str = "~/.cache/nnsweeps/mnist"
    files: Literal["t10k", "train"] = "t10k"
    n_train: Int = Field(1500, ge=1)
    n_eval: Int = Field(297, ge=0)
    n_test: Int = Field(0, ge=0)
    shuffle: bool = True

    @model_validator(mode="after")
    def _source_location(self) -> "DataConfig":
        if self.source == "mnist" and not (self.path or self.url):
            raise ValueError("data.source 'mnist' needs data.path (a directory of IDX files) or data.url")
        if self.source == "digits" and self.n_train + self.n_eval + self.n_test > 1797:
            raise ValueError(f"data.n_train + data.n_eval + data.n_test must be <= 1797 for data.source 'digits', "
                             f"got {self.n_train + self.n_eval + self.n_test}")
        return self


class NetworkConfig(_Strict):
    """The network; input and output sizes come from the data set."""

    hidden: list[Annotated[Int, Field(ge=1)]] = Field(default_factory=lambda: [30])
    activation: Literal[ACTIVATIONS] = "sigmoid"  # type: ignore[valid-type]
    cost: Literal[COSTS] = "cross_entropy"  # type: ignore[valid-type]
    init: Literal[INITIALIZERS] = "default"  # type: ignore[valid-type]
    dtype: Literal["float64", "float32"] = "float64"


class TrainingConfig(_Strict):
    """Fixed training settings (a search-space entry overrides the field of the same name)."""

    epochs: Int = Field(10, ge=1)
    eta: Float = Field(0.5, gt=0)
    batch_size: Int = Field(10, ge=1)
    lmbda: Float = Field(0.0, ge=0)
    penalty: Literal[PENALTIES] = "l2"  # type: ignore[valid-type]
    convention: Literal[CONVENTIONS] = "dataset"  # type: ignore[valid-type]
    momentum: Float = Field(0.0, ge=0, lt=1)
    shuffle: bool = True
    early_stopping: Int | None = Field(None, ge=1)
    schedule_patience: Int | None = Field(None, ge=1)
    track_gradients: bool = True
    #: ``common``: every trial's batches come in one order per epoch, drawn from the study seed alone
    #: (common random numbers; needed for populations); ``per_trial``: each trial draws its own order
    #: from ``(seed, trial number)`` (the order of studies created before populations existed).
    batch_order: Literal["common", "per_trial"] = "common"

    @field_validator("eta", "lmbda", "momentum")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v


class ObjectiveConfig(_Strict):
    """The per-epoch metric optimized (reported to Optuna every epoch) and its direction."""

    metric: str = "eval/accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        # nncore.records is the one place metric names are defined; any layer number (1-9 ASCII digits) is accepted
        if re.sub(r"^layer[1-9][0-9]{0,8}/", "layer1/", v) not in metric_names(1):
            raise ValueError("must be an epoch-record metric such as 'eval/accuracy', 'eval/data_loss', "
                             f"'train/total_loss' or 'layer1/weight_rms', got {_short(v)}")
        return v


class FloatParam(_Strict):
    type: Literal["float"]
    low: Float
    high: Float
    log: bool = False
    step: Float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _range(self) -> "FloatParam":
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"needs finite low <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log=true")
        return self


class IntParam(_Strict):
    type: Literal["int"]
    low: Int
    high: Int
    log: bool = False
    step: Int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "IntParam":
        if self.low > self.high:
            raise ValueError(f"needs low <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low >= 1, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError(f"log=true needs step 1 (Optuna's rule), got step={self.step}")
        return self


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    _json_choices = field_validator("choices", mode="before")(_check_json)


ParamSpec = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class SamplerConfig(_Strict):
    name: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    options: dict[str, Any] = Field(default_factory=dict)

    _json_options = field_validator("options", mode="before")(_check_json)


class PrunerConfig(_Strict):
    name: Literal[PRUNERS] = "median"  # type: ignore[valid-type]
    options: dict[str, Any] = Field(default_factory=dict)

    _json_options = field_validator("options", mode="before")(_check_json)


class StudyConfig(_Strict):
    """How many trials, how they are sampled and pruned, where the study is stored."""

    n_trials: Int = Field(20, ge=1)
    timeout: Float | None = Field(None, gt=0, description="seconds; stop starting trials after this")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///optuna.db")
    workers: Int = Field(1, ge=1)
    heartbeat_interval: Int = Field(HEARTBEAT_INTERVAL, ge=1, le=3600,
                                    description="seconds between a running trial's heartbeats")
    heartbeat_grace: Int = Field(HEARTBEAT_GRACE, ge=2, le=86400,
                                 description="seconds without a heartbeat after which a trial is failed and retried")
    max_retries: Int = Field(3, ge=0, le=100, description="retries of a trial lost to an infrastructure fault")
    population: Int = Field(1, ge=1, le=1024,
                            description="trials a worker takes and trains at once (one population per structure); "
                                        "1: one trial at a time")

    @model_validator(mode="after")
    def _grace_covers_beats(self) -> "StudyConfig":
        if self.heartbeat_grace < 2 * self.heartbeat_interval:
            raise ValueError(f"study.heartbeat_grace must be at least 2 x study.heartbeat_interval "
                             f"({2 * self.heartbeat_interval} s), got {self.heartbeat_grace}")
        return self


class SweepConfig(_Strict):
    """One study: what to train, what to vary, what to optimize."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    seed: Annotated[Int, Field(ge=0)] = 0  # NumPy's SeedSequence takes non-negative ints only
    data: DataConfig = Field(default_factory=DataConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    study: StudyConfig = Field(default_factory=StudyConfig)

    @field_validator("search_space")
    @classmethod
    def _known_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, spec in v.items():
            if key not in SEARCHABLE:
                raise ValueError(f"search_space.{key}: unknown parameter {key!r}; allowed: {', '.join(SEARCHABLE)}")
            if key in ("batch_size", "epochs") and isinstance(spec, FloatParam):
                raise ValueError(f"search_space.{key} must be an int or categorical parameter, got type 'float'")
            if key == "hidden" and not isinstance(spec, CategoricalParam):
                raise ValueError("search_space.hidden must be categorical with lists of layer sizes as choices, "
                                 "e.g. [[30], [100]]")
            if key == "n_train":
                _check_n_train_spec(spec)
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "SweepConfig":
        if self.objective.metric.startswith("eval/") and self.data.n_eval == 0:
            raise ValueError(f"objective.metric {self.objective.metric!r} needs data.n_eval > 0, got 0")
        layer = re.match(r"layer([0-9]+)/", self.objective.metric)
        if layer and "hidden" not in self.search_space and int(layer.group(1)) > len(self.network.hidden) + 1:
            raise ValueError(f"objective.metric {self.objective.metric!r} names a layer the network does not have "
                             f"(network.hidden {self.network.hidden} gives layer1..layer{len(self.network.hidden) + 1})")
        n_train = self.search_space.get("n_train")
        if n_train is not None and max(n_train_values(n_train)) > self.data.n_train:
            raise ValueError(f"search_space.n_train allows up to {max(n_train_values(n_train))} training rows, but "
                             f"data.n_train loads {self.data.n_train}: every n_train must be <= data.n_train (each "
                             f"trial trains on the first n_train of the rows loaded); raise data.n_train or lower "
                             f"the search space's n_train")
        if self.study.population > 1 and self.training.batch_order != "common":
            raise ValueError(f"study.population {self.study.population} needs training.batch_order 'common' (the "
                             f"members of a population share one batch order), got 'per_trial'; set "
                             f"study.population: 1 or training.batch_order: common")
        if self.study.sampler.name == "grid" and any(not isinstance(s, CategoricalParam)
                                                     for s in self.search_space.values()):
            raise ValueError("study.sampler 'grid' needs every search_space entry to be categorical")
        return self

    # -- derived ------------------------------------------------------------
    def fingerprint(self) -> str:
        """SHA-256 over what makes trials comparable: search space, objective, direction, fixed settings.

        ``training.batch_order`` enters only when it is ``common``: a ``per_trial`` config has the
        fingerprint that the same config had before the field existed, so old studies resume with it.
        """
        training = self.training.model_dump()
        if training["batch_order"] == "per_trial":
            del training["batch_order"]
        payload = {
            "search_space": {k: v.model_dump() for k, v in sorted(self.search_space.items())},
            "objective": self.objective.model_dump(),
            "data": self.data.model_dump(exclude={"cache_dir"}),
            "network": self.network.model_dump(),
            "training": training,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def with_overrides(self, **study_fields: Any) -> "SweepConfig":
        """A copy with ``study`` fields replaced (CLI flags), re-validated."""
        changes = {k: v for k, v in study_fields.items() if v is not None}
        if not changes:
            return self
        data = self.model_dump()
        data["study"].update(changes)
        return parse_config(data, source="command line")


def _check_n_train_spec(spec: Any) -> None:
    """``n_train`` in a search space: an int range or integer choices, every value >= 1."""
    if isinstance(spec, FloatParam):
        raise ValueError("search_space.n_train must be an int or categorical parameter, got type 'float'")
    if isinstance(spec, CategoricalParam):
        bad = [c for c in spec.choices if isinstance(c, bool) or not isinstance(c, int) or c < 1]
        if bad:
            raise ValueError(f"search_space.n_train choices must be integers >= 1, got {_short(bad)}")
    elif spec.low < 1:
        raise ValueError(f"search_space.n_train must be >= 1, got low={spec.low}")


def n_train_values(spec: "IntParam | CategoricalParam") -> tuple[int, int]:
    """The smallest and the largest ``n_train`` a search-space entry allows."""
    if isinstance(spec, CategoricalParam):
        return min(spec.choices), max(spec.choices)
    return spec.low, spec.low + (spec.high - spec.low) // spec.step * spec.step


# -- YAML -------------------------------------------------------------------------------------

_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.?[0-9_]*(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.(?:inf|Inf|INF)
                          |\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicate keys.

    A scalar its tag cannot read (``!!int abc``, ``!!bool maybe``, ``!!timestamp x``) is a YAML error at its
    line, not the ``ValueError`` / ``KeyError`` / ``AttributeError`` of PyYAML's constructor.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, ConfigError):
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            value = node.value if isinstance(node, yaml.ScalarNode) else node.id
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {reprlib.repr(value)} as {node.tag.rsplit(':', 1)[-1]!r}",
                node.start_mark) from None


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in "-+0123456789.":
    _Loader.yaml_implicit_resolvers.setdefault(_ch, [])
    _Loader.yaml_implicit_resolvers[_ch] = [r for r in _Loader.yaml_implicit_resolvers[_ch]
                                            if r[0] != "tag:yaml.org,2002:float"]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    if value.bit_length() > 10_000:  # a 0x... literal has no digit limit, but printing it fails (int_max_str_digits)
        raise yaml.constructor.ConstructorError(None, None, f"integer too large ({value.bit_length()} bits)",
                                                node.start_mark)
    return value


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: merged keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # a list or mapping as key: SafeLoader's "found unhashable key" below
            continue
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                              f"(first at line {seen[key]})")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 6, 6


def _short(value: Any) -> str:
    """``repr(value)``, cut to about 80 characters (a value got can be a huge list or a YAML alias bomb)."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"an integer of {value.bit_length()} bits"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid sweep config ({source}):"]
    for e in err.errors():
        raw = list(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        got = e.get("input")
        if e["type"] == "invalid_key" or raw[-1:] == ["[key]"] and e["type"] == "string_type":
            # a key that is not a string: pydantic's loc has it as 0 for false, 'None' for null
            raw = raw[:-1] if raw[-1] == "[key]" else raw
            raw[-1] = got
            msg = "keys must be strings (unquoted yes/no/on/off/true/false/null are not: quote them)"
        # without the discriminator tag pydantic puts after a search-space key: search_space.eta.low, not .float.low
        loc = ".".join(p if isinstance(p, str) else _short(p) for i, p in enumerate(raw)
                       if not (i == 2 and raw[0] == "search_space" and p in ("float", "int", "categorical")))
        got_txt = "" if e["type"] in ("missing",) or isinstance(got, dict) else f" (got {_short(got)})"
        lines.append(f"  {loc or '<root>'}: {msg}{got_txt}")
    return "\n".join(lines)


def parse_config(data: Any, *, source: str = "<dict>") -> SweepConfig:
    """Validate an already-loaded mapping into a :class:`SweepConfig`."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"invalid sweep config ({source}): the top level must be a mapping, got {got}")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    except RecursionError:
        raise ConfigError(f"invalid sweep config ({source}): values nested too deeply") from None


def _yaml_problem(err: BaseException) -> str:
    """One line for a YAML error: what is wrong and where (``expected ',' or ']', but got ':' at line 4,
    column 6``), without PyYAML's multi-line snippet."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if not problem:
        return " ".join(str(err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read sweep config {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read sweep config {path}: not UTF-8 text (byte {err.start}: "
                          f"{err.object[err.start:err.start + 1]!r})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ConfigError) as err:  # ConfigError: a duplicate key
        raise ConfigError(f"invalid YAML in {path}: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"invalid YAML in {path}: nested too deeply") from None
    return parse_config(data, source=str(path))
