"""Suites: validated, immutable experiment definitions loaded from TOML (``suites/*.toml``).

A suite names the data set, the model, the one training recipe every method shares, the budget, and
the default grid (methods, sparsities, seeds). Unknown keys and wrong types are errors naming the file
and the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pruning_bench.core.budget import POLICIES, UNITS
from pruning_bench.core.recipe import MIN_ROUND_SHARE, Recipe
from pruning_bench.errors import BenchError, unknown_choice
from pruning_bench.plan.fit import parse_level


@dataclass(frozen=True)
class DatasetSpec:
    """``[dataset]``: ``data_dir`` defaults to the per-user data cache (pruning_bench.data.download.data_home);
    missing files are downloaded there unless ``download = false``."""

    name: str
    data_dir: str | None = None
    download: bool = True
    val_fraction: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """``[model]``: a registry name; every other key is a keyword argument of its builder (``channels = 64``)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)




@dataclass(frozen=True)
class Budget:
    """The base run (1x) and how a sweep scales and counts it (``pruning_bench.core.budget``)."""

    epochs: float                     # the base run (1x), in epochs of the training set
    policy: str = "equal"
    unit: str = "epochs"              # epochs | flops | seconds
    multiples: list[Any] = field(default_factory=lambda: [1.0])  # the ladder swept by default: floats, "fit"
    seconds: float | None = None      # the base run in seconds (the 'seconds' unit only)
    min_round_epochs: float | None = None  # shortest IMP/SWAMP round; None = MIN_ROUND_SHARE x epochs
    max_seconds: float | None = None  # optional wall-clock cap per trial (any unit): the trial fails past it

    @property
    def min_round(self) -> float:
        """The shortest round an iterative method may run, in epochs."""
        return self.min_round_epochs if self.min_round_epochs is not None else MIN_ROUND_SHARE * self.epochs


@dataclass(frozen=True)
class ReportSpec:
    """``[report]``: what the findings at the top of a report compare by name, e.g.
    ``compare = [["swamp", "imp"]]`` (difference, 95% interval and p in every column where both ran), and
    the ``metric`` of the leaderboard printed at the end of ``bench run`` (e.g. ``"test_ppl"``)."""

    compare: list[list[str]] = field(default_factory=lambda: [["swamp", "imp"]])
    metric: str = "test_acc"


@dataclass(frozen=True)
class Cost:
    """``[cost]``: a stated speed for ``--dry-run``'s estimate on the machine the suite is meant for (it
    also measures this one): ``epoch_seconds`` for one dense training epoch on ``device``."""

    epoch_seconds: float | None = None
    device: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: DatasetSpec
    model: ModelSpec
    budget: Budget
    recipe: Recipe = field(default_factory=Recipe)
    description: str = ""
    methods: list[str] = field(default_factory=list)
    sparsities: list[float] = field(default_factory=lambda: [0.5, 0.8, 0.9])
    seeds: list[int] = field(default_factory=lambda: [0])
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method overrides
    report: ReportSpec = field(default_factory=ReportSpec)  # not part of any trial key
    cost: Cost = field(default_factory=Cost)                # not part of any trial key
    source: str = ""  # where it was loaded from (not part of any trial key)

    def experiment_config(self) -> dict[str, Any]:
        """What a trial's result depends on (dataset, model, recipe, budget epochs): hashed into keys."""
        return {
            # where the files live (data_dir, download) does not change what a trial computes
            "dataset": {"name": self.dataset.name, "val_fraction": self.dataset.val_fraction,
                        "options": self.dataset.options},
            "model": dataclasses.asdict(self.model),
            # the optimizer only when not the default SGD: earlier suites' trial keys stay as they were
            "recipe": {k: v for k, v in dataclasses.asdict(self.recipe).items()
                       if k != "optimizer" or v != "sgd"},
            # the multiple, unit and policy are the trial's own (trial.Trial); these scale them
            "budget": {"epochs": self.budget.epochs, "seconds": self.budget.seconds,
                       "min_round_epochs": self.budget.min_round, "max_seconds": self.budget.max_seconds},
        }

    def with_overrides(self, **changes: Any) -> Suite:
        """A copy with dotted-path overrides, e.g. ``{"budget.epochs": 2, "dataset.data_dir": "/d"}``."""
        suite = self
        for path, value in changes.items():
            head, _, attr = path.partition(".")
            if attr:
                suite = dataclasses.replace(suite, **{head: dataclasses.replace(getattr(suite, head),
                                                                                **{attr: value})})
            else:
                suite = dataclasses.replace(suite, **{head: value})
        return suite


# ---- loading ---------------------------------------------------------------------------------------

def builtin_suites() -> dict[str, Path]:
    """Suites shipped with the package (works from a wheel as well as a checkout)."""
    root = resources.files("pruning_bench.suites")
    return {Path(entry.name).stem: Path(str(entry)) for entry in root.iterdir()
            if entry.name.endswith(".toml")}


