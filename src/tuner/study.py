"""Study declarations (the study files) and their loading."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError
from tuner.quiet import experimental
from tuner.text import did_you_mean

if TYPE_CHECKING:
    from tuner.search_space import Param, SearchSpace

__all__ = [
    "PRECISIONS",
    "StudySpec",
    "WarmStartEntry",
    "check_accumulation_value",
    "check_precision_value",
    "load_study_file",
    "load_warm_start",
]

#: the training precisions a study (and ``tuner train``) takes: Lightning's names, the default first
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
#: Lightning's other spellings of the same three (``Trainer(precision=16)``), read as the name they stand for
_PRECISION_ALIASES: dict[Any, str] = {
    32: "32-true", "32": "32-true", 16: "16-mixed", "16": "16-mixed", "bf16": "bf16-mixed",
}  # fmt: skip
#: the Trainer arguments a study gives as its own fields (validated, recorded, exported) rather than in `trainer`
_FIRST_CLASS_TRAINER = ("precision", "accumulate_grad_batches")


def check_precision_value(value: Any, where: str) -> str:
    """``value`` as one of :data:`PRECISIONS` (Lightning's aliases ``32``, ``16``, ``"bf16"`` read as theirs), else a
    ConfigError naming ``where``, the value and the allowed ones."""
    if isinstance(value, str) and value in PRECISIONS:
        return value
    if not isinstance(value, bool) and isinstance(value, (int, str)) and value in _PRECISION_ALIASES:
        return _PRECISION_ALIASES[value]
    raise ConfigError(
        f"{where}: 'precision' must be one of {', '.join(PRECISIONS)} (Lightning's names: 32-bit, bfloat16 or "
        f"float16 automatic mixed precision), got {value!r}."
    )


def check_accumulation_value(value: Any, where: str) -> int:
    """``value`` if it is an integer >= 1 (batches whose gradients add up before each optimizer step), else a
    ConfigError naming ``where`` and the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(
        f"{where}: 'accumulate_grad_batches' must be an integer >= 1 (1: an optimizer step every batch; k: every "
        f"k batches, an effective batch of k x batch_size), got {value!r}."
    )


@dataclass(frozen=True)
class StudySpec:
    """Everything a study is: what it tunes, on what data, over which space, with which budget.

    A study file (``studies/*.py``) builds one of these and names it ``study``. Paths are relative to
    the directory ``tuner run`` is started from.
    """

    name: str
    objective: str
    search_space: str | Path | Mapping[str, Any]  # a YAML file, or the same content inline
    data: str | None = "demo"
    pretrained: str | None = None
    n_trials: int = 10  # budget of finished (complete or pruned) trials
    max_epochs: int = 5  # epochs per trial; pruned trials stop earlier
    sampler: Any = None  # an optuna sampler (default: TPESampler seeded with `seed`)
    pruner: Any = None  # an optuna pruner (default: MedianPruner)
    #: the per-epoch value reported to the pruner (default: the objective's metric); e.g. "loss/val" where
    #: the metric sits on a plateau for the first epochs and ties never prune
    prune_on: str | None = None
    seed: int = 0  # trial k trains with seed + k
    fixed: Mapping[str, Any] = field(default_factory=dict)  # parameters pinned on top of the space
    options: Mapping[str, Any] = field(default_factory=dict)  # objective options (model size, ...)
    trainer: Mapping[str, Any] = field(default_factory=dict)  # extra lightning.Trainer arguments
    #: training precision (Lightning's): "32-true" (default), "bf16-mixed" or "16-mixed" (a GPU's float16 autocast)
    precision: str = "32-true"
    #: batches whose gradients add up before each optimizer step: the effective batch is batch_size x this
    accumulate_grad_batches: int = 1
    #: CPU threads each worker's torch uses (None: the machine's cores divided among its tuner workers); a
    #: setting of the machine, not of the problem: not recorded with the study
    threads: int | None = None
    description: str = ""
    #: configurations to run first (a YAML file, or an inline list of mappings): see load_warm_start
    warm_start: str | Path | Sequence[Mapping[str, Any]] | None = None
    #: confirmation once the search budget is spent (``tuner run``; see :mod:`tuner.confirm`):
    #: ``{"top": K, "seeds": N}`` trains the K best configurations and the reference with N new seeds each
    confirm: Mapping[str, int] | None = None
    #: the study file that declared it (set by load_study_file), named in error messages
    source: str | None = field(default=None, compare=False)

    @property
    def where(self) -> str:
        """How error messages name the study: ``studies/x.py: study 'x'`` (or ``study 'x'``)."""
        return f"{self.source}: study '{self.name}'" if self.source else f"study '{self.name}'"

    def __post_init__(self) -> None:
        where = self.where
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("StudySpec needs a non-empty 'name'.")
        for key in ("n_trials", "max_epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: '{key}' must be a positive integer, got {value!r}.")
        for key in ("fixed", "options", "trainer"):
            if not isinstance(getattr(self, key), Mapping):
                raise ConfigError(f"{where}: '{key}' must be a dict, got {type(getattr(self, key)).__name__}.")
        forbidden = {"max_epochs", "callbacks", "logger", "enable_progress_bar"} & set(self.trainer)
        if forbidden:
            raise ConfigError(f"{where}: 'trainer' cannot set {sorted(forbidden)}; tuner manages them.")
        self._lift_trainer_options(where)
        object.__setattr__(self, "precision", check_precision_value(self.precision, where))
        check_accumulation_value(self.accumulate_grad_batches, where)
        from tuner.training.threads import check_threads

        check_threads(self.threads, where)
        if not isinstance(self.search_space, (str, Path, Mapping)):
            raise ConfigError(
                f"{where}: 'search_space' must be the path of a YAML file (or a dict of the same content), "
                f"got {type(self.search_space).__name__}."
            )
        if self.prune_on is not None and (not isinstance(self.prune_on, str) or not self.prune_on.strip()):
            raise ConfigError(
                f"{where}: 'prune_on' must name a per-epoch value such as 'loss/val', got {self.prune_on!r}."
            )
        if self.confirm is not None:
            if not isinstance(self.confirm, Mapping) or set(self.confirm) - {"top", "seeds"}:
                raise ConfigError(
                    f"{where}: 'confirm' must be a dict with 'top' and 'seeds' (e.g. {{'top': 2, 'seeds': 2}}), "
                    f"got {self.confirm!r}."
                )
            for key in ("top", "seeds"):
                value = self.confirm.get(key, 2)
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ConfigError(f"{where}: confirm['{key}'] must be a positive integer, got {value!r}.")
        warm_start = self.warm_start
        if warm_start is not None and not isinstance(warm_start, (str, Path, Sequence)):
            raise ConfigError(
                f"{where}: 'warm_start' must be the path of a YAML file or a list of dicts "
                f"(parameter -> value, optionally 'name'), got {type(warm_start).__name__}."
            )

    def _lift_trainer_options(self, where: str) -> None:
        """Take ``precision`` and ``accumulate_grad_batches`` out of ``trainer`` (study files, stored studies and
        exports from before they were fields) into the fields, refusing a field given another value as well."""
        lifted = {key: self.trainer[key] for key in _FIRST_CLASS_TRAINER if key in self.trainer}
        if not lifted:
            return
        defaults = {f.name: f.default for f in fields(self) if f.name in _FIRST_CLASS_TRAINER}
        for key, value in lifted.items():
            check = check_precision_value if key == "precision" else check_accumulation_value
            value = check(value, f"{where} trainer")
            given = getattr(self, key)
            if given != defaults[key] and given != value:
                raise ConfigError(
                    f"{where}: {key} is given twice, {key}={given!r} and trainer['{key}']={value!r}; "
                    f"keep {key}={given!r} and remove it from 'trainer'."
                )
            object.__setattr__(self, key, value)
        object.__setattr__(self, "trainer", {k: v for k, v in self.trainer.items() if k not in _FIRST_CLASS_TRAINER})

    def load_search_space(self, extra: Mapping[str, Param] | None = None, common: bool = True) -> SearchSpace:
        """The study's search space (file or inline), validated, with ``fixed`` applied on top (``extra``: the
        objective's own parameters; ``common``: whether the common training vocabulary applies)."""
        from tuner.search_space import SearchSpace

        if isinstance(self.search_space, Mapping):
            source = f"{self.where} search_space"
            space = SearchSpace.from_dict(self.search_space, extra=extra, source=source, common=common)
        else:
            space = SearchSpace.from_yaml(self.search_space, extra=extra, common=common)
        return space.with_fixed(self.fixed, source=self.where)

    def override(self, **changes: Any) -> StudySpec:
        """A copy with the non-None ``changes`` applied (command-line overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_study_file(path: str | Path) -> StudySpec:
    """Execute a study file and return its ``study`` (a :class:`StudySpec`)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        candidates = sorted(Path("studies").glob("*.py")) if Path("studies").is_dir() else []
        if candidates:
            hint = " Available here: " + ", ".join(str(c) for c in candidates) + "."
        raise ConfigError(f"study file not found: {path}.{hint}")
    module_name = f"_tuner_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file; a study file is a .py declaring `study = StudySpec(...)`.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with experimental():  # a study file may use an Optuna pruner marked experimental
            spec.loader.exec_module(module)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except SyntaxError as error:
        raise ConfigError(f"{path}:{error.lineno}: syntax error: {error.msg}.") from None
    except Exception as error:
        line = _line_in(error, path)
        explained = _spec_call_error(error, path)
        if explained is not None:
            message, keyword_line = explained
            raise ConfigError(
                f"{path}:{keyword_line}: {message}" if keyword_line else f"{path}{line}: {message}"
            ) from None
        raise ConfigError(f"{path}{line}: {type(error).__name__}: {error}") from None
    finally:
        sys.modules.pop(module_name, None)
    study = getattr(module, "study", None)
    if not isinstance(study, StudySpec):
        raise ConfigError(
            f"{path}: defines no `study = StudySpec(...)` (found {type(study).__name__}). "
            "See studies/pyannote_optim.py for the shape of a study file."
        )
    return replace(study, source=str(path))


def _spec_call_error(error: Exception, path: Path) -> tuple[str, int | None] | None:
    """``(message, line)`` for a ``StudySpec(...)`` call that raised ``error`` (a misspelled or missing
    keyword), listing the keywords it takes; ``line`` is that of a misspelled keyword when the file shows
    it. None for any other error."""
    text = str(error)
    if not isinstance(error, TypeError) or not text.startswith("StudySpec.__init__()"):
        return None

    names = [f.name for f in fields(StudySpec)]
    unknown = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unknown:
        keyword = unknown.group(1)
        pattern = re.compile(rf"\b{re.escape(keyword)}\s*=")
        lines = path.read_text(encoding="utf-8").splitlines()
        line = next((number for number, content in enumerate(lines, start=1) if pattern.search(content)), None)
        return (
            f"StudySpec has no keyword '{keyword}'{did_you_mean(keyword, names)}. Its keywords: {', '.join(names)}.",
            line,
        )
    missing = re.search(r"missing \d+ required positional arguments?: (.+)$", text)
    if missing:
        return f"StudySpec needs {missing.group(1)}; every study gives its name, objective and search_space.", None
    return f"{text}. StudySpec's keywords: {', '.join(names)}.", None


def _line_in(error: BaseException, path: Path) -> str:
    traceback = error.__traceback__
    line = ""
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f":{traceback.tb_lineno}"
        traceback = traceback.tb_next
    return line


# -- warm start ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmStartEntry:
    """One configuration a study runs before its sampler takes over (see :func:`load_warm_start`)."""

    index: int  # 1-based position in the file or list
    name: str  # the entry's ``name``, else its parameters as ``k=v`` pairs
    params: dict[str, Any]  # searched parameters the entry pins (the others are sampled)


def load_warm_start(spec: StudySpec, space: SearchSpace) -> list[WarmStartEntry]:
    """The study's ``warm_start`` configurations, each validated against the study's ``space``.

    ``spec.warm_start`` is a YAML file holding a list, or the same list inline; each item maps
    parameter names to values and may carry a ``name`` label::

        - {name: "NAdam+cosine batch 128", optimizer: NAdam, schedule: cosine, batch_size: 128, lr: 1.0e-3}

    A parameter the entry does not give is sampled as usual; a parameter the space fixes (or does not
    search) may be given only with that same value. An unknown parameter, a value outside the searched
    range or choices, a value contradicting a fixed one, or an entry repeating another is a
    ConfigError naming the file (with line), the entry (index and name) and the key.
    """
    warm_start = spec.warm_start
    if warm_start is None:
        return []
    lines: dict[int, dict[str, int]] = {}
    if isinstance(warm_start, (str, Path)):
        path = Path(warm_start)
        source = str(path)
        if not path.is_file():
            raise ConfigError(
                f"{spec.where}: warm_start file not found: {path} (looked relative to {Path.cwd()}). "
                "Give a YAML file holding a list of configurations, e.g. search_spaces/hand_grid.yaml."
            )
        from tuner._yaml import parse_yaml

        text = path.read_text(encoding="utf-8")
        content = parse_yaml(text, path)
        lines = _entry_lines(text)
        if not isinstance(content, list):
            raise ConfigError(
                f"{path}: a warm-start file is a list of configurations (`- {{optimizer: NAdam, lr: 1.0e-3}}`), "
                f"got {type(content).__name__}."
            )
    else:
        source = f"{spec.where} warm_start"
        content = list(warm_start)
    entries: list[WarmStartEntry] = []
    seen: dict[tuple[tuple[str, Any], ...], WarmStartEntry] = {}
    for index, raw in enumerate(content, start=1):
        entry = _check_entry(raw, index, len(content), source, lines.get(index, {}), space)
        key = tuple(sorted(entry.params.items()))
        if key in seen:
            first = seen[key]
            raise ConfigError(
                f"{_entry_where(source, index, len(content), entry.name, lines.get(index, {}))}: repeats entry "
                f"{first.index} ('{first.name}') on every parameter it gives; remove one of them."
            )
        seen[key] = entry
        entries.append(entry)
    return entries


def _entry_where(
    source: str, index: int, total: int, name: str | None, lines: Mapping[str, int], key: str | None = None
) -> str:
    line = lines.get(key) if key is not None else None
    line = line if line is not None else lines.get("")
    where = f"{source}:{line}" if line is not None else source
    where += f": entry {index} of {total}"
    if name:
        where += f" ('{name}')"
    if key is not None:
        where += f", key '{key}'"
    return where


def _check_entry(
    raw: Any, index: int, total: int, source: str, lines: Mapping[str, int], space: SearchSpace
) -> WarmStartEntry:

    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{_entry_where(source, index, total, None, lines)}: expected a mapping of parameter -> value, got {raw!r}."
        )
    raw = dict(raw)
    name = raw.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{_entry_where(source, index, total, None, lines, 'name')}: must be a string, got {name!r}.")
    label = name
    if not raw:
        raise ConfigError(f"{_entry_where(source, index, total, label, lines)}: gives no parameter.")
    defaults = space.defaults()
    params: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        where = _entry_where(source, index, total, label, lines, key)
        if key not in space.vocabulary:
            known = [k for k in space.vocabulary if k in space.dimensions or k in space.fixed]
            raise ConfigError(
                f"{where}: unknown parameter{did_you_mean(key, space.vocabulary)}. "
                f"The search space {space.source} has: {', '.join(known)}."
            )
        value = space.vocabulary[key].check(value, where)
        dimension = space.dimensions.get(key)
        if dimension is None:
            if value != defaults.get(key):
                what = "fixes" if key in space.fixed else "does not search"
                raise ConfigError(
                    f"{where}: {value!r} contradicts the study, which {what} '{key}' "
                    f"(value {defaults.get(key)!r}; see {space.source} and the study's `fixed`). "
                    "Drop the key from the entry or search it in the space."
                )
            continue  # the same value as the fixed one: nothing to enqueue
        if dimension.choices is not None:
            if value not in dimension.choices:
                raise ConfigError(
                    f"{where}: {value!r} is not one of the searched choices {list(dimension.choices)} of "
                    f"{space.source}."
                )
        else:
            if not dimension.low <= value <= dimension.high:
                raise ConfigError(
                    f"{where}: {value!r} is outside the searched range [{dimension.low:g}, {dimension.high:g}] "
                    f"of {space.source}."
                )
            if dimension.step is not None:
                steps = (value - dimension.low) / dimension.step
                if abs(steps - round(steps)) > 1e-9:
                    raise ConfigError(
                        f"{where}: {value!r} is not on the searched grid ({dimension.low:g} + k * {dimension.step:g}) "
                        f"of {space.source}."
                    )
        params[key] = value
    # conditional parameters ('when'): refuse a value the entry's own choices make unused
    for key in params:
        for other, values in space.dimensions[key].when:
            if other not in params and other not in space.fixed:
                continue  # sampled: the value is ignored if the sampled one does not apply
            given = params[other] if other in params else space.fixed[other]
            if given not in values:
                raise ConfigError(
                    f"{_entry_where(source, index, total, label, lines, key)}: '{key}' is searched only when "
                    f"{other} is one of {list(values)}, and this entry has {other}={given!r}."
                )
    if not params:
        raise ConfigError(
            f"{_entry_where(source, index, total, label, lines)}: pins no searched parameter (every key it gives "
            f"is fixed by the study), so it would be an ordinary sampled trial; remove it."
        )
    if label is None:
        label = ", ".join(f"{k}={v}" for k, v in params.items())
    return WarmStartEntry(index=index, name=label, params=params)


def _entry_lines(text: str) -> dict[int, dict[str, int]]:
    """1-based line numbers of each list item ('' key) and of its keys, for error messages."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.SequenceNode):
        return {}
    out: dict[int, dict[str, int]] = {}
    for index, node in enumerate(root.value, start=1):
        lines = {"": node.start_mark.line + 1}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                lines[str(key_node.value)] = key_node.start_mark.line + 1
        out[index] = lines
    return out
