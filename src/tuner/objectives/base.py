"""The Objective interface: what one task must provide to be searched by a study.

Two kinds share it. A :class:`TrainedObjective` fine-tunes a model with Lightning (a trial is a fit of up to
``max_epochs``, its metric reported after every epoch). A :class:`StepwiseObjective` tunes something that is
not trained, such as the hyper-parameters of a diarization pipeline: a trial evaluates one configuration
item by item (a file, an utterance), reporting each item's value, so that a pruner comparing trials on the
same items (Optuna's ``WilcoxonPruner``) can stop a bad one early.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from tuner.errors import ConfigError, DataError
from tuner.search_space import Param, SearchSpace, TrialConfig
from tuner.text import did_you_mean

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from tuner.store.resolver import StudyResolver
    from tuner.training.freeze import LayerStack
    from tuner.training.items import ItemCollector

__all__ = [
    "Objective",
    "TrainedObjective",
    "StepwiseObjective",
    "FitInputs",
    "get_objective_class",
    "OBJECTIVES",
    "ObjectiveEntry",
    "objective_entry",
    "under",
    "SPLITS",
]

#: the corpus splits a study validates on ("development", during the study) and is evaluated on ("test")
SPLITS = ("development", "test")


@dataclass
class FitInputs:
    """What :meth:`Objective.build` hands to ``lightning.Trainer.fit`` for one trial.

    ``module`` is a LightningModule whose ``configure_optimizers`` the study runner replaces with the
    trial's optimizer and schedule. Give either a ``datamodule``, or the dataloaders, or neither when
    the module brings its own (as a pyannote ``Model`` with its ``Task`` does).
    """

    module: pl.LightningModule
    datamodule: pl.LightningDataModule | None = None
    train_dataloaders: DataLoader | None = None
    val_dataloaders: DataLoader | None = None
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the trial (e.g. parameter counts)
    trainer_options: dict[str, Any] = field(default_factory=dict)  # per-trial Trainer arguments (clipping)


class Objective(abc.ABC):
    """One task (model + data + metric) that a study searches the parameters of.

    The contract every objective keeps (the two kinds below add theirs):

    * Class attributes: ``name`` (used in study files and exports), ``metric`` (the value reported to
      Optuna as a trial goes and returned by the trial), ``direction`` of that metric, ``components``
      (the other values recorded beside it, losses included) and ``params``: the objective's own
      search-space parameters, on top of the common training vocabulary when ``uses_common_params``;
      ``unit`` of the metric and ``figure``, the kind of the report's figure of the objective's own. The
      registry :data:`OBJECTIVES` repeats ``unit``, ``figure`` and ``exports_folder`` so that reports and
      exports know them without importing the objective (tests/test_objectives_registry.py checks they agree).
    * ``__init__`` only stores its arguments: heavy libraries are imported in :meth:`setup` and later,
      so that listing or describing studies stays instant.
    * :meth:`setup` runs once per process before any trial: it resolves and validates the corpus
      (raising :class:`~tuner.errors.DataError` naming the file and line) and caches what trials
      share. It must be idempotent.
    * :meth:`for_split` gives the same objective validating on another split of the corpus (``tuner
      evaluate`` runs the study's best trial on ``test`` with the code that validated it); a corpus
      without that split is a :class:`~tuner.errors.DataError` naming what to add.
    """

    name: ClassVar[str]
    #: the unit of the metric as figures and tables print it (``"%"``, ``"dB"``); "" for a plain number
    unit: ClassVar[str] = ""
    #: the kind of the report's figure of this objective's own (``tuner.reports.objective_figures.FIGURE_KINDS``)
    figure: ClassVar[str] = "per_trial"
    metric: ClassVar[str]
    direction: ClassVar[Literal["minimize", "maximize"]]
    components: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[Mapping[str, Param]] = {}
    #: whether the common vocabulary (optimizer, lr, schedule, batch size, ...) applies to this objective
    uses_common_params: ClassVar[bool] = True
    #: default objective options, overridable from the study file's ``options``
    default_options: ClassVar[Mapping[str, Any]] = {}
    #: the options that change how a trial runs, not what it learns or measures (loader workers, a test list only
    #: ``tuner evaluate`` reads): a study opened again may change them; every other option defines its problem
    #: (:mod:`tuner.identity`)
    runtime_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        data: str | Path | None = None,
        pretrained: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
        workdir: str | Path = "storage",
    ) -> None:
        options = dict(options or {})
        unknown = set(options) - set(self.default_options)
        if unknown:
            first = sorted(unknown)[0]
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)} for objective '{self.name}'"
                f"{did_you_mean(first, self.default_options)}. "
                f"Known options: {', '.join(sorted(self.default_options)) or 'none'}."
            )
        self.data = data
        self.pretrained = pretrained
        self.options: dict[str, Any] = {**self.default_options, **options}
        self.workdir = Path(workdir)

    @abc.abstractmethod
    def setup(self) -> None:
        """Resolve and validate the data (and the pretrained checkpoint) once per process."""

    def check_space(self, space: SearchSpace) -> None:  # noqa: B027 - a hook: most objectives take any space
        """Refuse a search space this objective (set up) cannot honour, naming the key. Default: nothing."""

    def split_options(self, split: str) -> dict[str, Any]:
        """The options that make this objective validate on ``split`` instead of the development data.

        Override it; the default knows no split but the development one."""
        raise DataError(f"objective '{self.name}' cannot be evaluated on the {split} split.")

    def for_split(self, split: str) -> Objective:
        """This objective validating on ``split`` (``development``: itself), not yet set up."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}': use one of {', '.join(SPLITS)}.")
        if split == "development":
            return self
        options = {**self.options, **self.split_options(split)}
        return type(self)(self.data, self.pretrained, options, workdir=self.workdir)

    #: what ``data`` resolved to in :meth:`setup` (a folder, a database.yml:protocol); recorded in studies
    resolved_data: str | None = None
    #: where the pretrained checkpoint came from (:func:`tuner.pretrained.resolve`); recorded in studies
    pretrained_source: dict[str, Any] | None = None
    #: the study's store (its URL and artifact folder), set by the runner before :meth:`setup`: where a source
    #: such as ``study:NAME``, another study's best trial, is looked up
    store: StudyResolver | None = None

    def resolve_pretrained(self, kinds: tuple[str, ...] = ()) -> str | None:
        """The checkpoint ``pretrained`` names (a known name is fetched into ``<workdir>/pretrained`` on
        first use) as the path or hub id a loader opens; records its provenance. None without one."""
        if self.pretrained is None:
            return None
        from tuner.pretrained import resolve

        resolved = resolve(self.pretrained, self.workdir / "pretrained", kinds=kinds)
        self.pretrained_source = dict(resolved.provenance)
        return resolved.load

    def data_folder(self, demo: Callable[[Path], Path], hint: str) -> Path:
        """The corpus folder ``data`` names; for ``demo`` (or nothing) ``demo(workdir / "demo")`` makes it."""
        if self.data is None or str(self.data) == "demo":
            root = demo(self.workdir / "demo").resolve()
        else:
            root = Path(self.data).expanduser().resolve()
            if not root.is_dir():
                raise DataError(f"{self.name} data not found: {root}. {hint}")
        self.resolved_data = str(root)
        return root

    @property
    def baseline_label(self) -> str:
        """What a study's baseline is: the starting point its trials are compared with."""
        return "pretrained model before fine-tuning" if self.pretrained is not None else "untrained model"

    #: whether :meth:`export` writes something a user runs (``tuner export`` then writes a folder)
    exports_folder: ClassVar[bool] = False

    def export(self, folder: str | Path, config: Mapping[str, Any]) -> Path:
        """Write what a user runs with ``config`` (the best trial's parameters) into ``folder``; objectives
        with :attr:`exports_folder` override it. The default: nothing beyond the exported YAML."""
        raise ConfigError(f"objective '{self.name}' exports its best configuration as YAML only (no folder).")

    def describe(self) -> dict[str, Any]:
        """What this objective trains on, recorded in the study and in exports."""
        data = self.resolved_data or (str(self.data) if self.data is not None else None)
        return {
            "objective": self.name,
            "data": data,
            "pretrained": str(self.pretrained) if self.pretrained is not None else None,
            "pretrained_source": self.pretrained_source,
            "options": dict(self.options),
        }