def load_suite(name_or_path: str) -> Suite:
    """Load a built-in suite by name, or a suite file by path."""
    path = Path(name_or_path)
    if not (name_or_path.endswith(".toml") or path.is_file()):  # a folder named like a suite does not shadow it
        known = builtin_suites()
        if name_or_path not in known:
            raise unknown_choice("suite", name_or_path, known)
        path = known[name_or_path]
    if not path.is_file():
        raise BenchError(f"suite file '{path}' does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise BenchError(f"{path}: not valid TOML: {err}") from None
    data.setdefault("name", path.stem)
    model = data.get("model")
    if isinstance(model, dict):  # [model]: `name` plus keyword arguments for the model's builder
        data["model"] = {"name": model["name"], "options": {k: v for k, v in model.items() if k != "name"}} \
            if "name" in model else model
    suite = _build(Suite, data, str(path), "")
    levels = [parse_level(m, f"{path}: key 'budget.multiples'") for m in suite.budget.multiples]
    dataset = suite.dataset
    if dataset.data_dir and not Path(dataset.data_dir).expanduser().is_absolute():  # from the file's folder
        dataset = dataclasses.replace(dataset, data_dir=str((path.parent / dataset.data_dir).resolve()))
    suite = dataclasses.replace(suite, source=str(path), dataset=dataset,
                                budget=dataclasses.replace(suite.budget, multiples=list(dict.fromkeys(levels))))
    validate_suite(suite, str(path))
    return suite


def validate_suite(suite: Suite, where: str) -> None:
    """Value checks beyond types; raises BenchError naming the file and key."""
    for key in ("sparsities", "seeds"):
        if not getattr(suite, key):
            raise BenchError(f"{where}: key '{key}' is empty; give at least one value")
    for s in suite.sparsities:
        check_sparsity(s, f"{where}: key 'sparsities'")
    for seed in suite.seeds:
        if seed < 0:
            raise BenchError(f"{where}: key 'seeds': seed {seed} is negative; seeds are integers >= 0, e.g. [0, 1, 2]")
    if suite.budget.policy not in POLICIES:
        raise BenchError(f"{where}: key 'budget.policy' is '{suite.budget.policy}'; valid: {', '.join(POLICIES)}")
    if suite.budget.epochs < 0 or (suite.budget.epochs == 0 and suite.budget.policy != "native"):
        raise BenchError(f"{where}: key 'budget.epochs' must be > 0, got {suite.budget.epochs} (0 only with policy "
                         "= \"native\": a pretrained model pruned and evaluated as loaded, no training)")
    if suite.budget.epochs == 0 and suite.budget.multiples != [1.0]:
        raise BenchError(f"{where}: key 'budget.multiples' must be [1] with budget.epochs = 0 (nothing to scale)")
    if suite.budget.unit not in UNITS:
        raise BenchError(f"{where}: key 'budget.unit' is '{suite.budget.unit}'; valid: {', '.join(UNITS)}")
    if not suite.budget.multiples:
        raise BenchError(f"{where}: key 'budget.multiples' is empty; give at least one, e.g. [1, 4]")
    for m in suite.budget.multiples:
        parse_level(m, f"{where}: key 'budget.multiples'")
    if suite.budget.seconds is not None and suite.budget.seconds <= 0:
        raise BenchError(f"{where}: key 'budget.seconds' must be > 0, got {suite.budget.seconds}")
    if UNITS[suite.budget.unit].clocked and suite.budget.seconds is None:
        raise BenchError(f"{where}: key 'budget.unit' is 'seconds' but 'budget.seconds' (the base run in "
                         "seconds) is not set")
    if suite.budget.min_round_epochs is not None and suite.budget.min_round_epochs <= 0:
        raise BenchError(f"{where}: key 'budget.min_round_epochs' must be > 0, got {suite.budget.min_round_epochs}")
    if suite.recipe.optimizer not in ("sgd", "adamw"):
        raise BenchError(f"{where}: key 'recipe.optimizer' is '{suite.recipe.optimizer}'; valid: sgd, adamw")
    if suite.recipe.schedule not in ("cosine", "step", "constant"):
        raise BenchError(f"{where}: key 'recipe.schedule' is '{suite.recipe.schedule}'; "
                         "valid: cosine, step, constant")
    if suite.recipe.batch_size < 1 or suite.recipe.lr <= 0:
        raise BenchError(f"{where}: keys 'recipe.batch_size' and 'recipe.lr' must be positive")
    if not 0 <= suite.dataset.val_fraction < 1:
        raise BenchError(f"{where}: key 'dataset.val_fraction' must be in [0, 1), "
                         f"got {suite.dataset.val_fraction}")
    for pair in suite.report.compare:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise BenchError(f"{where}: key 'report.compare' holds pairs of two method names, e.g. "
                             f'[["swamp", "imp"]], got {pair!r}')
    if suite.cost.epoch_seconds is not None and suite.cost.epoch_seconds <= 0:
        raise BenchError(f"{where}: key 'cost.epoch_seconds' must be > 0, got {suite.cost.epoch_seconds}")
    if not all(0 < m < 1 for m in suite.recipe.milestones):
        raise BenchError(f"{where}: key 'recipe.milestones' holds fractions of training in (0, 1), "
                         f"got {suite.recipe.milestones}")


def check_sparsity(value: float, where: str) -> float:
    if not 0.0 < value < 1.0:
        raise BenchError(f"{where}: sparsity {value} is out of range; it must be in (0, 1), e.g. 0.9")
    return value


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking keys and types."""
    if not isinstance(data, dict):
        raise BenchError(f"{where}: key '{prefix.rstrip('.')}' must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise BenchError(f"{where}: unknown key '{prefix}{unknown[0]}'; valid keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BenchError(f"{where}: missing required key '{key}'")
            continue
        kwargs[name] = _coerce(hints[name], data[name], where, key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if origin is list:
        if not isinstance(value, list):
            raise BenchError(f"{where}: key '{key}' must be a list, got {value!r}")
        return [_coerce(args[0], v, where, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise BenchError(f"{where}: key '{key}' must be a table, got {value!r}")
        return {k: _coerce(args[1], v, where, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise BenchError(f"{where}: key '{key}' must be {hint.__name__}, got {value!r}")
    return value
