"""The callback that keeps a trial's latest epoch as a checkpoint in the study's artifact store."""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from typing_extensions import override

from tuner.store import records
from tuner.store.artifacts import download, list_artifact

if TYPE_CHECKING:
    import optuna

    from tuner.store.optuna_internals import ArtifactStore

__all__ = ["EpochCheckpoint"]

logger = logging.getLogger(__name__)


class EpochCheckpoint(pl.Callback):
    """After every finished epoch, save a Lightning checkpoint of the trial (model, optimizer,
    scheduler, loop and callback states) to the study's artifact store, then drop the one before it.

    The trial's system attribute :data:`tuner.store.records.CHECKPOINT` names the latest one, so a retry of the trial
    (it inherits the attribute) resumes after that epoch: see :meth:`resume_path`. An epoch after
    which the trial is pruned is not saved (a pruned trial is never resumed). At the end of a trial
    the runner calls :meth:`keep` (the checkpoint stays, listed in optuna-dashboard as the trial's
    artifact) or :meth:`discard`, and always :meth:`close`.
    """

    def __init__(self, trial: optuna.Trial, store: ArtifactStore) -> None:
        self.trial = trial
        self.store = store
        self._tmp = Path(tempfile.mkdtemp(prefix="tuner-ckpt-"))
        self.record: dict[str, Any] | None = records.checkpoint_of(trial.study, trial)

    def resume_path(self) -> Path | None:
        """The checkpoint this trial resumes from (one inherited from the trial it retries), fetched to a
        local file; None to start from scratch (no checkpoint, or not in this worker's artifact store)."""
        if not self.record:
            return None
        local = self._tmp / "resume.ckpt"
        if not download(self.store, self.record["artifact_id"], local):
            logger.warning(
                "trial %d: the checkpoint of epoch %d (written on %s) is not in this worker's artifact folder, so "
                "the trial starts again from epoch 1. Workers on several machines need an artifact folder they "
                "all mount: --artifacts DIR.",
                self.trial.number,
                self.record["epoch"] + 1,
                self.record.get("host"),
            )
            self.record = None
            return None
        return local

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        if trainer.should_stop and epoch + 1 < (trainer.max_epochs or 0):
            return  # pruned after this epoch
        local = self._tmp / f"epoch={epoch:03d}.ckpt"
        trainer.save_checkpoint(local)
        artifact_id = f"trial{self.trial.number}-epoch{epoch:03d}-{uuid.uuid4().hex[:12]}.ckpt"
        with local.open("rb") as content:
            self.store.write(artifact_id, content)
        local.unlink()
        previous = self.record
        record = {"artifact_id": artifact_id, "epoch": epoch, "host": socket.gethostname(), "at": time.time()}
        try:
            records.write_checkpoint(self.trial.study, self.trial, record)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker took the trial over: not recorded
            self._remove(artifact_id)
            raise
        self.record = record
        if previous is not None:
            self._remove(previous["artifact_id"])

    def keep(self) -> None:
        """Keep the last checkpoint, listed as the trial's artifact in optuna-dashboard."""
        if self.record is not None:
            filename = f"trial{self.trial.number}-epoch{self.record['epoch'] + 1}.ckpt"
            list_artifact(self.trial.study, self.trial, self.record["artifact_id"], filename)

    def discard(self) -> None:
        """Remove the last checkpoint from the artifact store (the trial will not be resumed)."""
        if self.record is not None:
            self._remove(self.record["artifact_id"])
            records.write_checkpoint(self.trial.study, self.trial, None)
            self.record = None

    def _remove(self, artifact_id: str) -> None:
        import optuna

        with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
            self.store.remove(artifact_id)

    def close(self) -> None:
        """Remove this worker's local scratch folder (the artifact store keeps what keep() kept)."""
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)
