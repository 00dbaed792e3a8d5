"""The Objective interface: what one fine-tuning task must provide to be searched by a study."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from tuner.errors import ConfigError, DataError
from tuner.search_space import Param, TrialConfig

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from tuner.training.freeze import LayerStack

__all__ = ["Objective", "FitInputs", "get_objective_class", "OBJECTIVES", "under"]


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
    """One fine-tuning task (model + data + metric) that a study searches the parameters of.

    The contract, which the study runner relies on:

    * Class attributes: ``name`` (used in study files and exports), ``metric`` (the value reported to
      Optuna each epoch and returned by the trial), ``direction`` of that metric, ``components``
      (the other per-epoch values recorded beside it, losses included) and ``params``: the
      objective's own search-space parameters on top of the common vocabulary.
    * ``__init__`` only stores its arguments: heavy libraries are imported in :meth:`setup` and later,
      so that listing or describing studies stays instant.
    * :meth:`setup` runs once per process before any trial: it resolves and validates the corpus
      (raising :class:`~tuner.errors.DataError` naming the file and line) and caches what trials
      share. It must be idempotent.
    * :meth:`build` returns fresh, independently initialised inputs for one trial, seeded by ``seed``.
      It must honour every field of the :class:`TrialConfig` except optimizer and schedule, which the
      runner applies, and ``unfrozen_layers``, which the runner applies through :meth:`layers`.
    * :meth:`layers` tells which modules of a built model are the head and the freezable blocks.
    * :meth:`epoch_metrics` maps what the module logged in an epoch to ``{metric, *components}``.
    """

    name: ClassVar[str]
    metric: ClassVar[str]
    direction: ClassVar[Literal["minimize", "maximize"]]
    components: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[Mapping[str, Param]] = {}
    #: default objective options, overridable from the study file's ``options``
    default_options: ClassVar[Mapping[str, Any]] = {}

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
            from tuner.search_space import _did_you_mean

            first = sorted(unknown)[0]
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)} for objective '{self.name}'"
                f"{_did_you_mean(first, self.default_options)}. "
                f"Known options: {', '.join(sorted(self.default_options)) or 'none'}."
            )
        self.data = data
        self.pretrained = pretrained
        self.options: dict[str, Any] = {**self.default_options, **options}
        self.workdir = Path(workdir)

    @abc.abstractmethod
    def setup(self) -> None:
        """Resolve and validate the data (and the pretrained checkpoint) once per process."""

    @abc.abstractmethod
    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        """Fresh model and data for one trial with ``config``."""

    @abc.abstractmethod
    def layers(self, module: pl.LightningModule) -> LayerStack:
        """The head and the freezable blocks of ``module`` (valid once the module is set up)."""

    def num_blocks(self) -> int | None:
        """How many freezable blocks the model has (after :meth:`setup`); None if unknown until built.

        The runner checks the search space's ``unfrozen_layers`` against it before any trial runs.
        """
        return None

    def epoch_metrics(self, logged: Mapping[str, float]) -> dict[str, float]:
        """``{metric: value, component: value, ...}`` from Lightning's ``callback_metrics`` (by default
        the logged keys named like the metric and components)."""
        return {key: float(logged[key]) for key in (self.metric, *self.components) if key in logged}

    #: what ``data`` resolved to in :meth:`setup` (a folder, a database.yml:protocol); recorded in studies
    resolved_data: str | None = None
    #: where the pretrained checkpoint came from (:func:`tuner.pretrained.resolve`); recorded in studies
    pretrained_source: dict[str, Any] | None = None

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


def under(root: Path, path: str | Path) -> Path:
    """``path`` if absolute, else relative to ``root`` (study options name files inside a corpus)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


#: Objective name -> "module:Class", imported only when a study uses it.
OBJECTIVES: dict[str, str] = {
    "pyannote_segmentation": "tuner.objectives.pyannote:PyannoteSegmentation",
    "wavlm_sv": "tuner.objectives.wavlm_sv:WavLMSpeakerVerification",
    "sepformer_separation": "tuner.objectives.sepformer:SepFormerSeparation",
    "synthetic": "tuner.objectives.synthetic:SyntheticRegression",  # seconds-long, no data: checks workers
}


def get_objective_class(name: str) -> type[Objective]:
    """The Objective class registered under ``name`` (imports its module)."""
    if name not in OBJECTIVES:
        from tuner.search_space import _did_you_mean

        raise ConfigError(
            f"unknown objective '{name}'{_did_you_mean(name, OBJECTIVES)}. Available: {', '.join(OBJECTIVES)}."
        )
    module_name, class_name = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