class TrainedObjective(Objective):
    """An objective whose trial fine-tunes a model with Lightning, validating after every epoch.

    The runner relies on, besides :class:`Objective`'s contract:

    * :meth:`build` returns fresh, independently initialised inputs for one trial, seeded by ``seed``.
      It must honour every field of the :class:`TrialConfig` except optimizer and schedule, which the
      runner applies, and ``unfrozen_layers``, which the runner applies through :meth:`layers`.
    * :meth:`layers` tells which modules of a built model are the head and the freezable blocks.
    * :meth:`epoch_metrics` maps what the module logged in an epoch to ``{metric, *components}``.
    * :meth:`item_collector` gathers a validation's per-item results (``tuner evaluate``'s paired interval).
    """

    @abc.abstractmethod
    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        """Fresh model and data for one trial with ``config``."""

    @abc.abstractmethod
    def layers(self, module: pl.LightningModule) -> LayerStack:
        """The head and the freezable blocks of ``module`` (valid once the module is set up)."""

    def num_blocks(self) -> int | None:
        """How many freezable blocks the model has (after :meth:`setup`); None if unknown until built.

        :meth:`check_space` checks the search space's ``unfrozen_layers`` against it before any trial.
        """
        return None

    def check_space(self, space: SearchSpace) -> None:
        space.check_unfrozen_layers(self.num_blocks(), model=f"the {self.name} model")

    def epoch_metrics(self, logged: Mapping[str, float]) -> dict[str, float]:
        """``{metric: value, component: value, ...}`` from Lightning's ``callback_metrics`` (by default
        the logged keys named like the metric and components)."""
        return {key: float(logged[key]) for key in (self.metric, *self.components) if key in logged}

    def item_collector(self) -> ItemCollector:
        """A callback that gathers one validation's per-item results (:class:`~tuner.training.items.ItemScores`):
        by default the ``item_scores`` the module sets at the end of its validation epoch. Items must come in the
        same order for any model of the objective on one split."""
        from tuner.training.items import ItemCollector

        return ItemCollector()


