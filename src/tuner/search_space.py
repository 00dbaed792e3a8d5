"""Search spaces as data: one YAML vocabulary for every study, validated on load.

A search-space file maps parameter names to either a plain value (the parameter is fixed) or a mapping
that tells Optuna how to search it::

    optimizer: {choices: [Adam, AdamW, RAdam, NAdam]}   # categorical
    lr: {low: 1.0e-4, high: 1.0e-2, log: true}          # float, log scale
    batch_size: {choices: [16, 32]}
    unfrozen_layers: {low: 0, high: 3}                  # int
    schedule: cosine                                    # fixed
    scale: {low: 16, high: 48, when: {loss: [aam]}}     # searched only when loss is aam

Every key, type, bound and choice is checked up front; an error names the file and the key and says
what would be accepted. Objectives may declare extra parameters (a loss margin, a clip value) that
extend the common vocabulary.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner._yaml import parse_yaml
from tuner.errors import ConfigError
from tuner.text import did_you_mean

if TYPE_CHECKING:
    import optuna

__all__ = ["Param", "SearchSpace", "TrialConfig", "COMMON_PARAMS", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("Adam", "AdamW", "RAdam", "NAdam")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Param:
    """Declaration of one tunable parameter: its type, the values it may take and its default."""

    type: type[Any]  # int, float or str
    default: Any
    allowed: tuple[Any, ...] | None = None  # closed set of values (str params)
    minimum: float | None = None  # inclusive lower bound on any value
    positive: bool = False  # strictly > 0
    help: str = ""

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ConfigError naming ``where``."""
        if value is None and self.default is None:
            return None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is float and isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads `1e-4` (no dot) as a string
                value = float(value)
        if not isinstance(value, self.type) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected {self.type.__name__}, got {value!r} ({type(value).__name__}).")
        if self.allowed is not None and value not in self.allowed:
            hint = did_you_mean(str(value), [str(a) for a in self.allowed])
            raise ConfigError(f"{where}: unknown value {value!r}{hint}. Allowed: {', '.join(map(str, self.allowed))}.")
        if self.type is float and not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number.")
        if self.positive and value <= 0:
            raise ConfigError(f"{where}: must be > 0, got {value!r}.")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where}: must be >= {self.minimum:g}, got {value!r}.")
        return value


#: The vocabulary shared by all objectives.
COMMON_PARAMS: dict[str, Param] = {
    "optimizer": Param(str, "Adam", allowed=OPTIMIZERS, help="torch.optim optimizer"),
    "lr": Param(float, 1e-3, positive=True, help="peak learning rate"),
    "weight_decay": Param(float, 0.0, minimum=0.0, help="weight decay (decoupled for AdamW)"),
    "schedule": Param(str, "constant", allowed=SCHEDULES, help="learning-rate schedule over the epochs"),
    "warmup_epochs": Param(int, 0, minimum=0, help="linear warm-up epochs before the schedule"),
    "batch_size": Param(int, 32, positive=True, help="training batch size"),
    "unfrozen_layers": Param(int, None, minimum=0, help="top blocks that train besides the head (absent: all train)"),
}


