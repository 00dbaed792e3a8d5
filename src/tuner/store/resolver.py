"""Finding another study of the same store by name (``study:NAME``) and the checkpoint its trials kept.

A diarization pipeline study segments with what a segmentation study trained (``pretrained="study:NAME"``),
``tuner evaluate`` tests a trial's checkpoint, ``tuner export`` of a pipeline study rebuilds its objective:
each gets a :class:`StudyResolver` (the store's URL and artifact folder) instead of opening storages itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import ConfigError, TunerError
from tuner.store import records
from tuner.store.artifacts import download
from tuner.store.connect import load_existing_study, mask_url

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["StudyResolver", "StudyCheckpoint", "CheckpointUnavailable"]


class CheckpointUnavailable(TunerError):
    """A study named by ``study:NAME`` has no checkpoint to give (yet): the message says why."""


@dataclass(frozen=True)
class StudyCheckpoint:
    """The kept checkpoint of a study's best trial, fetched to a local file."""

    study: str
    trial: int
    epoch: int  # counted from 0, as the trial's records count it
    value: float
    path: Path
    record: records.StudyRecord  # the record of the study that trained it


@dataclass(frozen=True)
class StudyResolver:
    """A store (its URL) and the folder its workers keep checkpoints in (its artifacts)."""

    url: str
    artifact_dir: Path

    def load(self, name: str) -> optuna.Study:
        """The study ``name`` of this store; a :class:`~tuner.errors.ConfigError` listing the store's studies
        if there is none."""
        return load_existing_study(name, self.url)

    def best_checkpoint(self, name: str, cache_dir: Path) -> StudyCheckpoint:
        """The checkpoint kept by the best trial of study ``name``, fetched into ``cache_dir`` (once: as
        ``NAME-trialN.ckpt``); :class:`CheckpointUnavailable` saying why when there is none."""
        try:
            study = self.load(name)
        except ConfigError as error:
            raise CheckpointUnavailable(str(error)) from None
        try:
            best = study.best_trial
        except ValueError:
            raise CheckpointUnavailable(f"study '{name}' in {mask_url(self.url)} has no completed trial yet") from None
        kept = records.checkpoint_of(study, best)
        if kept is None:
            raise CheckpointUnavailable(f"its best trial {best.number} kept no checkpoint")
        target = cache_dir / f"{name}-trial{best.number}.ckpt"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            if not download(self.artifact_dir, kept["artifact_id"], target):
                raise CheckpointUnavailable(
                    f"the checkpoint of its best trial {best.number} is not in {self.artifact_dir} (pass the folder "
                    "the study's workers wrote to: --artifacts DIR)"
                )
        assert best.value is not None  # a completed trial
        return StudyCheckpoint(name, best.number, int(kept["epoch"]), best.value, target, records.StudyRecord.of(study))

    def trial_checkpoint(self, study: optuna.Study, trial: FrozenTrial, path: Path) -> int:
        """Fetch the checkpoint ``trial`` of ``study`` kept to ``path``; returns its epoch (from 0). A
        :class:`~tuner.errors.ConfigError` saying what to do when it kept none or the folder lacks it."""
        kept = records.checkpoint_of(study, trial)
        if kept is None:
            raise ConfigError(
                f"trial {trial.number} of study '{study.study_name}' kept no checkpoint (tuner keeps the checkpoint "
                "of the best trial so far only): evaluate the study's best trial (leave out --trial)."
            )
        if not download(self.artifact_dir, kept["artifact_id"], path):
            raise ConfigError(
                f"the checkpoint of trial {trial.number} ({kept['artifact_id']}) is not in {self.artifact_dir}: pass "
                "the folder the study's workers wrote to with --artifacts DIR (or $TUNER_ARTIFACTS)."
            )
        return int(kept["epoch"])