class StepwiseObjective(Objective):
    """An objective whose trial evaluates one configuration on a sequence of items (nothing is trained).

    The runner relies on, besides :class:`Objective`'s contract:

    * :meth:`steps` names the items of a split in a fixed order: item ``k`` is the same in every trial,
      which is what a pruner comparing trials item by item needs (the runner reports item ``k`` at step
      ``k``, in an order shuffled per trial);
    * :meth:`evaluate_step` returns ``{metric, *components}`` of one item (and any raw counts
      :meth:`combine` needs), caching across calls whatever the configuration cannot change;
    * :meth:`combine` turns the results of several items into the trial's ``{metric, *components}``.
    * :meth:`default_config` is the configuration the library itself would use: the study's baseline.
    * :attr:`item_weight` names the value of an item's result that weighs it in :meth:`combine`'s metric
      (a file's reference speech for DER), or None for items that weigh the same: ``tuner evaluate``'s paired
      bootstrap resamples items with these weights.
    """

    uses_common_params = False
    item_weight: ClassVar[str | None] = None

    @abc.abstractmethod
    def steps(self, split: str = "development") -> list[str]:
        """Stable identifiers of the items of ``split`` (after :meth:`setup`)."""

    @abc.abstractmethod
    def evaluate_step(self, config: TrialConfig, index: int, split: str = "development") -> dict[str, float]:
        """``{metric, *components, ...}`` of item ``index`` of ``split`` with ``config``."""

    @abc.abstractmethod
    def combine(self, results: list[dict[str, float]]) -> dict[str, float]:
        """The trial's ``{metric, *components}`` from the results of its items."""

    def default_config(self) -> dict[str, Any]:
        """Parameter values of the library's own defaults (the baseline); default: the params' defaults."""
        return {name: param.default for name, param in self.params.items()}

    @property
    def baseline_label(self) -> str:
        return "default parameters"

    def for_split(self, split: str) -> Objective:
        return self  # one instance evaluates every split: steps() and evaluate_step() take it


def under(root: Path, path: str | Path) -> Path:
    """``path`` if absolute, else relative to ``root`` (study options name files inside a corpus)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


@dataclass(frozen=True)
class ObjectiveEntry:
    """What tuner knows of a registered objective without importing it (its module pulls in torch and its task's
    library): where its class is, and what ``tuner report`` and ``tuner export`` need of it.
    tests/test_objectives_registry.py checks each entry against its class."""

    #: ``"module:Class"``, imported only when a study uses the objective
    target: str
    #: the unit of the metric, as the report's figures print it (``"%"``, ``"dB"``); "" for a plain number
    unit: str = ""
    #: the kind of the report's figure of the objective's own (``tuner.reports.objective_figures.FIGURE_KINDS``)
    figure: str = "per_trial"
    #: the class's :attr:`Objective.exports_folder`: ``tuner export`` writes a folder a user runs, not YAML alone
    exports_folder: bool = False
    #: ``(what, value)``: the metric of doing nothing, which any trained model must beat (separation: the mixture
    #: itself, returned as each source, scores 0 dB SI-SNRi); reports show it beside the starting model
    reference: tuple[str, float] | None = None
    #: options that describe a model built from scratch, unused when a pretrained checkpoint is given (the
    #: export then leaves them out: the trial's recorded ``architecture`` says what was trained)
    scratch_options: tuple[str, ...] = ()


#: Objective name -> its entry.
OBJECTIVES: dict[str, ObjectiveEntry] = {
    "pyannote_segmentation": ObjectiveEntry(
        "tuner.objectives.pyannote:PyannoteSegmentation",
        figure="der_components",
        scratch_options=("sincnet", "lstm", "linear"),
    ),
    "wavlm_sv": ObjectiveEntry(
        "tuner.objectives.wavlm_sv:WavLMSpeakerVerification", unit="%", figure="eer_det", scratch_options=("wavlm",)
    ),
    "sepformer_separation": ObjectiveEntry(
        "tuner.objectives.sepformer:SepFormerSeparation",
        unit="dB",
        figure="before_after",
        reference=("the mixture itself", 0.0),
        scratch_options=("model",),
    ),
    # seconds-long, no data: checks workers
    "synthetic": ObjectiveEntry("tuner.objectives.synthetic:SyntheticRegression"),
    "pyannote_pipeline": ObjectiveEntry("tuner.objectives.pipeline:PyannotePipeline", exports_folder=True),
}


def objective_entry(name: str | None) -> ObjectiveEntry | None:
    """The registry entry of objective ``name``; None for a name tuner does not know (or None)."""
    return OBJECTIVES.get(name) if name is not None else None


def get_objective_class(name: str) -> type[Objective]:
    """The Objective class registered under ``name`` (imports its module)."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective '{name}'{did_you_mean(name, OBJECTIVES)}. Available: {', '.join(OBJECTIVES)}."
        )
    module_name, class_name = OBJECTIVES[name].target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