@dataclass(frozen=True)
class TrialConfig:
    """The complete configuration of one trial: searched and fixed parameters together."""

    optimizer: str = "Adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    batch_size: int = 32
    unfrozen_layers: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrialConfig:
        names = {f.name for f in fields(cls)} - {"extra"}
        common = {k: v for k, v in params.items() if k in names}
        extra = {k: v for k, v in params.items() if k not in names}
        return cls(**common, extra=extra)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class _Dimension:
    """One searched parameter."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    is_int: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # searched only if these params take these values

    def applies(self, params: Mapping[str, Any]) -> bool:
        return all(params.get(name) in values for name, values in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None  # a range when there are no choices
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution :meth:`suggest` asks with (what Optuna stores beside each trial's value)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(list(self.choices))
        assert self.low is not None and self.high is not None
        if self.is_int:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def as_yaml(self) -> Any:
        out: dict[str, Any]
        if self.choices is not None:
            out = {"choices": list(self.choices)}
        else:
            out = {"low": self.low, "high": self.high}
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {name: list(values) for name, values in self.when}
        return out


class SearchSpace:
    """A validated search space: searched dimensions plus fixed values, over a parameter vocabulary.

    Build it with :meth:`from_yaml` (or :meth:`from_dict`); call :meth:`suggest` inside an Optuna
    objective to get a :class:`TrialConfig`.
    """

    def __init__(
        self,
        dimensions: Mapping[str, _Dimension],
        fixed: Mapping[str, Any],
        vocabulary: Mapping[str, Param],
        source: str,
    ) -> None:
        self.dimensions = dict(dimensions)
        self.fixed = dict(fixed)
        self.vocabulary = dict(vocabulary)
        self.source = source

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, extra: Mapping[str, Param] | None = None, common: bool = True) -> SearchSpace:
        """Load and validate a search-space YAML file (``extra``: the objective's own parameters; ``common``:
        whether the common training vocabulary applies too)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"search space file not found: {path} (looked relative to {Path.cwd()}). "
                "Pass a path to a YAML file such as search_spaces/pyannote.yaml."
            )
        content = parse_yaml(path.read_text(encoding="utf-8"), path)
        if content is None:
            content = {}
        return cls.from_dict(content, extra=extra, source=str(path), common=common)

    @classmethod
    def from_dict(
        cls,
        content: Any,
        extra: Mapping[str, Param] | None = None,
        source: str = "<search space>",
        common: bool = True,
    ) -> SearchSpace:
        vocabulary = {**(COMMON_PARAMS if common else {}), **(extra or {})}
        if not isinstance(content, Mapping):
            raise ConfigError(
                f"{source}: a search space must be a mapping of parameter names, got {type(content).__name__}."
            )
        dimensions: dict[str, _Dimension] = {}
        fixed: dict[str, Any] = {}
        for name, spec in content.items():
            where = f"{source}: key '{name}'"
            if name not in vocabulary:
                raise ConfigError(
                    f"{source}: unknown key '{name}'{did_you_mean(str(name), vocabulary)}. "
                    f"Known keys: {', '.join(vocabulary)}."
                )
            param = vocabulary[name]
            if isinstance(spec, Mapping):
                spec = dict(spec)
                when = _parse_when(spec.pop("when", None), vocabulary, dimensions, fixed, where)
                dimensions[name] = replace(_parse_dimension(name, spec, param, where), when=when)
            elif isinstance(spec, list):
                raise ConfigError(f"{where}: a list is ambiguous; write {{choices: {spec}}} to search these values.")
            else:
                fixed[name] = param.check(spec, where)
        return cls(dimensions, fixed, vocabulary, source)

    def with_fixed(self, values: Mapping[str, Any], source: str = "<study>") -> SearchSpace:
        """A copy where ``values`` are fixed (a study pinning parameters of a shared space)."""
        dimensions = dict(self.dimensions)
        fixed = dict(self.fixed)
        for name, value in values.items():
            if name not in self.vocabulary:
                raise ConfigError(
                    f"{source}: unknown parameter '{name}'{did_you_mean(name, self.vocabulary)}. "
                    f"Known: {', '.join(self.vocabulary)}."
                )
            fixed[name] = self.vocabulary[name].check(value, f"{source}: fixed '{name}'")
            dimensions.pop(name, None)
        return SearchSpace(dimensions, fixed, self.vocabulary, self.source)

    # -- use ------------------------------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        """Every parameter at its fixed value, else at its declared default (searched ones included)."""
        out = {name: param.default for name, param in self.vocabulary.items()}
        out.update(self.fixed)
        return out

    def suggest(self, trial: optuna.Trial) -> TrialConfig:
        """Ask ``trial`` for every searched parameter; fill in fixed values and defaults."""
        params = self.defaults()
        for name, dimension in self.dimensions.items():  # file order: conditions come first
            if dimension.applies(params):
                params[name] = dimension.suggest(trial)
        return TrialConfig.from_params(params)

    def config_from(self, params: Mapping[str, Any]) -> TrialConfig:
        """The TrialConfig a trial with these stored ``params`` ran with."""
        return TrialConfig.from_params({**self.defaults(), **params})

    def check_unfrozen_layers(self, num_blocks: int | None, model: str = "the model") -> None:
        """Refuse an ``unfrozen_layers`` value or range above the model's ``num_blocks``."""
        if num_blocks is None or "unfrozen_layers" not in self.vocabulary:
            return
        dimension = self.dimensions.get("unfrozen_layers")
        if dimension is not None:
            highest = max(dimension.choices) if dimension.choices is not None else dimension.high
        else:
            highest = self.fixed.get("unfrozen_layers")
        if highest is not None and highest > num_blocks:
            raise ConfigError(
                f"{self.source}: key 'unfrozen_layers' goes up to {highest:g} but {model} has {num_blocks} "
                f"freezable blocks; use a value or range within 0..{num_blocks}."
            )

    def keeping_order(self, stored: Mapping[str, Any]) -> SearchSpace:
        """A copy whose choices come in the order a stored space (:meth:`to_dict` data) lists them, the new ones
        after: a study's categorical parameters keep the order of its first trials (Optuna stores a choice by its
        position, and refuses the same parameter with its choices in another order)."""
        dimensions = dict(self.dimensions)
        for name, dimension in self.dimensions.items():
            before = stored.get(name)
            if (
                dimension.choices is None
                or not isinstance(before, Mapping)
                or not isinstance(before.get("choices"), list)
            ):
                continue
            kept = [c for s in before["choices"] for c in dimension.choices if c == s]
            dimensions[name] = replace(dimension, choices=(*kept, *(c for c in dimension.choices if c not in kept)))
        return SearchSpace(dimensions, self.fixed, self.vocabulary, self.source)

    def distribution(self, name: str) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution of the searched parameter ``name``."""
        return self.dimensions[name].distribution()

    def to_dict(self) -> dict[str, Any]:
        """The space as YAML-ready data (round-trips through :meth:`from_dict`)."""
        out: dict[str, Any] = {name: d.as_yaml() for name, d in self.dimensions.items()}
        out.update(self.fixed)
        return out

    def __repr__(self) -> str:
        return f"SearchSpace(searched={list(self.dimensions)}, fixed={self.fixed})"


def _parse_when(
    when: Any,
    vocabulary: Mapping[str, Param],
    dimensions: Mapping[str, _Dimension],
    fixed: Mapping[str, Any],
    where: str,
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``when: {loss: [aam, triplet]}``: search this parameter only for those values of ``loss``."""
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"{where}: 'when' must map a parameter to the values it applies to, e.g. {{loss: [aam]}}.")
    conditions = []
    for other, values in when.items():
        if other not in vocabulary:
            raise ConfigError(
                f"{where}: 'when' names unknown parameter '{other}'{did_you_mean(str(other), vocabulary)}."
            )
        if other not in dimensions and other not in fixed:
            raise ConfigError(f"{where}: 'when' depends on '{other}', which must be declared earlier in the file.")
        values = values if isinstance(values, list) else [values]
        checked = tuple(vocabulary[other].check(v, f"{where}, 'when' value of '{other}'") for v in values)
        conditions.append((str(other), checked))
    return tuple(conditions)


def _parse_dimension(name: str, spec: Mapping[str, Any], param: Param, where: str) -> _Dimension:
    keys = set(spec)
    if "choices" in keys:
        unknown = keys - {"choices"}
        if unknown:
            raise ConfigError(f"{where}: 'choices' cannot be combined with {sorted(unknown)}.")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: 'choices' must be a non-empty list, got {choices!r}.")
        checked = tuple(param.check(c, f"{where}, choice {c!r}") for c in choices)
        if len(set(checked)) != len(checked):
            raise ConfigError(f"{where}: 'choices' lists a value twice: {list(choices)}.")
        return _Dimension(name, choices=checked)
    allowed_keys = {"low", "high", "log", "step"}
    unknown = keys - allowed_keys
    if unknown:
        bad = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: unknown field '{bad}'{did_you_mean(bad, allowed_keys | {'choices'})}. "
            "Use {choices: [...]} or {low: ..., high: ..., log: true|false, step: ...}."
        )
    if param.type is str:
        raise ConfigError(f"{where}: a {param.type.__name__} parameter is searched with {{choices: [...]}}.")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both 'low' and 'high'.")
    low = param.check(spec["low"], f"{where}, 'low'")
    high = param.check(spec["high"], f"{where}, 'high'")
    if low is None or high is None:
        raise ConfigError(f"{where}: 'low' and 'high' must be numbers.")
    if low > high:
        raise ConfigError(f"{where}: 'low' ({low}) is greater than 'high' ({high}).")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: 'log' must be true or false, got {log!r}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs 'low' > 0, got {low}.")
    step = spec.get("step")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: 'step' cannot be used with 'log: true'.")
        step = param.check(step, f"{where}, 'step'")
        if step <= 0:
            raise ConfigError(f"{where}: 'step' must be > 0.")
    return _Dimension(name, low=low, high=high, log=log, step=step, is_int=param.type is int)
